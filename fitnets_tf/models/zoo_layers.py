"""What the benchmark networks share: seeded He initialisation, conv, BN and the logits head."""

from __future__ import annotations

import keras

from fitnets_tf.batch_norm import FusedBatchNormalization
from fitnets_tf.layers import DATA_FORMAT


class Initializers:
    """A fresh kernel initializer per layer: ``kernel_initializer`` (a Keras name or object), or
    He-normal over fan-out (the benchmark's). Seeded: layer ``j`` gets ``seed + j``, since a
    seeded Keras initializer repeats its values on every call."""

    def __init__(self, kernel_initializer=None, seed: int | None = None):
        self.kernel_initializer, self.seed, self.count = kernel_initializer, seed, 0

    def next(self):
        self.count += 1
        seed = None if self.seed is None else self.seed + self.count
        if self.kernel_initializer is None:
            return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal", seed)
        init = keras.initializers.get(self.kernel_initializer)
        config = init.get_config()
        if "seed" in config and seed is not None:
            init = init.__class__.from_config({**config, "seed": seed})
        return init


def conv(x, filters: int, kernel: int, stride: int, init: Initializers, name: str,
         use_bias: bool = False):  # fmt: skip
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                               data_format=DATA_FORMAT, kernel_initializer=init.next(),
                               name=name)(x)  # fmt: skip


def batch_norm(x, name: str):
    # PyTorch's defaults, which the benchmark's recipes were tuned with. Fused: Keras'
    # BatchNormalization trains unfused on TensorFlow, a fifth of thin_cnn's step.
    return FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)


def logits_head(x, num_classes: int, init: Initializers, dropout: float = 0.0):
    """Global average pooling, optional dropout, then the linear logits layer ``logits``."""
    x = keras.layers.GlobalAveragePooling2D(data_format=DATA_FORMAT, name="gap")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout_fc")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=init.next(), name="logits")(x)
