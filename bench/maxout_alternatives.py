"""Issue 15, goals 1-2: formulations of the maxout the library did not adopt, measured.

``python -m bench.maxout_alternatives`` (about 2 minutes) writes
``results/maxout_alternatives.json``; ``bench/README.md`` quotes it. Three probes, each timed
against what the library does in the same rounds (:func:`bench.timing.interleaved`):

1. ``fused_forward``: the MNIST teacher's inference forward as the library computes it, against
   one where each maxout and the ceil-mode pool after it are one max pool over a free reshape
   ``(N, H, W * pieces, units)`` of the piece-major channels, with explicit padding instead of
   a pad copy (the same values, checked). The library cannot do this without merging its
   ``conv{i}`` and ``pool{i}`` layers (hint layers name them), and LiteRT's converter has no
   explicit-padding pool. Also ``explicit_pool``: the library's layers with only the ceil-mode
   pool's pad copy replaced by the explicit-padding pool (the same values, checked).
2. ``pool_maxout``: train steps of ``mnist_fitnet`` and ``mnist_teacher`` as the library
   computes them by default (``library``: a tie's gradient shared, as ``reduce_max``'s, which
   ``tests/test_layers.py`` pins) and with ``maxout_ties="one"`` (``ties_one``: the maxout as a
   ``1 x pieces`` max pool of that reshape, one oneDNN pass forward and back, a tie's gradient
   to one piece). In the same rounds, formulations the library did not adopt, whose gradients
   share ties:
   ``xla_gradient``, the library's two-piece gradient compiled by XLA into one loop
   (``jit_compile``), and ``broadcast_gradient``, ``reduce_max``'s own formula on the
   ``(..., pieces, units)`` reshape (compare, count, divide; no split, no concat); and
   ``pool_gradients``, for two pieces, the maxout as ``ties_one`` computes it forward and the
   shared gradient from oneDNN's pooling gradients: the max pool's where the pieces differ, the
   ``1 x 2`` average pool's (half to each) where they tie, a tie found as max == min (the same
   values as the library's gradient); and ``depthwise_difference``, the library's two-piece
   gradient with the pieces' difference taken by a ``1 x 2``, stride-2 depthwise convolution
   with weights (1, -1) of that reshape instead of a split and a subtraction (the same values
   on CPU; TF32 or bf16 convolutions on a GPU or TPU would round it).
3. ``convolutions``: the teacher's three convolutions alone (explicit pad + convolution +
   bias), TensorFlow against PyTorch eager in a process of its own (skipped without torch).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import tensorflow as tf

from bench import benchmarks, peer_process, standalone, timing
from bench.run import machine
from fitnets_tf import layers, maxout, models

RESULTS = pathlib.Path(__file__).parent / "results" / "maxout_alternatives.json"
# The MNIST teacher's convolutions: (input NHWC, kernel HWIO, explicit padding).
TEACHER_CONVS = (((128, 28, 28, 1), (8, 8, 1, 96), 0), ((128, 10, 10, 48), (8, 8, 48, 96), 3),
                 ((128, 4, 4, 48), (5, 5, 48, 48), 3))  # fmt: skip


def _pooled_maxout(z, conv, pool, explicit: bool = True):
    """Maxout of ``conv``'s pre-activation ``z`` and ``pool``'s ceil-mode pooling, as one max
    pool of the free reshape ``(N, H, W * pieces, units)``."""
    _, height, width, channels = z.shape
    pieces = conv.pieces
    grouped = tf.reshape(z, (-1, height, width * pieces, channels // pieces))
    (kh, kw), (sh, sw) = pool.pool_size, pool.strides
    pad_h, pad_w = pool._overhang(height, kh, sh), pool._overhang(width, kw, sw)
    padding = [[0, 0], [0, pad_h], [0, pad_w * pieces], [0, 0]] if pad_h or pad_w else "VALID"
    return tf.nn.max_pool2d(grouped, (kh, kw * pieces), (sh, sw * pieces), padding)


def _fused_teacher_forward(teacher):
    convs = [teacher.get_layer(f"conv{i}") for i in (1, 2, 3)]
    pools = [teacher.get_layer(f"pool{i}") for i in (1, 2, 3)]

    @tf.function
    def forward(images):
        h = images
        for conv, pool in zip(convs, pools, strict=True):
            if conv.padding:
                p = conv.padding
                h = tf.pad(h, [[0, 0], [p, p], [p, p], [0, 0]])
            z = tf.nn.bias_add(tf.nn.conv2d(h, conv.kernel, 1, "VALID"), conv.bias)
            h = _pooled_maxout(z, conv, pool)
        return teacher.get_layer("logits")(teacher.get_layer("flatten")(h))

    return forward


def fused_forward(repeats: int, steps: int = 10) -> dict:
    teacher = models.build("mnist_teacher", (28, 28, 1), benchmarks.NUM_CLASSES, seed=0)
    x, _ = benchmarks.fixed_batch("mnist")
    fused = _fused_teacher_forward(teacher)
    difference = float(np.max(np.abs(fused(x).numpy() - teacher(x, training=False).numpy())))
    candidates = {"library": benchmarks.forward_runner(teacher, x, steps)}

    def run_fused():
        for _ in range(steps):
            out = fused(x)
        out.numpy()

    candidates["fused_maxout_pool"] = run_fused
    with explicit_pool():
        explicit = models.build("mnist_teacher", (28, 28, 1), benchmarks.NUM_CLASSES, seed=0)
        explicit.set_weights(teacher.get_weights())
        candidates["explicit_pool"] = benchmarks.forward_runner(explicit, x, steps)
        same = bool(np.array_equal(explicit(x, training=False), teacher(x, training=False)))
    times = timing.interleaved(candidates, repeats=repeats)
    return {"ms": timing.summary(times, steps), "max_abs_difference": difference,
            "explicit_pool_same_values": same,
            "fused_over_library": timing.ratio(times, "fused_maxout_pool", "library"),
            "explicit_pool_over_library": timing.ratio(times, "explicit_pool", "library")}  # fmt: skip


def _explicit_pool_call(self, inputs):
    height, width = inputs.shape[1], inputs.shape[2]
    pad_h = self._overhang(height, self.pool_size[0], self.strides[0])
    pad_w = self._overhang(width, self.pool_size[1], self.strides[1])
    return tf.nn.max_pool2d(inputs, self.pool_size, self.strides,
                            [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])  # fmt: skip


@contextlib.contextmanager
def _patched(owner, name: str, replacement):
    """``owner.name`` is ``replacement`` within the block (a method, or the layers' maxout)."""
    library = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, library)


