"""Batch normalization computed by TensorFlow's fused kernel.

Keras 3's BatchNormalization computes a training batch's statistics with ``moments`` and
normalises with ``tf.nn.batch_normalization`` on the TensorFlow backend: several passes over
the activation, and as many again in the gradient. TensorFlow's ``FusedBatchNormV3`` (oneDNN on
a CPU, cuDNN on a GPU) does each direction in one op: 2-2.5x faster at the default student's
activations, and its whole train step takes 0.79-0.83x the time (``bench/batch_norm_cost.py``).
:class:`FusedBatchNormalization` is Keras' layer (same weights, options and saved config)
trained through that kernel wherever it applies; elsewhere (a mask, batch renormalization,
synchronized statistics, channels first, float64, inputs of rank other than 2 and 4) and in
inference it is Keras' own code. The library's nets are built with it;
:func:`with_fused_batch_norm` gives a model of yours the same.

In training, the same function up to float rounding, not bit for bit: the kernel sums in its
own order, and its epsilon is at least ``MIN_EPSILON``; in inference, Keras' bits. The kernel's
batch variance comes Bessel-corrected (``n / (n - 1)``), where Keras' moving variance averages
the biased one: the layer converts it back, so the moving statistics follow Keras' definition.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from fitnets_tf.layer_state import set_weights

# cuDNN refuses an epsilon below 1e-5, and 1e-5 in float32 is just below it: the floor the
# fused path of tf.keras 2 used. It moves a variance by 1e-8, far under float32's resolution
# for a variance near 1.
MIN_EPSILON = 1.001e-5
_KERNEL_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="fitnets_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by ``FusedBatchNormV3`` where it applies.

    Takes Keras' arguments; a ``.keras`` file of a model with it needs ``import fitnets_tf`` to
    load, as the maxout layers do. Exports fold it like Keras' (``fitnets_tf.export.fold``).
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fuses(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # As Keras does: statistics in float32 whatever the policy, the output in its dtype.
        x = ops.cast(inputs, "float32")
        flat = len(x.shape) == 2
        if flat:  # the kernel takes 4-D inputs: (N, C) as (N, 1, 1, C), a free reshape
            x = x[:, None, None, :]
        y = self._normalise_batch(x)
        if flat:
            y = y[:, 0, 0, :]
        return ops.cast(y, self.compute_dtype)

    def _fuses(self, inputs, training, mask) -> bool:
        # Training mode only. Inference is one multiply-add either way, and there Keras' code
        # keeps a frozen layer deterministic on a GPU: the kernel's gradient in inference
        # mode has no deterministic GPU implementation (under op determinism it raises).
        rank = len(inputs.shape)
        return (
            bool(training)
            and self.trainable
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and rank in (2, 4)
            and self.axis % rank == rank - 1
            and keras.backend.standardize_dtype(inputs.dtype) in _KERNEL_DTYPES
        )

    def _affine(self):
        """γ and β as the kernel takes them: ones and zeros for the ones the layer has not."""
        channels = self.moving_mean.shape
        scale = self.gamma if self.scale else tf.ones(channels)
        offset = self.beta if self.center else tf.zeros(channels)
        return scale, offset

    def _normalise_batch(self, x):
        y, mean, corrected = tf.compat.v1.nn.fused_batch_norm(
            x, *self._affine(), epsilon=max(self.epsilon, MIN_EPSILON), is_training=True
        )
        n = ops.cast(ops.prod(ops.shape(x)[:-1]), "float32")
        variance = corrected * ((n - 1.0) / ops.maximum(n, 1.0))
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return y


def with_fused_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (Functional or Sequential, nested models included) whose Keras
    BatchNormalization layers are :class:`FusedBatchNormalization`, with the same weights.

    The copy is not compiled. It computes the same function up to float rounding, and trains
    faster on TensorFlow wherever its batch norm runs in training mode.
    """
    if not isinstance(model, keras.Sequential):
        try:
            model.inputs  # noqa: B018  (Functional models have them, subclassed ones not)
        except (AttributeError, ValueError) as e:
            raise ValueError(
                f"with_fused_batch_norm copies Functional and Sequential models; "
                f"{model.name!r} is a subclassed {type(model).__name__}. Build its batch norm "
                "layers as fitnets_tf.batch_norm.FusedBatchNormalization (it takes Keras' "
                "arguments) instead."
            ) from e
    clone = lambda layer: fused_class(layer).from_config(layer.get_config())  # noqa: E731
    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    set_weights(copy, model.get_weights())
    return copy


def fused_class(layer) -> type:
    """The class a copy of ``layer`` is made of: :class:`FusedBatchNormalization` for Keras'
    BatchNormalization, the layer's own class for any other (a subclass of Keras' batch norm
    may compute something else, and is kept)."""
    if type(layer) is keras.layers.BatchNormalization:
        return FusedBatchNormalization
    return type(layer)
