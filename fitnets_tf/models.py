"""The paper's teachers and FitNets as data, one generic builder, and Table 5's cost counts.

Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015 (arXiv:1412.6550).

Every architecture is an `ArchSpec` in `ARCHITECTURES`; `build` turns any spec into a Functional
Keras model whose output is the logits (the Distiller applies softmax and the temperature).

Layer names are stable so that hint training can tap them without touching `call`:
``conv{i}`` (`MaxoutConv2D`), ``pool{i}`` (pooling after conv ``i``), ``flatten``, ``fc``
(`MaxoutDense`), ``dropout_input`` / ``dropout_{i}`` / ``dropout_fc`` and ``logits``.
The paper's layer ``i`` is pylearn2's ``MaxoutConvC01B``, which pools inside the layer, so its
output is ``pool{i}`` when conv ``i`` is pooled and ``conv{i}`` otherwise (`paper_layer_name`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, NamedTuple

import keras

from fitnets_tf.layers import CeilMaxPooling2D, MaxoutConv2D, MaxoutDense

# The paper's initialisation, U(-0.005, 0.005) (pylearn2's ``irange: .005``), for every weight.
PAPER_INIT_RANGE = 0.005

Pool = tuple[int, int] | Literal["global"] | None


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One maxout convolutional layer and the pooling that follows it.

    Attributes:
        filters: output channels after the maxout.
        kernel_size: square kernel size.
        padding: ``"same"`` or an explicit zero padding on every side (pylearn2's ``pad``).
        pieces: linear pieces per maxout unit.
        pool: ``(size, stride)`` for square max pooling with cuda-convnet's ceil rounding,
            ``"global"`` for a max over the whole map, or ``None``.
        max_norm: max L2 norm of each kernel (pylearn2's ``max_kernel_norm``).
    """

    filters: int
    kernel_size: int = 3
    padding: int | str = "same"
    pieces: int = 2
    pool: Pool = None
    max_norm: float = 0.9


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """A maxout net of the paper: maxout convs, an optional maxout FC layer, then logits.

    Attributes:
        convs: the conv layers, in order; paper layer ``i`` is ``convs[i - 1]``.
        fc_units: maxout units of the FC layer, or ``None`` for no FC layer (MNIST nets).
        fc_pieces: pieces per FC maxout unit.
        fc_max_norm: max L2 norm of each FC weight column (pylearn2's ``max_col_norm``).
        logits_max_norm: max L2 norm of each softmax weight column.
        input_dropout: drop rate on the input (the teachers keep 0.8 of the inputs).
        dropout: drop rate after every conv block and after the FC layer.
        hint_layer: paper layer (1-based) that provides the hint when this net is a teacher.
        guided_layer: paper layer (1-based) that is guided when this net is a student.
        teacher: the registered teacher that guides this net in the paper.
        description: where the net comes from.
        paper_params: parameter count given by the paper, if any.
        paper_mults: multiplication count given by the paper, if any.
    """

    convs: tuple[ConvSpec, ...]
    fc_units: int | None = 500
    fc_pieces: int = 5
    fc_max_norm: float = 1.9
    logits_max_norm: float = 1.9365
    input_dropout: float = 0.0
    dropout: float = 0.0
    hint_layer: int | None = None
    guided_layer: int | None = None
    teacher: str | None = None
    description: str = ""
    paper_params: float | None = None
    paper_mults: float | None = None

    def __post_init__(self):
        for field in ("hint_layer", "guided_layer"):
            value = getattr(self, field)
            if value is not None and not 1 <= value <= len(self.convs):
                raise ValueError(
                    f"`{field}` must be a conv layer index in [1, {len(self.convs)}]. "
                    f"Received: {field}={value!r}"
                )

    @property
    def depth(self) -> int:
        """Number of layers as the paper counts them: convs, FC and softmax."""
        return len(self.convs) + (self.fc_units is not None) + 1


