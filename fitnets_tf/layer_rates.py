"""A learning rate of their own for some variables: the paper's code trains convolutions slower.

The FitNets code trains its students' convolutions at 0.05 × the learning rate (pylearn2's
``W_lr_scale: .05`` and ``b_lr_scale: .05`` on every ``MaxoutConvC01B`` of the CIFAR-10
FitNets' configuration; the maxout FC and softmax layers, and the hint regressor, at the full
rate). A Keras optimizer has one rate: the optimizers here (:data:`CLASSES`, Keras' own with
:class:`ScaledRates` mixed in) give the variables :meth:`ScaledRates.scale_rates` names a
multiple of it. The factor multiplies the rate of each update step, not the gradient: RMSProp
and Adam divide a gradient's scale out, so scaled gradients would leave their steps as they
were. A scaled variable's decoupled weight decay is taken at its own rate too, as a PyTorch
parameter group's learning rate scales both.
"""

from __future__ import annotations

import keras
from keras import ops

from fitnets_tf.layers import MaxoutConv2D

# What --conv_lr_scale scales: Keras' convolution layers and the maxout one (a subclass of
# none of them). Not MaxoutDense: the paper's code trains its maxout FC at the full rate.
_CONVOLUTIONS = (
    MaxoutConv2D, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
)  # fmt: skip


def convolution_variables(model: keras.Model) -> list:
    """The trainable variables (kernels, biases) of ``model``'s convolution layers, those of
    nested models and of custom layers' sublayers included."""
    # Keras lists a custom layer's sublayers nowhere public: a residual block's convolutions
    # are found only by flattening, as Keras itself collects their weights.
    layers = model._flatten_layers(include_self=False, recursive=True)
    found = [layer for layer in layers if isinstance(layer, _CONVOLUTIONS)]
    return [v for layer in found for v in layer.trainable_variables]


class ScaledRates:
    """Mixed into a Keras optimizer: :meth:`scale_rates` gives variables a factor of its rate.

    Not part of the optimizer's configuration (it names variables): a copy made from the
    configuration (:func:`fitnets_tf.recipes.fresh_copy`) is given the factors again.
    """

    def scale_rates(self, variables, factor: float) -> None:
        """``variables`` train at ``factor`` × the learning rate from now on (the last factor
        given for a variable holds)."""
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
            raise ValueError(f"`factor` must be a number > 0. Received: factor={factor!r}")
        factors = dict(getattr(self, "_rate_factors", {}))
        factors.update({self._var_key(v): float(factor) for v in variables})
        self._rate_factors = factors

    def rate_factors(self) -> dict:
        """``{variable key: factor}`` as :meth:`scale_rates` set them (Keras' ``_var_key``)."""
        return dict(getattr(self, "_rate_factors", {}))

    def _factor(self, variable):
        return getattr(self, "_rate_factors", {}).get(self._var_key(variable))

    def _use_weight_decay(self, variable):
        # A scaled variable decays in its own update step, at its own rate (below).
        return super()._use_weight_decay(variable) and self._factor(variable) is None

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor(variable)
        if factor is None:
            return super().update_step(gradient, variable, learning_rate)
        rate = ops.multiply(ops.cast(learning_rate, variable.dtype), factor)
        if self.weight_decay is not None and super()._use_weight_decay(variable):
            # Keras decays every variable before it updates any; per variable, the same order.
            decay = ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(variable, ops.multiply(variable, ops.multiply(decay, rate)))
        return super().update_step(gradient, variable, rate)


# Registered under Keras' own class names in this package: a model saved compiled with one
# loads with it where fitnets_tf is imported (its factors, which name variables, are not kept).
@keras.saving.register_keras_serializable(package="fitnets_tf")
class RMSprop(ScaledRates, keras.optimizers.RMSprop):
    """Keras' RMSprop with :class:`ScaledRates`."""


@keras.saving.register_keras_serializable(package="fitnets_tf")
class SGD(ScaledRates, keras.optimizers.SGD):
    """Keras' SGD with :class:`ScaledRates`."""


@keras.saving.register_keras_serializable(package="fitnets_tf")
class Adam(ScaledRates, keras.optimizers.Adam):
    """Keras' Adam with :class:`ScaledRates`."""


@keras.saving.register_keras_serializable(package="fitnets_tf")
class AdamW(ScaledRates, keras.optimizers.AdamW):
    """Keras' AdamW with :class:`ScaledRates`."""


#: The optimizers :func:`fitnets_tf.recipes.build_optimizer` builds, by name, when some
#: variables train at a rate of their own.
CLASSES = {"rmsprop": RMSprop, "sgd": SGD, "adam": Adam, "adamw": AdamW}
