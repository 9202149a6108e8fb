"""Batch normalization folded into the convolution or dense layer before it, for serving.

In inference a BatchNormalization layer is an affine map per channel, ``gamma * (z - mean) /
sqrt(var + eps) + beta``; after a linear layer ``z = x @ W + b`` it folds into that layer:
``W' = W * s`` and ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``. LiteRT's
and ONNX's converters do this on their own. TensorFlow does not for Keras 3's BatchNormalization
(it runs as a multiply and an add over the whole activation), and those passes, with the ReLU
after them, took half of a thin student's inference time at batch 128 (``bench/serving.py``).
Folded, TensorFlow's graph optimizer fuses each convolution with its bias and ReLU into one
oneDNN kernel, as the other runtimes do.

The folded model computes the same function up to float rounding (a few ULPs); it is for
serving only: its BatchNormalization layers are gone, so training it is not training the
student.
"""

from __future__ import annotations

import keras
import numpy as np

from fitnets_tf.errors import ExportVerificationError
from fitnets_tf.layer_state import set_weights
from fitnets_tf.models.nesting import own_nodes

# Layers whose output is a linear function of their kernel's last axis, per channel.
_FOLDABLE = (keras.layers.Conv2D, keras.layers.Dense)


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with each foldable BatchNormalization folded into its producer.

    A BatchNormalization folds when it normalises the last axis and its input is the only use
    of a ``Conv2D`` (channels last) or ``Dense`` layer with no activation. Anything else (a
    BatchNormalization after an addition, after an activation) is left as it is; a model with
    a shared layer (called more than once), one that is not Functional or Sequential, and one
    with nothing to fold are returned unchanged.
    """
    model = _called_here_only(model)
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    folded_bns = {bn.name for bn in pairs.values()}

    def clone(layer):
        config = layer.get_config()
        if layer.name in pairs:
            return layer.__class__.from_config({**config, "use_bias": True})
        if layer.name in folded_bns:
            # The BatchNormalization's policy, not the global one: under mixed precision an
            # Identity of the global policy would round a float32 model's activations.
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy.name)
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        # An Identity takes none of the BatchNormalization's call arguments (training, mask).
        return layer(*args) if layer.name in folded_bns else layer(*args, **kwargs)

    # A Sequential model calls each layer with what its call accepts; Keras refuses a
    # call_function for one.
    calls = {} if isinstance(model, keras.Sequential) else {"call_function": call}
    copy = keras.models.clone_model(model, clone_function=clone, **calls)
    for layer in model.layers:
        if not layer.weights or layer.name in folded_bns:
            continue  # the clone renames its input layer
        target = copy.get_layer(layer.name)
        if layer.name in pairs:
            set_weights(target, _folded(layer, pairs[layer.name]))
        else:
            set_weights(target, layer.get_weights())
    _check_same_function(model, copy)
    return copy


def _check_same_function(model: keras.Model, folded: keras.Model) -> None:
    """Raises if ``folded`` does not compute ``model``'s function on a random batch.

    Cheap insurance: every export is written from the folded model and verified against it,
    so a folding mistake would otherwise reach the artifact unnoticed.
    """
    shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or any(d is None for d in shape):
        return
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(folded(x, training=False))
    scale = float(np.max(np.abs(expected))) or 1.0
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-4 * scale):
        raise ExportVerificationError(
            f"Folding batch normalization changed {model.name!r}'s outputs (largest difference "
            f"{float(np.max(np.abs(got - expected))):.3g}, outputs up to {scale:.3g}); nothing "
            "was exported. This is a fitnets_tf bug: please report it with the model's "
            "architecture (model.summary())."
        )


def _called_here_only(model: keras.Model) -> keras.Model:
    """``model``, or a copy with the same weights when its layers were also called in another
    graph (a flattened model's, in the model they were nested in): each layer then has two
    calls, and would be taken for a shared one that cannot fold."""
    if not isinstance(getattr(model, "inputs", None), list) or all(
        len(own_nodes(model, layer)) == len(getattr(layer, "_inbound_nodes", ()))
        for layer in model.layers
    ):
        return model
    copy = keras.models.clone_model(model)
    set_weights(copy, model.get_weights())
    return copy


def _foldable_pairs(model: keras.Model) -> dict:
    """``{producer name: its BatchNormalization}`` for every pair that folds."""
    if not isinstance(model, keras.Model) or not isinstance(getattr(model, "inputs", None), list):
        return {}
    if any(_single(layer, "output") is None for layer in model.layers):
        return {}  # a shared layer: who reads what is no longer one tensor per layer
    outputs_of = {id(layer.output): layer for layer in model.layers}
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization) or not _normalises_last_axis(bn):
            continue
        producer = outputs_of.get(id(bn.input))
        if (
            isinstance(producer, _FOLDABLE)
            and getattr(producer, "data_format", "channels_last") == "channels_last"
            and producer.activation is keras.activations.linear
            and _readers(model, producer.output) == 1
        ):
            pairs[producer.name] = bn
    return pairs


def _single(layer, attribute: str):
    """``layer.input`` or ``layer.output``, or None for a layer called more than once."""
    # Keras 3 answers `input` with the first call's for a shared layer: count the calls (its
    # inbound nodes; no public API says how many there are).
    if len(getattr(layer, "_inbound_nodes", ())) != 1:
        return None
    try:
        return getattr(layer, attribute)
    except (AttributeError, ValueError):
        return None


def _normalises_last_axis(bn) -> bool:
    axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    rank = len(bn.input.shape)
    return [a % rank for a in axis] == [rank - 1]


def _readers(model: keras.Model, tensor) -> int:
    """How many layers of ``model`` and outputs of it read ``tensor``."""
    readers = 0
    for layer in model.layers:
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        readers += sum(x is tensor for x in inputs)
    return readers + sum(out is tensor for out in model.outputs)


def _folded(producer, bn) -> list[np.ndarray]:
    """The producer's kernel and bias with ``bn``'s inference-time affine map folded in."""
    kernel = producer.kernel.numpy().astype("float64")
    bias = producer.bias.numpy().astype("float64") if producer.use_bias else 0.0
    channels = kernel.shape[-1]
    gamma = bn.gamma.numpy() if bn.scale else np.ones(channels)
    beta = bn.beta.numpy() if bn.center else np.zeros(channels)
    mean, variance = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    scale = gamma.astype("float64") / np.sqrt(variance.astype("float64") + bn.epsilon)
    dtype = producer.kernel.dtype
    return [
        (kernel * scale).astype(dtype),
        ((bias - mean) * scale + beta).astype(dtype),
    ]
