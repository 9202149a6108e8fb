"""Every architecture by name: the paper's maxout nets and the distillation benchmark's zoo.

:func:`build` turns a name into a Functional Keras model whose output is the logits (the
Distiller applies softmax and the temperature). The paper's nets know their hint and guided
layers (:func:`paper_pair`); the zoo's document their stage outputs as hint points.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import keras

from fitnets_tf.errors import ConfigError
from fitnets_tf.maxout import TIES
from fitnets_tf.models.cifar_resnet import cifar_resnet, wide_resnet
from fitnets_tf.models.cifar_vgg import VGG_STAGES, cifar_vgg
from fitnets_tf.models.maxout_net import build_maxout_net
from fitnets_tf.models.paper import ARCHITECTURES
from fitnets_tf.models.plain_cnn import PLAIN_CNNS, plain_cnn
from fitnets_tf.models.specs import ArchSpec
from fitnets_tf.models.zoo_layers import Initializers

# Modern BN nets, name -> builder(name, input_shape, num_classes, init, dropout=...): the CRD /
# RepDistiller CIFAR-100 benchmark (hint points: their stage outputs, ``stage1``...) and the
# default experiment's plain CNNs.
ZOO = {
    **{f"resnet{d}": functools.partial(cifar_resnet, depth=d, widths=(16, 16, 32, 64))
       for d in (20, 32, 44, 56, 110)},
    "resnet8x4": functools.partial(cifar_resnet, depth=8, widths=(32, 64, 128, 256)),
    "resnet32x4": functools.partial(cifar_resnet, depth=32, widths=(32, 64, 128, 256)),
    **{f"wrn_{d}_{w}": functools.partial(wide_resnet, depth=d, widen=w)
       for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{name: cifar_vgg for name in VGG_STAGES},
    # The default experiment's pair (Fashion-MNIST): hint points are its ``conv{i}_relu``.
    **{name: plain_cnn for name in PLAIN_CNNS},
}  # fmt: skip


class PaperPair(NamedTuple):
    """A student's teacher in the paper and the layer names to tap for hint training."""

    teacher: str
    hint_layer: str
    guided_layer: str


def names() -> tuple[str, ...]:
    """Names of the registered architectures, sorted."""
    return tuple(sorted((*ARCHITECTURES, *ZOO)))


def get_spec(name: str) -> ArchSpec:
    """The paper's ``ArchSpec`` of ``name``; a :class:`ConfigError` listing the names otherwise."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        if name in ZOO:
            raise ConfigError(
                f"{name!r} is a benchmark net, not one of the paper's: it has no paper spec, "
                "hint layer or guided layer (name its stage outputs, e.g. 'stage2')."
            ) from None
        raise ConfigError(
            f"Unknown architecture. Expected one of {', '.join(names())}. Received: name={name!r}"
        ) from None


def paper_layer_name(name: str, layer: int) -> str:
    """Name of the Keras layer whose output is the paper's layer `layer` (1-based) of `name`."""
    convs = get_spec(name).convs
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= len(convs):
        raise ConfigError(
            f"`layer` must be a conv layer index in [1, {len(convs)}] for {name!r}. Received: layer={layer!r}"
        )
    return f"pool{layer}" if convs[layer - 1].pool else f"conv{layer}"


def hint_layer_name(name: str) -> str:
    """Layer name of the teacher `name`'s hint layer (its output is the hint)."""
    spec = get_spec(name)
    if spec.hint_layer is None:
        raise ConfigError(f"{name!r} has no hint layer: it is not a teacher in the paper.")
    return paper_layer_name(name, spec.hint_layer)


def guided_layer_name(name: str) -> str:
    """Layer name of the student `name`'s guided layer (its output feeds the regressor)."""
    spec = get_spec(name)
    if spec.guided_layer is None:
        raise ConfigError(f"{name!r} has no guided layer: it is not a student in the paper.")
    return paper_layer_name(name, spec.guided_layer)


def paper_pair(student: str) -> PaperPair:
    """The paper's teacher for `student`, with the hint and guided layer names.

    The SVHN student of the paper is `fitnet4`, which is registered with its CIFAR teacher;
    pair it with ``svhn_teacher`` through `hint_layer_name` / `guided_layer_name` directly.
    """
    spec = get_spec(student)
    if spec.teacher is None:
        raise ConfigError(
            f"{student!r} is not a student in the paper. Received: student={student!r}"
        )
    return PaperPair(spec.teacher, hint_layer_name(spec.teacher), guided_layer_name(student))


def _check_rate(arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"`{arg}` must be a number in [0, 1). Received: {arg}={value!r}")
    return float(value)


def _check_shape(input_shape, num_classes) -> None:
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise ConfigError(
            "`input_shape` must be three positive ints (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}"
        )


def build(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    kernel_initializer=None,
    seed: int | None = None,
    max_norm: bool = True,
    dropout: float | None = None,
    input_dropout: float | None = None,
    maxout_ties: str = TIES[0],
) -> keras.Model:
    """Builds the registered architecture `name` as a Functional model that outputs logits.

    Args:
        name: one of :func:`names`.
        input_shape: ``(height, width, channels)``, e.g. ``(32, 32, 3)`` for CIFAR.
        num_classes: number of logits.
        kernel_initializer: initializer for every kernel; ``None`` uses the paper's
            U(-0.005, 0.005) for the paper's nets, He-normal (fan-out) for the zoo's. Deep thin
            nets may not start learning from the paper's tiny init in a short run:
            ``"he_uniform"`` or ``"glorot_uniform"`` are the usual alternatives.
        seed: seeds the initializers (layer ``j`` uses ``seed + j`` so that kernels differ;
            for the paper's nets, only their own U(-0.005, 0.005)).
        max_norm: apply the original code's max-norm constraints (conv kernels, FC columns,
            softmax columns) of the paper's nets; ``False`` trains unconstrained. The zoo's nets
            have none.
        dropout: drop rate after each conv block and the FC layer; ``None`` uses the spec's
            (0.5 for teachers, 0 for students). The zoo's nets drop before their logits only.
        input_dropout: drop rate on the input; ``None`` uses the spec's (0.2 for teachers).
        maxout_ties: the paper's nets' maxout gradient at tied pieces, ``"share"`` or ``"one"``
            (:data:`fitnets_tf.maxout.TIES`); the zoo's nets have no maxout.

    Returns:
        A `keras.Model` named `name` mapping ``(batch, *input_shape)`` to ``(batch, num_classes)``.
    """
    _check_shape(input_shape, num_classes)
    if name in ZOO:
        rate = _check_rate("dropout", dropout or 0.0)
        if input_dropout:
            raise ConfigError(f"{name!r} has no input dropout (a paper-net option): drop "
                              f"--teacher_input_dropout. Received: {input_dropout!r}")  # fmt: skip
        return ZOO[name](name, input_shape=input_shape, num_classes=num_classes,
                         init=Initializers(kernel_initializer, seed), dropout=rate)  # fmt: skip
    spec = get_spec(name)
    rate = _check_rate("dropout", spec.dropout if dropout is None else dropout)
    in_rate = _check_rate(
        "input_dropout", spec.input_dropout if input_dropout is None else input_dropout
    )
    return build_maxout_net(spec, name, input_shape, num_classes,
                            kernel_initializer=kernel_initializer, seed=seed, max_norm=max_norm,
                            rate=rate, input_rate=in_rate, ties=maxout_ties)  # fmt: skip
