"""Choosing hint/guided pairs: the paper's rule, and the layers a user can choose from.

The paper (section 3.1) takes "the middle layer of the teacher" as the hint and "the middle
layer of the student" as the guided layer. :func:`auto_pair` applies that rule to any pair of
Functional models; :func:`describe_layers` prints what a user needs to choose a pair by hand.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from fitnets_tf import regressor as regressor_lib
from fitnets_tf.errors import ConfigError, HintShapeError
from fitnets_tf.hint_flags import pair_name
from fitnets_tf.hint_path import (
    check_functional,
    layer_pairs,
    make_regressors,
    valid_names,
)
from fitnets_tf.layers import MaxoutConv2D, MaxoutDense
from fitnets_tf.models import graph_teachers, onnx_hints, saved_model, saved_model_hints
from fitnets_tf.models.graph_blocks import spatial
from fitnets_tf.models.nesting import layer_output, own_nodes
from fitnets_tf.models.onnx_model import onnx_layer
from fitnets_tf.models.traced import as_graphs
from fitnets_tf.preprocessing import Preprocessor
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


def _preprocessing_layers() -> tuple[type, ...]:
    """Keras' preprocessing layers (``Rescaling``, ``Normalization``, ``Resizing``,
    ``CenterCrop``, the random augmentations, ...) and fitnets_tf's :class:`Preprocessor`.

    They scale, crop or augment the input and compute no features: never a hint or guided
    layer, and not counted in the feature layers whose middle the paper's rule takes.
    """
    found = {keras.layers.Rescaling, keras.layers.Normalization, keras.layers.Resizing,
             keras.layers.CenterCrop, Preprocessor}  # fmt: skip
    # The rest by where Keras keeps them: its list grows with each release.
    for name in dir(keras.layers):
        cls = getattr(keras.layers, name)
        layer = isinstance(cls, type) and issubclass(cls, keras.layers.Layer)
        if layer and ".layers.preprocessing." in cls.__module__:
            found.add(cls)
    return tuple(found)


_PREPROCESSING = _preprocessing_layers()


def feature_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The outputs of the model's blocks that are feature maps ``(N, H, W, C)``, input to output.

    A block ends where every path from the input passes (a residual block's sum, not a layer
    inside it) just before the next conv or dense layer; dropout and zero padding are skipped
    (a hint is taken before them), and so are preprocessing layers (an input ``Rescaling``,
    ``Normalization``, augmentation: :func:`_preprocessing_layers`), which compute no
    features. For the paper's maxout nets these are its layers: ``pool{i}`` or ``conv{i}``.
    """
    check_functional(model, "model")
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    crossing = _crossing_edges(model, order)
    out, last = [], None
    for i, layer in enumerate(model.layers):
        starts_block = _starts_block(model, layer)
        if starts_block and last is not None:
            out.append(last)
            last = None
        cut = not any(u < i < v for u, v in crossing)
        skipped = isinstance(layer, _PASS_THROUGH + _PREPROCESSING)
        if cut and _is_feature_map(model, layer) and not skipped:
            last = layer if not isinstance(layer, keras.layers.InputLayer) else None
    if last is not None:
        out.append(last)
    return out


def _starts_block(model: keras.Model, layer) -> bool:
    """A conv or dense layer (not the 1×1 half of a separable conv: :func:`_pointwise_half`),
    or a layer of the user's own holding kernels (weights of rank 2 or more): a block written
    as one custom layer is a block, not part of the one before."""
    if isinstance(layer, _WEIGHT_LAYERS):
        return not _pointwise_half(model, layer)
    own = not type(layer).__module__.startswith(("keras.", "fitnets_tf."))
    return own and any(len(w.shape) >= 2 for w in layer.trainable_weights)