def explicit_pool():
    """Models *called* inside pool ceil-mode through TensorFlow's explicit padding."""
    return _patched(layers.CeilMaxPooling2D, "call", _explicit_pool_call)


@tf.function(jit_compile=True)
def _xla_two_piece_gradient(z, upstream):
    first, second = tf.split(z, 2, axis=-1)
    half_sign = tf.sign(first - second) * 0.5
    return tf.concat([(0.5 + half_sign) * upstream, (0.5 - half_sign) * upstream], axis=-1)


def _with_gradient(z, pieces: int, gradient):
    """The library's forward (max over the reshape) with ``gradient(z, z5, out, upstream)``."""
    if pieces == 1:
        return z
    shape = tf.shape(z)
    grouped_shape = tf.concat([shape[:-1], [pieces, z.shape[-1] // pieces]], 0)

    @tf.custom_gradient
    def max_over_blocks(z):
        grouped = tf.reshape(z, grouped_shape)
        out = tf.reduce_max(grouped, axis=-2)
        return out, lambda upstream: gradient(z, grouped, out, upstream)

    return max_over_blocks(z)


def _xla_max_of_pieces(z, pieces: int, ties: str = "share"):
    if pieces != 2:  # the 4-piece layers keep the library's gradient
        return maxout.max_of_pieces(z, pieces, ties)
    return _with_gradient(z, pieces, lambda z, _, __, upstream: _xla_two_piece_gradient(z, upstream))


def _broadcast_max_of_pieces(z, pieces: int, ties: str = "share"):
    def gradient(z, grouped, out, upstream):
        hits = tf.cast(tf.equal(grouped, out[..., None, :]), upstream.dtype)
        share = upstream[..., None, :] * (hits / tf.reduce_sum(hits, axis=-2, keepdims=True))
        return tf.reshape(share, tf.shape(z))

    return _with_gradient(z, pieces, gradient)


def _piece_rows(z):
    """A two-piece ``z`` as the free reshape ``(N, H, W * 2, units)`` (a dense layer's: one
    image row): row ``w * 2 + k`` is piece ``k`` at column ``w``."""
    shape = tf.shape(z)
    rows = [shape[0], 1] if len(z.shape) == 2 else [shape[0], shape[1]]
    width = 1 if len(z.shape) == 2 else shape[2]
    return tf.reshape(z, tf.stack([*rows, width * 2, z.shape[-1] // 2]))


def _pool_gradients_max_of_pieces(z, pieces: int, ties: str = "share"):
    if pieces != 2:  # the 4-piece layers keep the library's gradient
        return maxout.max_of_pieces(z, pieces, ties)
    shape, units = tf.shape(z), z.shape[-1] // 2
    window = {"ksize": [1, 1, 2, 1], "strides": [1, 1, 2, 1], "padding": "VALID"}

    @tf.custom_gradient
    def max_of_two(z):
        grouped = _piece_rows(z)
        pooled = tf.nn.max_pool2d(grouped, (1, 2), (1, 2), "VALID")  # its gradient pairs with it

        def gradient(upstream):
            least = tf.reduce_min(tf.reshape(z, tf.concat([shape[:-1], [2, units]], 0)), axis=-2)
            upstream = tf.reshape(upstream, tf.shape(pooled))
            shared = upstream * tf.cast(tf.equal(pooled, tf.reshape(least, tf.shape(pooled))),
                                        upstream.dtype)  # fmt: skip
            to_max = tf.raw_ops.MaxPoolGrad(orig_input=grouped, orig_output=pooled,
                                            grad=upstream - shared, **window)  # fmt: skip
            to_both = tf.raw_ops.AvgPoolGrad(orig_input_shape=tf.shape(grouped), grad=shared,
                                             **window)  # fmt: skip
            return tf.reshape(to_max + to_both, shape)

        return tf.reshape(pooled, tf.concat([shape[:-1], [units]], 0)), gradient

    return max_of_two(z)


def _depthwise_difference_max_of_pieces(z, pieces: int, ties: str = "share"):
    if pieces != 2:  # the 4-piece layers keep the library's gradient
        return maxout.max_of_pieces(z, pieces, ties)
    units = z.shape[-1] // 2
    weights = tf.reshape(tf.repeat(tf.constant([1.0, -1.0], z.dtype), units), (1, 2, units, 1))

    def gradient(z, _, __, upstream):
        difference = tf.nn.depthwise_conv2d(_piece_rows(z), weights, (1, 1, 2, 1), "VALID")
        half_sign = tf.sign(tf.reshape(difference, tf.shape(upstream))) * 0.5
        return tf.concat([(0.5 + half_sign) * upstream, (0.5 - half_sign) * upstream], axis=-1)

    return _with_gradient(z, pieces, gradient)


@tf.custom_gradient
def _max_of_blocks(*blocks):
    out = blocks[0]
    for block in blocks[1:]:
        out = tf.maximum(out, block)

    def gradient(upstream):
        if len(blocks) == 2:  # the library's two-piece weights, per block
            half_sign = tf.sign(blocks[0] - blocks[1]) * 0.5
            return (0.5 + half_sign) * upstream, (0.5 - half_sign) * upstream
        hits = [tf.cast(tf.equal(block, out), upstream.dtype) for block in blocks]
        count = tf.add_n(hits)
        return [hit / count * upstream for hit in hits]

    return out, gradient


def _per_piece_call(self, inputs):
    pad = self._explicit_padding()
    if pad:
        inputs = tf.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    mode = "SAME" if self.padding == "same" else "VALID"
    kernels, biases = tf.split(self.kernel, self.pieces, -1), tf.split(self.bias, self.pieces)
    blocks = [tf.nn.bias_add(tf.nn.conv2d(inputs, k, self.strides, mode), b)
              for k, b in zip(kernels, biases, strict=True)]  # fmt: skip
    return blocks[0] if self.pieces == 1 else _max_of_blocks(*blocks)


def per_piece_convolutions():
    """Maxout convolutions *traced* inside run one convolution per piece."""
    return _patched(layers.MaxoutConv2D, "call", _per_piece_call)


def maxout_as(function):
    """Models *traced* inside compute their maxouts with ``function(z, pieces, ties)``."""
    return _patched(layers, "max_of_pieces", function)


def same_gradients(function, shape=(4, 5, 6, 16), seed: int = 0) -> bool:
    """Whether ``function``'s two-piece maxout and gradient equal the library's, on small
    integers (so that many pieces tie)."""
    rng = np.random.default_rng(seed)
    z = tf.constant(rng.integers(-2, 3, size=shape), tf.float32)
    upstream = tf.constant(rng.normal(size=(*shape[:-1], shape[-1] // 2)), tf.float32)
    found = []
    for maxout_of in (maxout.max_of_pieces, function):
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = maxout_of(z, 2)
        found.append((out, tape.gradient(out, z, output_gradients=upstream)))
    (out, gradient), (other_out, other_gradient) = found
    return bool(np.array_equal(out, other_out) and np.array_equal(gradient, other_gradient))


# variant: (context the nets are traced in, models.build's options)
VARIANTS = {
    "library": (contextlib.nullcontext, {}),
    "ties_one": (contextlib.nullcontext, {"maxout_ties": "one"}),
    "xla_gradient": (lambda: maxout_as(_xla_max_of_pieces), {}),
    "broadcast_gradient": (lambda: maxout_as(_broadcast_max_of_pieces), {}),
    "per_piece": (per_piece_convolutions, {}),
    "pool_gradients": (lambda: maxout_as(_pool_gradients_max_of_pieces), {}),
    "depthwise_difference": (lambda: maxout_as(_depthwise_difference_max_of_pieces), {}),
}


def pool_maxout_steps(repeats: int, steps: int = 5) -> dict:
    x, y = benchmarks.fixed_batch("mnist")
    data = benchmarks.repeated(x, y)
    candidates = {}
    for variant, (context, options) in VARIANTS.items():
        for net in ("mnist_fitnet", "mnist_teacher"):
            with context():
                model = models.build(net, (28, 28, 1), benchmarks.NUM_CLASSES, seed=0, **options)
                runner = benchmarks.train_runner(benchmarks.plain_student(model), data, steps)
            candidates[f"{net}/{variant}"] = runner
    times = timing.interleaved(candidates, repeats=repeats)
    mults = {net: models.count_multiplications(models.build(net, (28, 28, 1), 10))
             for net in ("mnist_fitnet", "mnist_teacher")}  # fmt: skip
    mult_ratio = mults["mnist_teacher"] / mults["mnist_fitnet"]

    def goal_two(variant):  # student / teacher achieved GFLOP/s, per round
        student, teacher = times[f"mnist_fitnet/{variant}"], times[f"mnist_teacher/{variant}"]
        per_round = [t / s / mult_ratio for s, t in zip(student, teacher, strict=True)]
        return timing.quartiles(per_round)

    over_library = {f"{net.removeprefix('mnist_')}_{variant}_over_library": timing.ratio(
        times, f"{net}/{variant}", f"{net}/library")
        for variant in VARIANTS if variant != "library"
        for net in ("mnist_fitnet", "mnist_teacher")}  # fmt: skip
    return {
        "ms": timing.summary(times, steps),
        "pool_gradients_same_values": same_gradients(_pool_gradients_max_of_pieces),
        "depthwise_difference_same_values": same_gradients(_depthwise_difference_max_of_pieces),
        "student_over_teacher_gflops": {v: goal_two(v) for v in VARIANTS},
        **over_library,
    }


def tensorflow_convolution_calls(calls: int = 20) -> dict:
    """``{"conv1".."conv3": run}``: each runs ``calls`` of that convolution (explicit pad +
    convolution + bias, in a ``tf.function``) and reads one element of the last."""
    candidates = {}
    for i, (shape, kernel, pad) in enumerate(TEACHER_CONVS, start=1):
        x = tf.random.normal(shape)
        w = tf.Variable(tf.random.normal(kernel) * 0.05)
        b = tf.Variable(tf.zeros(kernel[-1]))
        conv = tf.function(lambda x, w=w, b=b, p=pad: tf.nn.bias_add(tf.nn.conv2d(
            tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]), w, 1, "VALID"), b))  # fmt: skip
        first = lambda out: out[0, 0, 0, 0].numpy()  # noqa: E731
        candidates[f"conv{i}"] = _repeat(lambda c=conv, x=x: c(x), first, calls)
    return candidates


def torch_convolution_calls(layout: str, calls: int = 20) -> dict:
    """As :func:`tensorflow_convolution_calls`, in PyTorch eager (``torch.inference_mode``),
    ``layout`` ``"nchw"`` or ``"channels_last"``."""
    import torch  # noqa: PLC0415 (optional dependency, its own process)

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    candidates = {}
    for i, (shape, kernel, pad) in enumerate(TEACHER_CONVS, start=1):
        n, h, w, c = shape
        x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
        conv = torch.nn.Conv2d(c, kernel[-1], kernel[0], padding=pad).to(memory_format=fmt)

        def call(conv=conv, x=x):
            with torch.inference_mode():
                return conv(x)

        candidates[f"conv{i}"] = _repeat(call, lambda out: float(out[0, 0, 0, 0]), calls)
    return candidates


def tensorflow_convolutions(repeats: int, calls: int = 20) -> dict:
    candidates = tensorflow_convolution_calls(calls)
    return timing.summary(timing.interleaved(candidates, repeats=repeats), calls)


def torch_convolutions(repeats: int, threads: int, calls: int = 20) -> dict:
    peer_process.pin_torch(threads)
    out = {}
    for layout in ("nchw", "channels_last"):
        candidates = torch_convolution_calls(layout, calls)
        out[layout] = timing.summary(timing.interleaved(candidates, repeats=repeats), calls)
    return out


def _repeat(call, sync, calls: int):
    """``calls`` calls, then one element of the last result read on the host (copying a whole
    output to NumPy would be timed as well)."""

    def run():
        for _ in range(calls):
            out = call()
        sync(out)

    return run


def _torch_in_own_process(repeats: int, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.maxout_alternatives", "--torch_only",
                           f"--repeats={repeats}", f"--threads={threads}"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, **peer_process.thread_env(threads)},
                          cwd=pathlib.Path(__file__).parent.parent)  # fmt: skip
    if proc.returncode:
        return {"skipped": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2, help="intra- and inter-op threads")
    parser.add_argument("--torch_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_only:
        print(json.dumps(torch_convolutions(args.repeats, args.threads)))
        return
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    result = {
        "machine": machine(),
        "fused_forward": fused_forward(args.repeats),
        "pool_maxout": pool_maxout_steps(args.repeats),
        "convolutions": {"tensorflow": tensorflow_convolutions(args.repeats),
                         "torch": _torch_in_own_process(args.repeats, args.threads)},  # fmt: skip
    }
    standalone.write(RESULTS, result)


if __name__ == "__main__":
    main()
