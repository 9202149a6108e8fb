"""Builds an :class:`~fitnets_tf.models.specs.ArchSpec` as a Functional Keras model of logits.

Layer names are stable so that hint training can tap them without touching ``call``:
``conv{i}`` (:class:`~fitnets_tf.layers.MaxoutConv2D`), ``pool{i}`` (pooling after conv ``i``),
``flatten``, ``fc`` (:class:`~fitnets_tf.layers.MaxoutDense`), ``dropout_input`` /
``dropout_{i}`` / ``dropout_fc`` and ``logits``. The paper's layer ``i`` is pylearn2's
``MaxoutConvC01B``, which pools inside the layer, so its output is ``pool{i}`` when conv ``i``
is pooled and ``conv{i}`` otherwise.
"""

from __future__ import annotations

import keras

from fitnets_tf.errors import ConfigError
from fitnets_tf.layers import (
    DATA_FORMAT,
    TIES,
    CeilMaxPooling2D,
    MaxoutConv2D,
    MaxoutDense,
    kernel_max_norm,
)
from fitnets_tf.models.specs import PAPER_INIT_RANGE, ArchSpec


def _initializer(kernel_initializer, seed: int | None, j: int):
    if kernel_initializer is None:
        # A seeded Keras initializer repeats its values on every call: offset per layer.
        layer_seed = None if seed is None else seed + j
        return keras.initializers.RandomUniform(
            -PAPER_INIT_RANGE, PAPER_INIT_RANGE, seed=layer_seed
        )
    return keras.initializers.get(kernel_initializer)


def _pool_and_drop(x, i: int, conv, rate: float):
    """The pooling after paper layer ``i`` (cuda-convnet's ceil rounding), then dropout."""
    if conv.pool == "global":
        x = keras.layers.GlobalMaxPooling2D(data_format=DATA_FORMAT, name=f"pool{i}")(x)
    elif conv.pool is not None:
        # Every net of the original pools with cuda-convnet (ceil rounding); where the window
        # tiles the map exactly this is plain max pooling.
        x = CeilMaxPooling2D(conv.pool[0], conv.pool[1], name=f"pool{i}")(x)
    if rate:
        x = keras.layers.Dropout(rate, name=f"dropout_{i}")(x)
    return x


def build_maxout_net(spec: ArchSpec, name: str, input_shape, num_classes: int, *,
                     kernel_initializer=None, seed: int | None = None, max_norm: bool = True,
                     rate: float = 0.0, input_rate: float = 0.0,
                     ties: str = TIES[0]) -> keras.Model:  # fmt: skip
    """``spec`` as a model named ``name`` (arguments as :func:`fitnets_tf.models.build`'s)."""
    inputs = keras.Input(tuple(input_shape), name="input")
    x = keras.layers.Dropout(input_rate, name="dropout_input")(inputs) if input_rate else inputs
    for i, conv in enumerate(spec.convs, start=1):
        x = MaxoutConv2D(conv.filters, conv.kernel_size, pieces=conv.pieces, padding=conv.padding,
                         max_norm=conv.max_norm if max_norm else None, ties=ties, name=f"conv{i}",
                         kernel_initializer=_initializer(kernel_initializer, seed, i))(x)  # fmt: skip
        if any(d < 1 for d in x.shape[1:3]):
            raise ConfigError(f"`input_shape` is too small for {name!r}: conv{i} output is "
                              f"{x.shape[1:3]}. Received: input_shape={tuple(input_shape)}")  # fmt: skip
        x = _pool_and_drop(x, i, conv, rate)
    if len(x.shape) > 2:
        x = keras.layers.Flatten(data_format=DATA_FORMAT, name="flatten")(x)
    if spec.fc_units is not None:
        x = MaxoutDense(spec.fc_units, pieces=spec.fc_pieces,
                        max_norm=spec.fc_max_norm if max_norm else None, ties=ties,
                        kernel_initializer=_initializer(kernel_initializer, seed, len(spec.convs) + 1),
                        name="fc")(x)  # fmt: skip
        if rate:
            x = keras.layers.Dropout(rate, name="dropout_fc")(x)
    constraint = kernel_max_norm(spec.logits_max_norm if max_norm else None, conv=False)
    logits = keras.layers.Dense(num_classes, kernel_constraint=constraint, name="logits",
                                kernel_initializer=_initializer(kernel_initializer, seed,
                                                                len(spec.convs) + 2))(x)  # fmt: skip
    return keras.Model(inputs, logits, name=name)
