"""The CIFAR ResNets and Wide ResNets of the knowledge-distillation benchmark (CRD's CIFAR-100).

He et al.'s CIFAR ResNet (basic blocks, three stages; ``resnet8x4``/``resnet32x4`` are 4× wider)
and Zagoruyko & Komodakis' pre-activation Wide ResNet, written for Keras as the
CRD / RepDistiller benchmark defines them, so that parameter counts match its table: 3×3 convs
without bias, a 1×1 conv + BN shortcut where the shape changes, BN after every conv (before it
in the WRN), global average pooling, one linear layer of logits.

Hint points: the output of each stage is a layer named ``stage1``, ``stage2``, ``stage3``
(the benchmark's FitNet hint is ``stage2`` of the teacher guiding ``stage2`` of the student).
"""

from __future__ import annotations

import keras

from fitnets_tf.models.zoo_layers import Initializers, batch_norm, conv, logits_head


def _basic_block(x, filters: int, stride: int, init: Initializers, name: str):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv(x, filters, 1, stride, init, f"{name}_shortcut_conv")
        shortcut = batch_norm(shortcut, f"{name}_shortcut_bn")
    h = conv(x, filters, 3, stride, init, f"{name}_conv1")
    h = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(h, f"{name}_bn1"))
    h = batch_norm(conv(h, filters, 3, 1, init, f"{name}_conv2"), f"{name}_bn2")
    return keras.layers.Add(name=f"{name}_add")([h, shortcut])


def cifar_resnet(name: str, depth: int, widths: tuple[int, int, int, int], input_shape,
                 num_classes: int, init: Initializers, **head) -> keras.Model:  # fmt: skip
    """A CIFAR ResNet of ``depth`` = 6n + 2 layers; ``widths``: the stem's, then each stage's."""
    blocks = (depth - 2) // 6
    inputs = keras.Input(tuple(input_shape), name="input")
    x = conv(inputs, widths[0], 3, 1, init, "stem_conv")
    x = keras.layers.ReLU(name="stem_relu")(batch_norm(x, "stem_bn"))
    for stage, filters in enumerate(widths[1:], start=1):
        for b in range(1, blocks + 1):
            stride = 2 if stage > 1 and b == 1 else 1
            x = _basic_block(x, filters, stride, init, f"stage{stage}_block{b}")
            last = b == blocks
            x = keras.layers.ReLU(name=f"stage{stage}" if last else f"stage{stage}_block{b}_out")(x)
    return keras.Model(inputs, logits_head(x, num_classes, init, **head), name=name)


def _wide_block(x, filters: int, stride: int, init: Initializers, name: str):
    """Pre-activation: BN-ReLU-conv-BN-ReLU-conv plus the shortcut (from the activated input
    when the shape changes, as in the original)."""
    activated = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(x, f"{name}_bn1"))
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv(activated, filters, 1, stride, init, f"{name}_shortcut_conv")
    h = conv(activated, filters, 3, stride, init, f"{name}_conv1")
    h = keras.layers.ReLU(name=f"{name}_relu2")(batch_norm(h, f"{name}_bn2"))
    h = conv(h, filters, 3, 1, init, f"{name}_conv2")
    return keras.layers.Add(name=f"{name}_add")([h, shortcut])


def wide_resnet(name: str, depth: int, widen: int, input_shape, num_classes: int,
                init: Initializers, **head) -> keras.Model:  # fmt: skip
    """WRN-``depth``-``widen``: depth = 6n + 4, stages of 16·widen, 32·widen, 64·widen."""
    blocks = (depth - 4) // 6
    inputs = keras.Input(tuple(input_shape), name="input")
    x = conv(inputs, 16, 3, 1, init, "stem_conv")
    for stage, filters in enumerate((16 * widen, 32 * widen, 64 * widen), start=1):
        for b in range(1, blocks + 1):
            stride = 2 if stage > 1 and b == 1 else 1
            x = _wide_block(x, filters, stride, init, f"stage{stage}_block{b}")
        x = keras.layers.Identity(name=f"stage{stage}")(x)
    x = keras.layers.ReLU(name="final_relu")(batch_norm(x, "final_bn"))
    return keras.Model(inputs, logits_head(x, num_classes, init, **head), name=name)
