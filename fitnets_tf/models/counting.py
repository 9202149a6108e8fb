"""What a model costs: its parameters, and its multiplications as the paper's Table 5 counts them."""

from __future__ import annotations

import math

import keras

from fitnets_tf.layers import MaxoutConv2D, MaxoutDense
from fitnets_tf.models.nesting import own_nodes


def count_params(model: keras.Model) -> int:
    """All weights of `model`, trainable or not, biases included."""
    return int(model.count_params())


# Layers whose multiplications are ``kernel.size`` per output position (pieces included in
# the maxout kernels, groups in Conv's). Anything else (biases, pooling, normalisation,
# activations, other layer types) is ignored, as in the paper's Table 5 count.
_COUNTED = (
    MaxoutConv2D,
    MaxoutDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Dense,
)


def count_multiplications(model: keras.Model) -> int:
    """Weights-only multiplications of one example's forward pass, the paper's Table 5 method.

    Per call of a counted layer: ``kernel.size * prod(output shape without batch and channels)``,
    i.e. ``pieces * kh * kw * C_in * C_out * H_out * W_out`` for `MaxoutConv2D` (``H_out``,
    ``W_out`` of the convolution, before pooling) and ``pieces * in * out`` for `MaxoutDense`;
    Keras `Conv1D/2D/3D` and `Dense` are counted the same way with one piece. Other layers are
    ignored. Nested models are counted recursively.

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
        if not isinstance(layer, _COUNTED):
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
            positions = node.output_tensors[0].shape[1:-1]
            if any(d is None for d in positions):
                raise ValueError(
                    f"Layer {layer.name!r} has unknown output dimensions {positions}: "
                    "build the model with a fully defined input shape."
                )
            total += math.prod(layer.kernel.shape) * math.prod(positions)
    return total