def _pointwise_half(model: keras.Model, layer) -> bool:
    """A 1×1 ``Conv2D`` reading a ``DepthwiseConv2D`` without activation: a separable conv
    written as two layers, one block as a ``SeparableConv2D`` is. The depthwise half alone is
    half a linear map, and its graph is the separable layer's (tf2onnx folds its bias into its
    conv), which :mod:`~fitnets_tf.models.graph_blocks` reads as one block."""
    if not (isinstance(layer, keras.layers.Conv2D) and layer.groups == 1
            and tuple(layer.kernel_size) == (1, 1)):  # fmt: skip
        return False
    parent = regressor_lib.inbound_layer(layer, model)
    while isinstance(parent, (keras.layers.Dropout, keras.layers.Identity)):
        parent = regressor_lib.inbound_layer(parent, model)
    linear = getattr(parent, "activation", None) is keras.activations.linear
    return isinstance(parent, keras.layers.DepthwiseConv2D) and linear


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
    known = shape is not None and len(shape) == 3 and all(d is not None for d in shape)
    return known and spatial(shape)  # a 1×1 map is a pooled vector


def auto_pair(teacher: keras.Model, student: keras.Model) -> AutoPair:
    """The paper's rule: the middle of the teacher guides the middle of the student.

    Feature layers are block outputs (:func:`feature_layers`; an ONNX or SavedModel teacher's,
    the tensors ending the blocks of its graph:
    :func:`~fitnets_tf.models.graph_teachers.block_outputs`). The hint is the teacher's middle
    feature layer (one of its two middle ones for an even count); the guided layer is, of the
    student's feature layers the convolutional regressor can map onto that hint (a guided map
    at least as large as the hint's), the nearest to the student's middle (:func:`choose`). A
    graph teacher's hint is its tensor, named as the graph names it; the teacher, loaded with
    or without hints, fetches it once loaded with it
    (:func:`~fitnets_tf.models.graph_teachers.with_hints`: the Distiller and a run do so).

    Raises:
        HintShapeError: no student layer can be mapped onto the middle hint(s); names them,
            their shapes and the student's layers with theirs. A model computing channels
            first (:func:`~fitnets_tf.regressor.check_channels_last`).
    """
    for model, role in ((teacher, "teacher"), (student, "student")):
        regressor_lib.check_channels_last(model, role)
    graph = graph_teachers.is_graph(teacher)
    hints = ([Feature(c.tensor, c.shape) for c in graph_teachers.block_outputs(teacher)] if graph
             else _features(teacher))  # fmt: skip
    guided = _features(student)
    if not hints or not guided:
        listed = ("--list_layers lists the teacher's tensors and the student's layers." if graph
                  else valid_names(teacher, student))  # fmt: skip
        raise HintShapeError(
            "hints='auto' needs feature-map layers (N, H, W, C) in both models; "
            f"{'the teacher' if not hints else 'the student'} has none. " + listed
        )
    return choose(hints, guided, teacher.name, student.name)


def auto_hints(teacher: keras.Model, student: keras.Model) -> tuple[keras.Model, list, AutoPair]:
    """:func:`auto_pair`'s choice as a run takes it: the teacher fetching the hint (an ONNX
    or SavedModel teacher is loaded again with the tensor chosen:
    :func:`~fitnets_tf.models.graph_teachers.with_hints`), the pairs, the choice."""
    chosen = auto_pair(teacher, student)
    pairs = [(chosen.hint_layer, chosen.guided_layer)]
    return graph_teachers.with_hints(teacher, pairs), pairs, chosen


@dataclasses.dataclass(frozen=True)
class Feature:
    """A block's output feature map: its name (a layer's, or a tensor of an ONNX or
    SavedModel teacher's graph) and its shape ``(H, W, C)``, channels last."""

    name: str
    shape: tuple


def _features(model: keras.Model) -> list[Feature]:
    return [Feature(layer.name, _output_shape(model, layer)) for layer in feature_layers(model)]


