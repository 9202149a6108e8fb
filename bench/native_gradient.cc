// The maxout's tie-sharing gradient in one pass (bench/native_gradient.py builds and times it).
//
// dz = the gradient of max over `pieces` piece-major channel blocks of z: upstream / (the
// number of maximal pieces) to each maximal piece, 0 to the others. The arithmetic is
// fitnets_tf.maxout._pieces_gradient's, operation by operation and in T (bfloat16 and half
// round after each operation, as TensorFlow's elementwise kernels do), so that the result is
// bitwise the library's; one read of z and upstream and one write of dz, where the library's
// TensorFlow ops make a split, seven elementwise passes and a concat.
#define EIGEN_USE_THREADS

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

// tf.sign's: +1, -1, 0 for a zero (either sign), NaN for NaN.
template <typename T>
inline T Sign(T d) {
  const T zero(0.0f), one(1.0f);
  const T above = d > zero ? one : zero;
  const T below = d < zero ? one : zero;
  return d != d ? d : above - below;
}

// The same for float without selects of references, so that GCC vectorises the loop.
inline float Sign(float d) {
  const float s = static_cast<float>(d > 0.0f) - static_cast<float>(d < 0.0f);
  return d != d ? d : s;
}

// Two pieces: the weights 0.5 + sign(a - b) / 2 and 0.5 - sign(a - b) / 2, as the library's.
template <typename T>
inline void TwoPieces(const T* __restrict a, const T* __restrict b, const T* __restrict g,
                      T* __restrict da, T* __restrict db, int64_t units) {
  const T half(0.5f);
  for (int64_t u = 0; u < units; ++u) {
    const T half_sign = Sign(T(a[u] - b[u])) * half;
    da[u] = (half + half_sign) * g[u];
    db[u] = (half - half_sign) * g[u];
  }
}

// More pieces: hit / count for each piece, count summed in the pieces' order.
template <typename T>
inline void ManyPieces(const T* z, const T* out, const T* g, T* dz, int64_t units,
                       int pieces) {
  const T zero(0.0f), one(1.0f);
  for (int64_t u = 0; u < units; ++u) {
    T count = zero;
    for (int k = 0; k < pieces; ++k) count = k ? count + (z[k * units + u] == out[u] ? one : zero)
                                               : (z[u] == out[u] ? one : zero);
    for (int k = 0; k < pieces; ++k) {
      const T hit = z[k * units + u] == out[u] ? one : zero;
      dz[k * units + u] = (hit / count) * g[u];
    }
  }
}

template <typename T>
class MaxoutGradient : public OpKernel {
 public:
  explicit MaxoutGradient(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pieces", &pieces_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& z = ctx->input(0);
    const Tensor& out = ctx->input(1);
    const Tensor& upstream = ctx->input(2);
    OP_REQUIRES(ctx, out.dims() >= 1 && upstream.shape() == out.shape() &&
                         z.NumElements() == out.NumElements() * pieces_,
                absl::InvalidArgumentError("out and upstream: z's shape, its channels / pieces"));
    Tensor* dz = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, z.shape(), &dz));
    const int64_t units = out.dim_size(out.dims() - 1);
    const int64_t rows = units ? out.NumElements() / units : 0;
    const int pieces = pieces_;
    const T* zp = z.flat<T>().data();
    const T* op = out.flat<T>().data();
    const T* gp = upstream.flat<T>().data();
    T* dp = dz->flat<T>().data();
    auto work = [=](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* zr = zp + r * units * pieces;
        T* dr = dp + r * units * pieces;
        if (pieces == 2) {
          TwoPieces(zr, zr + units, gp + r * units, dr, dr + units, units);
        } else {
          ManyPieces(zr, op + r * units, gp + r * units, dr, units, pieces);
        }
      }
    };
    const double bytes = sizeof(T) * units;
    const Eigen::TensorOpCost cost(bytes * (pieces + 1), bytes * pieces, 4.0 * pieces * units);
    ctx->eigen_device<Eigen::ThreadPoolDevice>().parallelFor(rows, cost, work);
  }

 private:
  int pieces_;
};

}  // namespace

REGISTER_OP("FitnetsMaxoutGradient")
    .Input("z: T")
    .Input("out: T")
    .Input("upstream: T")
    .Output("dz: T")
    .Attr("pieces: int >= 2")
    .Attr("T: {float, double, bfloat16, half}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

#define REGISTER_CPU(T)                                                              \
  REGISTER_KERNEL_BUILDER(                                                           \
      Name("FitnetsMaxoutGradient").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
      MaxoutGradient<T>);
REGISTER_CPU(float)
REGISTER_CPU(double)
REGISTER_CPU(::tensorflow::bfloat16)
REGISTER_CPU(Eigen::half)
#undef REGISTER_CPU