def _cifar_fitnet(
    blocks: tuple[tuple[int, ...], ...],
    guided_layer: int,
    description: str,
    teacher: str = "cifar_teacher",
    **paper,
) -> ArchSpec:
    """A CIFAR FitNet: 3x3 "same" maxout convs in blocks, 2x2 pools, a global pool at the end.

    The original pools the last 8x8 map with an 8x8 window, i.e. a max over the whole map; a
    global max pool is the same on 32x32 inputs and stays valid for other input sizes.
    """
    convs = []
    for b, block in enumerate(blocks):
        last_pool = "global" if b == len(blocks) - 1 else (2, 2)
        convs += [
            ConvSpec(f, pool=last_pool if j == len(block) - 1 else None)
            for j, f in enumerate(block)
        ]
    return ArchSpec(
        convs=tuple(convs),
        guided_layer=guided_layer,
        teacher=teacher,
        description=description,
        **paper,
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    # CIFAR teacher: pylearn2's maxout cifar10.yaml. The 5x5x192 -> 500x5 FC layer alone holds
    # 12M weights (16.2M in all, not the paper's ~9M); the multiplications, 732M, match ~725M.
    "cifar_teacher": ArchSpec(
        convs=(
            ConvSpec(96, 8, 4, pool=(4, 2), max_norm=0.9),
            ConvSpec(192, 8, 3, pool=(4, 2), max_norm=1.9365),
            ConvSpec(192, 5, 3, pool=(2, 2), max_norm=1.9365),
        ),
        input_dropout=0.2,
        dropout=0.5,
        hint_layer=2,
        description="CIFAR teacher: Goodfellow et al.'s maxout net (cuda-convnet ceil pooling).",
        paper_params=9e6,
        paper_mults=725e6,
    ),
    "fitnet1": _cifar_fitnet(
        ((16, 16, 16), (32, 32, 32), (48, 48, 64)),
        6,
        "FitNet 1, 11 layers.",
        paper_params=250e3,
        paper_mults=30e6,
    ),
    "fitnet2": _cifar_fitnet(
        ((16, 32, 32), (48, 64, 80), (96, 96, 128)),
        6,
        "FitNet 2, 11 layers.",
        paper_params=862e3,
        paper_mults=108e6,
    ),
    "fitnet3": _cifar_fitnet(
        ((32, 48, 64, 64), (80, 80, 80, 80), (128, 128, 128)),
        8,
        "FitNet 3, 13 layers (the paper's 392M does not recount; 324M does).",
        paper_params=1.6e6,
        paper_mults=392e6,
    ),
    "fitnet4": _cifar_fitnet(
        ((32, 32, 32, 48, 48), (80,) * 6, (128,) * 6),
        11,
        "FitNet 4, 19 layers; also the paper's SVHN student.",
        paper_params=2.5e6,
        paper_mults=382e6,
    ),
    # MNIST teacher: pylearn2's maxout mnist.yaml, except 2 pieces (not 4) in conv3: the paper's
    # ~361K parameters match 2 pieces (361.1K); 4 pieces would give 418.7K.
    "mnist_teacher": ArchSpec(
        convs=(
            ConvSpec(48, 8, 0, pool=(4, 2), max_norm=0.9),
            ConvSpec(48, 8, 3, pool=(4, 2), max_norm=1.9365),
            ConvSpec(24, 5, 3, pool=(2, 2), max_norm=1.9365),
        ),
        fc_units=None,
        input_dropout=0.2,
        dropout=0.5,
        hint_layer=2,
        description="MNIST teacher: maxout conv 48-48-24, no FC layer.",
        paper_params=361e3,
    ),
    # MNIST FitNet: the original MNIST_fitnet_valid.yaml, including its 4-piece last two layers.
    "mnist_fitnet": ArchSpec(
        convs=(
            ConvSpec(16, 5, 0, max_norm=0.9),
            ConvSpec(16, 3, 0, pool=(4, 2), max_norm=0.9),
            ConvSpec(16, 5, 3, max_norm=1.9365),
            ConvSpec(16, 3, 0, pool=(4, 2), max_norm=1.9365),
            ConvSpec(12, 3, 3, pieces=4, max_norm=1.9365),
            ConvSpec(12, 3, 0, pieces=4, pool=(2, 2), max_norm=1.9365),
        ),
        fc_units=None,
        guided_layer=4,
        teacher="mnist_teacher",
        description="MNIST FitNet: 6 maxout convs 16-16-16-16-12-12.",
        paper_params=30e3,
    ),
    # SVHN teacher: pylearn2's maxout svhn.yaml (pads 4, 3, 3, ceil pooling: 6x6 last map). It
    # has 10.5M parameters, not the paper's ~4.9M, which no square last map gives (4x4: 5.3M),
    # so the original geometry is kept.
    "svhn_teacher": ArchSpec(
        convs=(
            ConvSpec(64, 5, 4, pool=(3, 2), max_norm=0.9),
            ConvSpec(128, 5, 3, pool=(3, 2), max_norm=1.9365),
            ConvSpec(128, 5, 3, pool=(3, 2), max_norm=1.9365),
        ),
        fc_units=400,
        input_dropout=0.2,
        dropout=0.5,
        hint_layer=2,
        description="SVHN teacher: maxout conv 64-128-128 + maxout FC 400x5 (student: fitnet4).",
        paper_params=4.9e6,
    ),
}

