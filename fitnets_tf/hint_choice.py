"""Choosing hint/guided pairs: the paper's rule, and the layers a user can choose from.

The paper (section 3.1) takes "the middle layer of the teacher" as the hint and "the middle
layer of the student" as the guided layer. :func:`auto_pair` applies that rule to any pair of
Functional models; :func:`describe_layers` prints what a user needs to choose a pair by hand.
"""

from __future__ import annotations

import dataclasses

import keras

from fitnets_tf import regressor as regressor_lib
from fitnets_tf.errors import HintShapeError
from fitnets_tf.hint_path import check_functional, make_regressors, pair_name, valid_names
from fitnets_tf.layers import MaxoutConv2D, MaxoutDense
from fitnets_tf.models.nesting import layer_output, own_nodes
from fitnets_tf.reporting.tables import format_table


@dataclasses.dataclass(frozen=True)
class AutoPair:
    """The hint/guided pair :func:`auto_pair` chose, and why (printed, and kept with the run)."""

    hint_layer: str
    guided_layer: str
    reason: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Layers that start a new block of the paper's kind: a "layer" of the paper is one of these
# with whatever follows it (pooling, normalisation, activation) up to the next one.
_WEIGHT_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                  keras.layers.Dense, MaxoutConv2D, MaxoutDense)  # fmt: skip
# Layers a block's output passes through unchanged or only framed (MobileNet pads before each
# strided depthwise convolution): the hint is the map before them.
_PASS_THROUGH = (keras.layers.Dropout, keras.layers.ZeroPadding2D)