def choose(hints: list[Feature], guided: list[Feature], teacher: str, student: str) -> AutoPair:
    """:func:`auto_pair`'s rule over the teacher's feature maps ``hints`` and the student's
    ``guided`` (each input to output), of the models named ``teacher`` and ``student``.

    Ties, in turn: the pair whose regressor has fewer weights (``k² · O_g · O_h``), the deeper
    guided layer, the shallower hint. So a ResNet teacher with an even number of blocks, whose
    lower middle is still at full resolution, hints from its upper middle when that lets the
    guided layer sit nearer the student's middle. On the paper's MNIST pair this gives its own
    pair (pool2 → pool4); on CIFAR FitNet 1, layer 5 where the paper guides layer 6 (of 11
    layers, FC and softmax included). The reason says why each layer was taken.
    """
    middle = (len(hints) - 1) / 2
    options = {i: _best_guided(hints[i], guided)
               for i in range(len(hints)) if abs(i - middle) < 1}  # fmt: skip
    fitting = [i for i, option in options.items() if option is not None]
    if fitting:
        i = min(fitting, key=lambda i: (options[i].rank, i))
        reason = _reason(hints, guided, i, options, teacher, student)
        return AutoPair(hints[i].name, guided[options[i].index].name, reason)
    named = " and ".join(f"'{hints[i].name}' {hints[i].shape}" for i in options)
    shapes = ", ".join(f"{g.name} {g.shape}" for g in guided)
    raise HintShapeError(
        f"hints='auto': no student layer can be mapped onto the teacher's middle "
        f"{'layers' if len(options) > 1 else 'layer'} {named} (a guided map must be at least "
        f"as large). Student feature layers: {shapes}. {_suggestion(hints, guided)}"
    )


@dataclasses.dataclass(frozen=True)
class _Guided:
    """A student feature layer the regressor maps onto a hint, and how good a choice it is."""

    index: int  # in the student's feature layers
    distance: float  # from the student's middle, in feature layers
    weights: int  # the regressor's k_h · k_w · O_g · O_h

    @property
    def rank(self) -> tuple:
        return (self.distance, self.weights, -self.index)  # the deeper on a full tie


def _best_guided(hint: Feature, guided: list[Feature]) -> _Guided | None:
    """The best guided layer for ``hint`` (:attr:`_Guided.rank`), or None when none fits."""
    fits = [g for g in (_guided_option(hint, guided, j) for j in range(len(guided)))
            if g is not None]  # fmt: skip
    return min(fits, key=lambda g: g.rank) if fits else None


def _guided_option(hint: Feature, guided: list[Feature], index: int) -> _Guided | None:
    shape = guided[index].shape
    kernel = regressor_lib.kernel_size(shape, hint.shape)
    if not all(k >= 1 for k in kernel):
        return None
    weights = math.prod(kernel) * shape[-1] * hint.shape[-1]
    return _Guided(index, abs(index - (len(guided) - 1) / 2), weights)


def _reason(hints: list, guided: list, chosen: int, options: dict, teacher: str,
            student: str) -> str:  # fmt: skip
    """Why ``hints[chosen]`` and its guided layer: every clause true of these two models."""
    hint, option = hints[chosen], options[chosen]
    layer = guided[option.index]
    kernel = regressor_lib.kernel_size(layer.shape, hint.shape)
    parts = [
        f"'{hint.name}' {hint.shape} is feature layer {chosen + 1} of {len(hints)} of "
        f"'{teacher}', {_place(len(hints))}",
        f"'{layer.name}' {layer.shape} is feature layer {option.index + 1} of {len(guided)} of "
        f"'{student}', " + _guided_place(hint, guided, option),
        f"the convolutional regressor maps it onto the hint with a {'×'.join(map(str, kernel))} "
        f"kernel (k² · O_g · O_h = {option.weights} weights)",
    ]
    for other in options:
        if other != chosen:
            parts.append(_other_middle(hints[other], options[other], option, guided))
    return "the paper's rule (the middle of the teacher guides the middle of the student): " + (
        "; ".join(parts)
    )


def _place(count: int) -> str:
    return "its middle" if count % 2 else "one of its two middle layers"


def _guided_place(hint: Feature, guided: list, option: _Guided) -> str:
    """Where the guided layer is in the student, and why not the other as near, if any."""
    count = len(guided)
    if option.distance == 0:
        return "its middle"
    place = ("one of its two middle layers" if option.distance == 0.5 else
             "of the layers whose map is large enough for the hint's (the regressor can only "
             "shrink a map), the nearest to its middle")  # fmt: skip
    twin = round(count - 1 - option.index)  # as far from the middle, on the other side
    if twin == option.index or not 0 <= twin < count:
        return place
    rival = _guided_option(hint, guided, twin)
    name = f"'{guided[twin].name}' {guided[twin].shape}"
    if rival is None:
        return f"{place} (as near, {name} is smaller than the hint)"
    if rival.weights > option.weights:
        return (f"{place} (as near, {name} needs a larger regressor: {rival.weights} "
                "weights)")  # fmt: skip
    return f"{place} (as near, {name} needs as large a regressor: the deeper is taken)"


