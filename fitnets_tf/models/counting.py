"""What a model costs: its parameters, and its multiplications as the paper's Table 5 counts them."""

from __future__ import annotations

import math

import keras

from fitnets_tf.layers import MaxoutConv2D, MaxoutDense
from fitnets_tf.models.nesting import own_nodes
from fitnets_tf.models.onnx_model import OnnxTeacher


def count_params(model: keras.Model) -> int:
    """All weights of `model`, trainable or not, biases included (an ONNX teacher's: those of
    its file, which Keras does not hold)."""
    onnx = sum(layer.params for layer in model.layers if isinstance(layer, OnnxTeacher))
    return int(model.count_params()) + onnx


# Layers whose multiplications are ``kernel.size`` per output position (pieces included in
# the maxout kernels, groups in Conv's; a depthwise kernel is one kh × kw filter per input
# channel and multiplier). Anything else (biases, pooling, normalisation, activations) is
# ignored, as in the paper's Table 5 count.
_COUNTED = (
    MaxoutConv2D,
    MaxoutDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Dense,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)
# A depthwise then a pointwise kernel, both at every output position.
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
# Every input position multiplies the whole kernel.
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)  # fmt: skip
# Trainable weights of two or more dimensions, but no multiplications the count means: a
# lookup table, a per-position slope.
_NOT_MULTIPLYING = (keras.layers.Embedding, keras.layers.PReLU)


def count_multiplications(model: keras.Model) -> int:
    """Weights-only multiplications of one example's forward pass, the paper's Table 5 method.

    Per call of a counted layer: ``kernel.size * prod(output shape without batch and channels)``,
    i.e. ``pieces * kh * kw * C_in * C_out * H_out * W_out`` for `MaxoutConv2D` (``H_out``,
    ``W_out`` of the convolution, before pooling) and ``pieces * in * out`` for `MaxoutDense`;
    Keras' `Conv1D/2D/3D`, `Dense` and `DepthwiseConv1D/2D` are counted the same way with one
    piece, `SeparableConv1D/2D` as their depthwise and pointwise kernels at each output
    position, `Conv1D/2D/3DTranspose` as their kernel at each *input* position. Other layers
    are ignored (:func:`uncounted_layers` names those that hold kernels all the same). Nested
    models are counted recursively.

    Args:
        model: a built Functional or Sequential model with known spatial dimensions.

    Returns:
        The number of multiplications as an int.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_multiplications(layer)
            continue
        if not isinstance(layer, (*_COUNTED, *_SEPARABLE, *_TRANSPOSED)):
            continue
        # A shared layer has one node per call; `layer.output` refuses those, nodes do not.
        # Only this model's calls count: a flattened model's layers were also called in the
        # graph of the model they were nested in (fitnets_tf.models.nesting).
        nodes = own_nodes(model, layer)
        if not nodes:
            raise ValueError(
                f"Layer {layer.name!r} was never called on a symbolic input: build the model first."
            )
        for node in nodes:
            transposed = isinstance(layer, _TRANSPOSED)
            positions = (node.input_tensors if transposed else node.output_tensors)[0].shape[1:-1]
            if any(d is None for d in positions):
                raise ValueError(
                    f"Layer {layer.name!r} has unknown output dimensions {positions}: "
                    "build the model with a fully defined input shape."
                )
            total += _per_position(layer) * math.prod(positions)
    return total


def _per_position(layer) -> int:
    if isinstance(layer, _SEPARABLE):
        return math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
    return math.prod(layer.kernel.shape)


def _holds_kernels(layer) -> bool:
    # All weights, not the trainable ones: a frozen teacher's kernels multiply as much.
    return any(len(w.shape) > 1 for w in layer.weights)


def uncounted_layers(model: keras.Model) -> list[str]:
    """The layers of ``model`` (nested models' included) that hold weights of two or more
    dimensions but that :func:`count_multiplications` does not count: a custom layer, an
    attention layer (or an ONNX teacher's, whose weights are in its file). With any, the count
    leaves out multiplications the model does."""
    found = []
    known = (*_COUNTED, *_SEPARABLE, *_TRANSPOSED, *_NOT_MULTIPLYING)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += uncounted_layers(layer)
        elif not isinstance(layer, known) and (
            _holds_kernels(layer) or isinstance(layer, OnnxTeacher)
        ):
            found.append(layer.name)
    return found