def feature_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The outputs of the model's blocks that are feature maps ``(N, H, W, C)``, input to output.

    A block ends where every path from the input passes (a residual block's sum, not a layer
    inside it) just before the next conv or dense layer; dropout and zero padding are skipped
    (a hint is taken before them). For the paper's maxout nets these are its layers:
    ``pool{i}`` or ``conv{i}``.
    """
    check_functional(model, "model")
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    crossing = _crossing_edges(model, order)
    out, last = [], None
    for i, layer in enumerate(model.layers):
        starts_block = isinstance(layer, _WEIGHT_LAYERS)
        if starts_block and last is not None:
            out.append(last)
            last = None
        cut = not any(u < i < v for u, v in crossing)
        if cut and _is_feature_map(model, layer) and not isinstance(layer, _PASS_THROUGH):
            last = layer if not isinstance(layer, keras.layers.InputLayer) else None
    if last is not None:
        out.append(last)
    return out


def _crossing_edges(model: keras.Model, order: dict) -> list[tuple[int, int]]:
    """Every edge (producer index, consumer index) of the layer graph."""
    edges = []
    for layer in model.layers:
        for node in own_nodes(model, layer):
            for parent in node.parent_nodes:
                if id(parent.operation) in order:
                    edges.append((order[id(parent.operation)], order[id(layer)]))
    return edges


def _is_feature_map(model: keras.Model, layer) -> bool:
    shape = _output_shape(model, layer)
    return shape is not None and len(shape) == 3 and all(d is not None for d in shape)


def auto_pair(teacher: keras.Model, student: keras.Model) -> AutoPair:
    """The paper's rule: the middle of the teacher guides the middle of the student.

    The hint is the teacher's middle feature layer (by depth); the guided layer is the
    student's feature layer nearest its own middle (the deeper one on a tie) among those the
    convolutional regressor can map onto the hint (a guided map at least as large as the
    hint's). Feature layers are block outputs (:func:`feature_layers`). On the paper's MNIST
    pair this gives its own pair (pool2 → pool4); on CIFAR FitNet 1, layer 5 where the paper
    guides layer 6 (of 11 layers, FC and softmax included).

    Raises:
        HintShapeError: no student layer can be mapped onto the hint; names the hint, its shape
            and the student's layers with theirs.
    """
    hints, guided = feature_layers(teacher), feature_layers(student)
    if not hints or not guided:
        raise HintShapeError(
            "hints='auto' needs feature-map layers (N, H, W, C) in both models; "
            f"{'the teacher' if not hints else 'the student'} has none. "
            + valid_names(teacher, student)
        )
    hint = hints[(len(hints) - 1) // 2]
    hint_shape = _output_shape(teacher, hint)
    index = _nearest_guided(hint_shape, guided, student)
    if index is not None:
        shape = _output_shape(student, guided[index])
        reason = (
            f"the paper's rule (the middle of the teacher guides the middle of the student): "
            f"'{hint.name}' {hint_shape} is feature layer {hints.index(hint) + 1} of "
            f"{len(hints)} of '{teacher.name}'; '{guided[index].name}' {shape} is feature "
            f"layer {index + 1} of {len(guided)} of '{student.name}', the nearest to its "
            "middle that the convolutional regressor maps onto the hint"
        )
        return AutoPair(hint.name, guided[index].name, reason)
    shapes = ", ".join(f"{layer.name} {_output_shape(student, layer)}" for layer in guided)
    raise HintShapeError(
        f"hints='auto': no student layer can be mapped onto the teacher's middle layer "
        f"'{hint.name}' {hint_shape} (a guided map must be at least as large). Student feature "
        f"layers: {shapes}. {_suggestion(teacher, student, hints, guided)}"
    )


def _nearest_guided(hint_shape, guided: list, student: keras.Model) -> int | None:
    """The index of the guided layer nearest the student's middle (the deeper on a tie) that
    the convolutional regressor maps onto ``hint_shape``, or None."""
    middle = (len(guided) - 1) / 2
    for index in sorted(range(len(guided)), key=lambda i: (abs(i - middle), -i)):
        shape = _output_shape(student, guided[index])
        if all(k >= 1 for k in regressor_lib.kernel_size(shape, hint_shape)):
            return index
    return None


def _suggestion(teacher, student, hints: list, guided: list) -> str:
    """How to name a pair instead, in the Python API's words and the command line's (both
    reach :func:`auto_pair`), with a pair that fits when there is one."""
    # The teacher's middle is often its largest maps (a ResNet at full resolution), larger
    # than any of a thin student's: the feature layer nearest it that fits is worth naming.
    middle = (len(hints) - 1) // 2
    for i in sorted(range(len(hints)), key=lambda i: (abs(i - middle), -i)):
        hint = hints[i]
        index = _nearest_guided(_output_shape(teacher, hint), guided, student)
        if index is not None:
            t, s = hint.name, guided[index].name
            return (f"Name a pair instead: hints=[({t!r}, {s!r})] in Python, --hints={t}:{s} "
                    "on the command line (the teacher's feature layer nearest its middle that a "
                    "student layer can be mapped onto).")  # fmt: skip
    return ("Name a pair instead: hints=[(teacher_layer, student_layer)] in Python, "
            "--hints=teacher_layer:student_layer on the command line, the student's map at "
            "least as large as the teacher's (no pair of feature layers is; any layer with a "
            "feature map can be named).")  # fmt: skip


def describe_layers(model: keras.Model) -> str:
    """A table of ``model``'s layers: name, type, output shape; ``*`` marks the candidates.

    The candidates are the :func:`feature_layers`, the block outputs :func:`auto_pair` chooses
    from and the usual choices by hand (any layer with a feature map can be named).
    """
    candidates = {layer.name for layer in feature_layers(model)}
    rows = [("*" if layer.name in candidates else "", layer.name, type(layer).__name__,
             _output_shape(model, layer)) for layer in model.layers]  # fmt: skip
    return format_table(("", "layer", "type", "output shape"), rows, align="<<<<")


def _output_shape(model: keras.Model, layer) -> tuple | None:
    # In ``model``'s graph: a flattened model's layers were also called in their nested model's.
    try:
        return tuple(layer_output(model, layer.name).shape[1:])
    except (AttributeError, ValueError):  # shared layers have several outputs
        return None


def describe_models(teacher: keras.Model, student: keras.Model, pairs=(), regressor="auto") -> str:
    """What choosing pairs by hand needs: both models' layers and what :func:`auto_pair` picks.

    ``pairs`` given (hint, guided) are checked as a run checks them (an unknown layer or a
    pair no ``regressor`` maps raises the run's error) and listed first.
    """
    parts = []
    for role, model in (("teacher", teacher), ("student", student)):
        parts += [f"{role} {model.name!r}:", describe_layers(model), ""]
    given = isinstance(pairs, (list, tuple)) and len(pairs) > 0
    if given:
        make_regressors(teacher, student, pairs, regressor)
        parts.append(f"hints: {', '.join(pair_name(*pair) for pair in pairs)} (checked: each "
                     "regressor maps its guided layer onto its hint).")  # fmt: skip
    try:
        chosen = auto_pair(teacher, student)
        parts.append(f"hints=auto {'would choose' if given else 'chooses'} "
                     f"{chosen.hint_layer}:{chosen.guided_layer} ({chosen.reason}).")  # fmt: skip
    except HintShapeError as e:
        parts.append(f"hints=auto cannot choose a pair: {e}")
    parts.append("* marks a block's feature map: a hint (teacher) or guided (student) candidate.")
    return "\n".join(parts)
