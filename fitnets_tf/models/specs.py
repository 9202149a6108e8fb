"""The paper's maxout architectures as data: conv layers, pooling, the FC layer, the hints."""

from __future__ import annotations

import dataclasses
from typing import Literal

from fitnets_tf.errors import ConfigError

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
                raise ConfigError(
                    f"`{field}` must be a conv layer index in [1, {len(self.convs)}]. "
                    f"Received: {field}={value!r}"
                )

    @property
    def depth(self) -> int:
        """Number of layers as the paper counts them: convs, FC and softmax."""
        return len(self.convs) + (self.fc_units is not None) + 1
