"""The CIFAR VGGs of the knowledge-distillation benchmark (CRD's CIFAR-100): ``vgg8``, ``vgg13``.

Five stages of 3×3 convs (with bias) + BN + ReLU, 2×2 max pooling after the first three, the
fourth pooled only on 64×64 inputs (as the benchmark defines them: a 32×32 image reaches the
last stage at 4×4), then global average pooling and one linear layer of logits.

Hint points: the output of each stage is a layer named ``stage1`` ... ``stage5`` (the
benchmark's FitNet hint is ``stage3``, the third stage's output).
"""

from __future__ import annotations

import keras

from fitnets_tf.layers import DATA_FORMAT
from fitnets_tf.models.zoo_layers import Initializers, batch_norm, conv, logits_head

# Filters of each conv, per stage.
VGG_STAGES = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def cifar_vgg(name: str, input_shape, num_classes: int, init: Initializers, **head) -> keras.Model:
    inputs = keras.Input(tuple(input_shape), name="input")
    x = inputs
    for stage, convs in enumerate(VGG_STAGES[name], start=1):
        if stage in (2, 3, 4) or (stage == 5 and input_shape[0] >= 64):
            x = keras.layers.MaxPooling2D(2, data_format=DATA_FORMAT, name=f"pool{stage - 1}")(x)
        for c, filters in enumerate(convs, start=1):
            x = conv(x, filters, 3, 1, init, f"stage{stage}_conv{c}", use_bias=True)
            x = batch_norm(x, f"stage{stage}_bn{c}")
            last = c == len(convs)
            x = keras.layers.ReLU(name=f"stage{stage}" if last else f"stage{stage}_relu{c}")(x)
    return keras.Model(inputs, logits_head(x, num_classes, init, **head), name=name)