# Table 6's depth experiment: (layers, budget in M multiplications) -> (blocks, guided layer).
# Registered as depth{layers}_{budget}m, e.g. depth11_30m.
_DEPTH_NETS = {
    (5, 30): (((64,), (64,), (64,)), 2),
    (7, 30): (((16, 32), (32, 64), (64,)), 4),
    (9, 30): (((16, 32), (32, 32, 32), (48, 64)), 5),
    (11, 30): (((16, 16, 16), (32, 32, 32), (48, 48, 64)), 7),
    (5, 107): (((128,), (128,), (128,)), 2),
    (7, 107): (((32, 64), (80, 80), (128,)), 4),
    (9, 107): (((32, 32), (64, 80, 80), (96, 128)), 5),
    (11, 107): (((16, 32, 32), (48, 64, 80), (96, 96, 128)), 7),
}
ARCHITECTURES.update(
    {
        f"depth{layers}_{budget}m": _cifar_fitnet(
            blocks,
            guided,
            f"Table 6 depth experiment: {layers} layers, ~{budget}M multiplications.",
            paper_mults=budget * 1e6,
        )
        for (layers, budget), (blocks, guided) in _DEPTH_NETS.items()
    }
)
# The ~30M nets at half width, for 28x28x1 inputs: each ~5-6M multiplications, the budget of
# mnist_fitnet, so that a CPU trains the depth experiment on Fashion-MNIST in minutes
# (bench/paper_claims.py). Guided by mnist_teacher. Registered as mnist_depth{layers}.
ARCHITECTURES.update(
    {
        f"mnist_depth{layers}": _cifar_fitnet(
            tuple(tuple(width // 2 for width in block) for block in blocks),
            guided,
            f"Table 6's {layers}-layer ~30M net at half width, for 28x28 inputs.",
            teacher="mnist_teacher",
        )
        for (layers, budget), (blocks, guided) in _DEPTH_NETS.items()
        if budget == 30
    }
)


class PaperPair(NamedTuple):
    """A student's teacher in the paper and the layer names to tap for hint training."""

    teacher: str
    hint_layer: str
    guided_layer: str


def names() -> tuple[str, ...]:
    """Names of the registered architectures, sorted."""
    return tuple(sorted(ARCHITECTURES))


def get_spec(name: str) -> ArchSpec:
    """The `ArchSpec` registered under `name`; ValueError listing the valid names otherwise."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown architecture. Expected one of {', '.join(names())}. Received: name={name!r}"
        ) from None


def paper_layer_name(name: str, layer: int) -> str:
    """Name of the Keras layer whose output is the paper's layer `layer` (1-based) of `name`."""
    convs = get_spec(name).convs
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= len(convs):
        raise ValueError(
            f"`layer` must be a conv layer index in [1, {len(convs)}] for {name!r}. Received: layer={layer!r}"
        )
    return f"pool{layer}" if convs[layer - 1].pool else f"conv{layer}"


def hint_layer_name(name: str) -> str:
    """Layer name of the teacher `name`'s hint layer (its output is the hint)."""
    spec = get_spec(name)
    if spec.hint_layer is None:
        raise ValueError(f"{name!r} has no hint layer: it is not a teacher in the paper.")
    return paper_layer_name(name, spec.hint_layer)


def guided_layer_name(name: str) -> str:
    """Layer name of the student `name`'s guided layer (its output feeds the regressor)."""
    spec = get_spec(name)
    if spec.guided_layer is None:
        raise ValueError(f"{name!r} has no guided layer: it is not a student in the paper.")
    return paper_layer_name(name, spec.guided_layer)


def paper_pair(student: str) -> PaperPair:
    """The paper's teacher for `student`, with the hint and guided layer names.

    The SVHN student of the paper is `fitnet4`, which is registered with its CIFAR teacher;
    pair it with ``svhn_teacher`` through `hint_layer_name` / `guided_layer_name` directly.
    """
    spec = get_spec(student)
    if spec.teacher is None:
        raise ValueError(
            f"{student!r} is not a student in the paper. Received: student={student!r}"
        )
    return PaperPair(spec.teacher, hint_layer_name(spec.teacher), guided_layer_name(student))


def _check_rate(arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{arg}` must be a number in [0, 1). Received: {arg}={value!r}")
    return float(value)


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
) -> keras.Model:
    """Builds the registered architecture `name` as a Functional model that outputs logits.

    Args:
        name: a key of `ARCHITECTURES`.
        input_shape: ``(height, width, channels)``, e.g. ``(32, 32, 3)`` for CIFAR.
        num_classes: number of logits.
        kernel_initializer: initializer for every kernel; ``None`` uses the paper's
            U(-0.005, 0.005). Deep thin nets may not start learning from that tiny init in a
            short run: ``"he_uniform"`` or ``"glorot_uniform"`` are the usual alternatives.
        seed: seeds the paper's initializer (layer ``j`` uses ``seed + j`` so that kernels
            differ); ignored when `kernel_initializer` is given.
        max_norm: apply the original code's max-norm constraints (conv kernels, FC columns,
            softmax columns); ``False`` trains unconstrained.
        dropout: drop rate after each conv block and the FC layer; ``None`` uses the spec's
            (0.5 for teachers, 0 for students).
        input_dropout: drop rate on the input; ``None`` uses the spec's (0.2 for teachers).

    Returns:
        A `keras.Model` named `name` mapping ``(batch, *input_shape)`` to ``(batch, num_classes)``.
    """
    spec = get_spec(name)
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise ValueError(
            "`input_shape` must be three positive ints (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}"
        )
    rate = _check_rate("dropout", spec.dropout if dropout is None else dropout)
    in_rate = _check_rate(
        "input_dropout", spec.input_dropout if input_dropout is None else input_dropout
    )

    def init(j: int):
        if kernel_initializer is None:
            # A seeded Keras initializer repeats its values on every call: offset per layer.
            layer_seed = None if seed is None else seed + j
            return keras.initializers.RandomUniform(
                -PAPER_INIT_RANGE, PAPER_INIT_RANGE, seed=layer_seed
            )
        return keras.initializers.get(kernel_initializer)

    def norm(value: float) -> float | None:
        return value if max_norm else None

    inputs = keras.Input(tuple(input_shape), name="input")
    x = keras.layers.Dropout(in_rate, name="dropout_input")(inputs) if in_rate else inputs
    for i, conv in enumerate(spec.convs, start=1):
        x = MaxoutConv2D(
            conv.filters,
            conv.kernel_size,
            pieces=conv.pieces,
            padding=conv.padding,
            max_norm=norm(conv.max_norm),
            kernel_initializer=init(i),
            name=f"conv{i}",
        )(x)
        if any(d < 1 for d in x.shape[1:3]):
            raise ValueError(
                f"`input_shape` is too small for {name!r}: conv{i} output is {x.shape[1:3]}. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if conv.pool == "global":
            x = keras.layers.GlobalMaxPooling2D(name=f"pool{i}")(x)
        elif conv.pool is not None:
            # Every net of the original pools with cuda-convnet (ceil rounding); where the
            # window tiles the map exactly this is plain max pooling.
            x = CeilMaxPooling2D(conv.pool[0], conv.pool[1], name=f"pool{i}")(x)
        if rate:
            x = keras.layers.Dropout(rate, name=f"dropout_{i}")(x)
    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="flatten")(x)
    if spec.fc_units is not None:
        x = MaxoutDense(
            spec.fc_units,
            pieces=spec.fc_pieces,
            max_norm=norm(spec.fc_max_norm),
            kernel_initializer=init(len(spec.convs) + 1),
            name="fc",
        )(x)
        if rate:
            x = keras.layers.Dropout(rate, name="dropout_fc")(x)
    constraint = keras.constraints.MaxNorm(spec.logits_max_norm, axis=0) if max_norm else None
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=init(len(spec.convs) + 2),
        kernel_constraint=constraint,
        name="logits",
    )(x)
    return keras.Model(inputs, logits, name=name)


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
        nodes = getattr(layer, "_inbound_nodes", [])
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
