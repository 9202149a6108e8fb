"""Plain BN-ReLU CNNs for 28×28 images: the default experiment's wide teacher and thin student.

``wide_cnn`` is a strong small-image teacher (Fashion-MNIST ≈ 94% in 15 epochs): two blocks of
two 3×3 convs (48, then 96 filters), each block max-pooled, then a 512-unit fully connected
layer and the logits, with dropout before each of the last two. 2.56M parameters, 43.4M
multiplications per 28×28 image; most parameters are in the FC layer, most multiplications in
the convs.

``thin_cnn`` is its student: one 3×3 conv per block (24, 48, 96 filters), each max-pooled,
then the logits straight from the flattened 3×3×96 map. 61K parameters (42× fewer), 4.2M
multiplications (10× fewer). A flattened head rather than global average pooling: on
Fashion-MNIST the position of a feature (collar, heel) carries the class, and a GAP head of
the same size tops out about a point lower.

Every conv is bias-free, followed by batch norm (Keras' layer computed by the fused kernel:
:mod:`fitnets_tf.batch_norm`) and ReLU, named ``conv{i}``, ``conv{i}_bn``, ``conv{i}_relu``.
Hint points: any ``conv{i}_relu``; the default experiment guides the student's ``conv2_relu``
(14×14×48) by the teacher's ``conv3_relu`` (14×14×96), the first layers of the two nets at the
same resolution past the stem.
"""

from __future__ import annotations

import keras

from fitnets_tf.layers import DATA_FORMAT
from fitnets_tf.models.zoo_layers import Initializers, batch_norm, conv

# name -> (filters of the convs of each max-pooled block, units of the FC layer or None).
PLAIN_CNNS = {
    "wide_cnn": (((48, 48), (96, 96)), 512),
    "thin_cnn": (((24,), (48,), (96,)), None),
}


def plain_cnn(name: str, input_shape, num_classes: int, init: Initializers,
              dropout: float = 0.0) -> keras.Model:  # fmt: skip
    """Builds ``PLAIN_CNNS[name]``; ``dropout`` precedes the FC layer and the logits."""
    blocks, fc_units = PLAIN_CNNS[name]
    inputs = keras.Input(tuple(input_shape), name="input")
    x, i = inputs, 0
    for b, filters in enumerate(blocks, start=1):
        for f in filters:
            i += 1
            x = conv(x, f, 3, 1, init, f"conv{i}")
            x = batch_norm(x, f"conv{i}_bn")
            x = keras.layers.ReLU(name=f"conv{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, data_format=DATA_FORMAT, name=f"pool{b}")(x)
    x = keras.layers.Flatten(data_format=DATA_FORMAT, name="flatten")(x)
    if fc_units:
        x = _dropout(x, dropout, "dropout_fc")
        x = keras.layers.Dense(fc_units, use_bias=False, kernel_initializer=init.next(),
                               name="fc")(x)  # fmt: skip
        x = batch_norm(x, "fc_bn")
        x = keras.layers.ReLU(name="fc_relu")(x)
    x = _dropout(x, dropout, "dropout_logits")
    logits = keras.layers.Dense(num_classes, kernel_initializer=init.next(), name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def _dropout(x, rate: float, name: str):
    return keras.layers.Dropout(rate, name=name)(x) if rate else x