def _other_middle(hint: Feature, option, chosen: _Guided, guided: list) -> str:
    """Why the teacher's other middle layer was not the hint."""
    head = f"the other middle layer, '{hint.name}' {hint.shape}, "
    if option is None:
        return head + "has no student feature map large enough for it"
    name = f"'{guided[option.index].name}'"
    if option.distance > chosen.distance:
        return head + f"would guide {name}, farther from the student's middle"
    if option.weights > chosen.weights:
        return head + (f"would guide {name}, as near the student's middle, with a larger "
                       f"regressor ({option.weights} weights)")  # fmt: skip
    if option.index != chosen.index:
        return head + f"would guide {name}, as near and as costly but shallower"
    return head + "would guide the same layer with as large a regressor: the shallower is taken"


def _suggestion(hints: list, guided: list) -> str:
    """How to name a pair instead, in the Python API's words and the command line's (both
    reach :func:`auto_pair`), with a pair that fits when there is one."""
    # The teacher's middle is often its largest maps (a ResNet at full resolution), larger
    # than any of a thin student's: the feature layer nearest it that fits is worth naming.
    middle = (len(hints) - 1) // 2
    for i in sorted(range(len(hints)), key=lambda i: (abs(i - middle), -i)):
        option = _best_guided(hints[i], guided)
        if option is not None:
            t, s = hints[i].name, guided[option.index].name
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
    pair no ``regressor`` maps raises the run's error) and listed first. A subclassed model is
    described as the graph of its layers, as the Distiller takes it for hints.
    """
    teacher, student = as_graphs(teacher, student)
    onnx, signature = onnx_layer(teacher), saved_model.signature_of(teacher)
    parts = []
    for role, model in (("teacher", teacher), ("student", student)):
        parts += [f"{role} {model.name!r}:", describe_layers(model), ""]
    shape = teacher.inputs[0].shape[1:]
    if onnx is not None or signature is not None:  # its hints are tensors of its graph
        # Images of any size: maps of no known shape, no block to star (auto says why).
        blocks = ({c.tensor for c in graph_teachers.block_outputs(teacher)}
                  if None not in shape else set())  # fmt: skip
        listed = (onnx_hints.describe(onnx, shape) if onnx is not None
                  else saved_model_hints.describe(signature, shape))  # fmt: skip
        rows = [("*" if row[0] in blocks else "", *row) for row in listed]
        kind = "ONNX" if onnx is not None else "SavedModel"
        parts[1:2] = [f"hint tensors of the {kind} teacher {teacher.name!r} (4-D activations, "
                      "channels last; name one in --hints=TENSOR:GUIDED_LAYER, or let "
                      "--hints=auto choose):",
                      format_table(("", "tensor", "node", "shape"), rows, align="<<<<")]  # fmt: skip
    given = isinstance(pairs, (list, tuple)) and len(pairs) > 0
    if given:
        pairs = layer_pairs(teacher, pairs)
        make_regressors(teacher, student, pairs, regressor)
        parts.append(f"hints: {', '.join(pair_name(*pair) for pair in pairs)} (checked: each "
                     "regressor maps its guided layer onto its hint).")  # fmt: skip
    try:
        chosen = auto_pair(teacher, student)
        parts.append(f"hints=auto {'would choose' if given else 'chooses'} "
                     f"{chosen.hint_layer}:{chosen.guided_layer} ({chosen.reason}).")  # fmt: skip
    except (HintShapeError, ConfigError) as e:  # ConfigError: a graph's images of any size
        parts.append(f"hints=auto cannot choose a pair: {e}")
    parts.append("* marks a block's feature map: a hint (teacher) or guided (student) candidate.")
    return "\n".join(parts)
