"""Hints from an ONNX teacher: its intermediate tensors, named as the file names them.

A frozen teacher needs no gradient, so stage 1 needs only its hint activations, as targets. ONNX
Runtime returns any intermediate tensor once it is a graph output: the teacher's session runs a
copy of the file (in memory) with the requested tensors added as outputs, and its Keras model
exposes each through a named layer (:func:`layer_name`), which the hint machinery taps as it taps
a Keras layer: ``Activation("relu")`` for a tensor a ``Relu`` node makes (a no-op on it, and the
regressor's non-linearity is then a ReLU, as for a Keras ReLU hint), ``Activation("relu6")`` for
a ``Relu6``'s or a ``Clip``'s from 0 to 6 (Keras' ``ReLU(6.)``), ``Activation("linear")``
otherwise. Each hint is given channels last, as the student's guided layers are: transposed
when the tensor is channels-first, which is traced tensor by tensor
(:mod:`~fitnets_tf.models.onnx_layouts`: a channels-last file's convolutions are ONNX's, NCHW).
The candidates (:func:`candidates`) are the graph's 4-D float activations; shapes come from
ONNX shape inference for the images' size.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re

import keras

from fitnets_tf.errors import ConfigError
from fitnets_tf.models import onnx_layouts

# Nodes whose outputs are constants or shapes, never activations.
_NOT_ACTIVATIONS = {"Constant", "ConstantOfShape", "Shape", "Size", "Range"}
# Nodes whose output's values are some of their input's (a max pool's, a dropout's at
# inference) or the same re-laid out (tf2onnx's transposes): a max pool of a ReLU's map is
# non-negative, and its hint gets a ReLU regressor (fitnets_tf.regressor's _TRANSPARENT).
_SAME_VALUES = {"MaxPool", "GlobalMaxPool", "Dropout", "Identity", "Transpose"}
# The Keras activation of a hint whose values a node of this type makes (a Clip's: see
# _clip_values), as the regressor takes a Keras ReLU(6.) hint's: any other, linear.
_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6"}


# What a TensorFlow name scope takes (a layer's name is one in a traced step), besides `/`.
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]")


def layer_name(tensor: str) -> str:
    """The Keras layer exposing the hint ``tensor``: Keras names take no ``/``, which PyTorch's
    exporter puts in every name (``/layer2/layer2.1/relu_1/Relu_output_0`` ->
    ``layer2.layer2.1.relu_1.Relu_output_0``), and a traced step's name scopes no ``:``
    (``onnx::Relu_23`` -> ``onnx__Relu_23``; tf2onnx's ``conv1/Relu:0`` -> ``conv1.Relu_0``).
    A layer's name maps to itself. Two tensors of a file may map to one name: a hint is
    refused then (:func:`requested`)."""
    return _NOT_IN_NAMES.sub("_", tensor.lstrip("/").replace("/", "."))


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A 4-D activation of the file: its name, its shape channels last ``(H, W, C)``, the
    type of the node making it (``"Relu"``, ``"Conv"``...), whether the file holds it
    channels-first ``(N, C, H, W)``, and the type of the node making its values, looked
    through max pooling and layout nodes (a ``MaxPool`` of a ``Relu``'s map: ``"Relu"``; a
    ``Clip``'s: the ReLU it is, :func:`_clip_values`), as
    :func:`fitnets_tf.regressor.hint_nonlinearity` looks through a Keras hint's."""

    tensor: str
    shape: tuple
    op: str
    channels_first: bool
    values_of: str = ""


def candidates(model, input_shape, channels_first: bool) -> list[Candidate]:
    """The 4-D float activations of the ONNX ``model`` (a ``ModelProto``) for images of
    ``input_shape`` ``(H, W, C)`` (``channels_first``: the images' layout in the file), in
    graph order; weights and shape arithmetic left out."""
    types = _inferred_types(model, input_shape, channels_first)
    image = _image_input(model).name
    ranks = {tensor: len(dims) for tensor, dims in types.items()} | {image: 4}
    first = onnx_layouts.channels_first(model, image, channels_first, ranks)
    found, values_of, scalars = [], {}, _scalars(model)
    for node in model.graph.node:
        made = _clip_values(node, scalars) if node.op_type == "Clip" else node.op_type
        for tensor in node.output:
            values_of[tensor] = (values_of.get(node.input[0], made)
                                 if node.op_type in _SAME_VALUES else made)  # fmt: skip
        if node.op_type in _NOT_ACTIVATIONS:
            continue
        for tensor in node.output:
            dims = types.get(tensor)
            if tensor in first and all(d > 0 for d in dims[1:]):
                shape = tuple(dims[2:]) + (dims[1],) if first[tensor] else tuple(dims[1:])
                found.append(Candidate(tensor, shape, node.op_type, first[tensor],
                                       values_of[tensor]))  # fmt: skip
    return found


def _scalars(model) -> dict[str, float]:
    """The file's one-number initializers and ``Constant`` nodes, by name: a ``Clip``'s
    bounds (opset 11 on) are such inputs."""
    from onnx import numpy_helper  # noqa: PLC0415

    found = {t.name: t for t in model.graph.initializer if math.prod(t.dims) == 1}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute[0].name in ("value", "value_float"):
            value = node.attribute[0]
            found[node.output[0]] = value.t if value.name == "value" else value.f
    # A bound may be held with shape (1,), which NumPy 2 no longer turns into a float.
    return {name: value if isinstance(value, float) else
            float(numpy_helper.to_array(value).reshape(-1)[0])
            for name, value in found.items()
            if isinstance(value, float) or math.prod(value.dims) == 1}  # fmt: skip


def _clip_values(node, scalars: dict[str, float]) -> str:
    """A ``Clip``'s values as the Keras ReLU whose they are: ``"Relu6"`` for bounds 0 and 6
    (``ReLU(6.)``, which tf2onnx writes so, as PyTorch's ``ReLU6``), ``"Relu"`` for 0 and another
    bound or none (``ReLU(max_value=m)``, ``ReLU()``: a ReLU regressor reaches their values, as
    for those Keras hints). ``"Clip"`` otherwise: a lower bound not 0 or not known (an input
    computed in the graph), which no Keras ReLU hint has."""
    bounds = {a.name: a.f for a in node.attribute if a.name in ("min", "max")}  # opset < 11
    for key, name in zip(("min", "max"), node.input[1:], strict=False):  # each optional
        if name:
            bounds[key] = scalars.get(name, math.nan)
    low, high = bounds.get("min", -math.inf), bounds.get("max", math.inf)
    if low != 0 or not high > 0:  # NaN: a bound not known
        return "Clip"
    return "Relu6" if high == 6 else "Relu"


def _image_input(model):
    initializers = {i.name for i in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in initializers)


# Initializers of more numbers than this are copied for shape inference without their values:
# it reads only small ones' (a Reshape's shape, a Resize's scales).
_LARGEST_READ = 4096


def _without_weights(model):
    """A copy of ``model`` whose large initializers (its weights) keep their types and shapes
    but not their values: a whole copy of a large file, serialized again by the shape
    inference, held several times its size in memory at once."""
    import onnx  # noqa: PLC0415

    copy, graph = onnx.ModelProto(), model.graph
    copy.ir_version, copy.graph.name = model.ir_version, graph.name
    copy.opset_import.extend(model.opset_import)
    copy.functions.extend(model.functions)  # what shape inference reads, and only that
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(copy.graph, field).extend(getattr(graph, field))
    for tensor in graph.initializer:
        small = math.prod(tensor.dims) <= _LARGEST_READ
        copy.graph.initializer.append(tensor if small else onnx.TensorProto(
            name=tensor.name, dims=tensor.dims, data_type=tensor.data_type))  # fmt: skip
    return copy


def _inferred_types(model, input_shape, channels_first: bool) -> dict[str, tuple]:
    """Each float tensor's dims (an unknown one: 0) by ``onnx.shape_inference``, the input's
    sizes set to the images' (the file may leave them open)."""
    import onnx  # noqa: PLC0415  (installed with ONNX Runtime, the export extra's)

    fixed = _without_weights(model)
    height, width, channels = input_shape
    sizes = (channels, height, width) if channels_first else (height, width, channels)
    image = _image_input(fixed)
    for dim, size in zip(image.type.tensor_type.shape.dim[1:], sizes, strict=True):
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(fixed).graph
    return {value.name: tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
            for value in (*inferred.value_info, *inferred.output)
            if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}  # fmt: skip


def requested(model, names, input_shape, channels_first: bool, what: str,
              taken=()) -> list[Candidate]:  # fmt: skip
    """The candidates ``names`` name, in order, each once (pairs may share a hint). A name is
    the tensor of that name, else the one candidate whose :func:`layer_name` it is. A hint's
    layer name must stand for it alone: no other tensor of the file may have it as its name or
    layer name (the logs, ``hints.json`` and a pair naming the layer would mean either), nor
    a layer of the teacher's Keras model (``taken``).

    Raises:
        ConfigError: a name that is no tensor of the graph (with the closest ones), one that
            is not a 4-D activation, one that is several tensors' layer name; a hint whose
            layer name another tensor or layer has; every problem at once.
    """
    listed = candidates(model, input_shape, channels_first)
    tensors = _tensor_names(model)
    chosen, unknown = [], []
    for name in names:
        found = _named(name, listed, tensors)
        if isinstance(found, Candidate):
            chosen.append(found)
        else:
            unknown.append(found or _problem(model, name, listed, input_shape, channels_first))
    chosen = list(dict.fromkeys(chosen))
    clashes = [clash for c in chosen if (clash := _clash(c, tensors, set(taken)))]
    if unknown or clashes:
        listing = (" A hint is a 4-D activation of its graph: --list_layers lists them with "
                   "their shapes.") if unknown else ""  # fmt: skip
        raise ConfigError(f"{what}: {' '.join(unknown + clashes)}{listing}")
    return chosen


def _tensor_names(model) -> set[str]:
    graph = model.graph
    return {*(t for node in graph.node for t in node.output), *(i.name for i in graph.input),
            *(i.name for i in graph.initializer)}  # fmt: skip


def _named(name: str, listed, tensors: set[str]) -> Candidate | str | None:
    """The candidate ``name`` names; why it names none when it is several tensors' layer
    name; None otherwise (:func:`_problem` says why)."""
    by_tensor = {c.tensor: c for c in listed}
    if name in tensors:  # a tensor's own name, even where it is another's layer name
        return by_tensor.get(name)
    aliased = [c.tensor for c in listed if layer_name(c.tensor) == name]
    if len(aliased) > 1:
        return (f"'{name}' is the layer name of {'both' if len(aliased) == 2 else 'all of'} "
                f"{' and '.join(map(repr, aliased))}: name the tensor itself.")  # fmt: skip
    return by_tensor[aliased[0]] if aliased else None


def _clash(candidate: Candidate, tensors: set[str], taken: set[str]) -> str | None:
    """Why ``candidate``'s layer name does not stand for it alone, or None."""
    tensor, name = candidate.tensor, layer_name(candidate.tensor)
    if name in taken:
        return (f"The hint '{tensor}' would be the layer '{name}', a layer the teacher's Keras "
                "model has already: rename the tensor in the file.")  # fmt: skip
    others = sorted(t for t in tensors if t != tensor and name in (t, layer_name(t)))
    if name == tensor or not others:
        return None
    return (f"The hint '{tensor}' would be the layer '{name}' of the teacher's Keras model "
            "(its '/' and ':' replaced: Keras and TensorFlow names take neither), which also "
            f"stands for the tensor {' and '.join(map(repr, others))} of the file: rename one "
            "of them in the file.")  # fmt: skip


def _problem(model, name: str, listed, input_shape, channels_first: bool) -> str:
    if name in {i.name for i in model.graph.initializer}:
        return f"'{name}' is not a 4-D activation (a weight of the file)."
    dims = _inferred_types(model, input_shape, channels_first).get(name)
    if dims is None and name not in {t for node in model.graph.node for t in node.output}:
        close = difflib.get_close_matches(name, [c.tensor for c in listed], n=3, cutoff=0.6)
        mean = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        return f"There is no tensor '{name}' in the graph{mean}."
    shape = "unknown" if dims is None else "(" + ", ".join(
        "N" if i == 0 else str(d or "?") for i, d in enumerate(dims)) + ")"  # fmt: skip
    return f"'{name}' is not a 4-D activation (its shape: {shape})."


def add_outputs(model, tensors) -> None:
    """Has ``model`` (a ``ModelProto``, changed) also return ``tensors``, after its own outputs:
    changed rather than copied, as a copy would hold a large file's weights once more."""
    import onnx  # noqa: PLC0415

    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in tensors)  # fmt: skip


def hint_layer(candidate: Candidate) -> keras.layers.Layer:
    """The layer exposing ``candidate``, whose type tells the regressor its non-linearity: a
    ReLU's for a tensor of a ``Relu``'s values (:attr:`Candidate.values_of`), a ReLU6's for a
    ``Relu6``'s (a no-op on either's values)."""
    activation = _ACTIVATIONS.get(candidate.values_of or candidate.op, "linear")
    return keras.layers.Activation(activation, name=layer_name(candidate.tensor))


@keras.saving.register_keras_serializable(package="fitnets_tf")
class FirstOf(keras.layers.Layer):
    """The first of its inputs: the teacher's logits, its hint layers joined to the graph
    (a Functional model holds only the layers on a path to its outputs, and only those can be
    tapped)."""

    def call(self, inputs):
        return inputs[0]

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def layer_pairs(pairs, teacher_name: str, hint_layers,
                kind: str = "ONNX") -> list[tuple[str, str]]:  # fmt: skip
    """``pairs`` with each hint named by its layer; ``hint_layers``: those of the teacher, an
    ``kind`` one (``"ONNX"`` or ``"SavedModel"``, whose hints are named as ONNX ones are).

    Raises:
        ConfigError: a hint the teacher was not loaded with.
    """
    named = [(layer_name(hint), guided) for hint, guided in pairs]
    missing = [hint for (hint, _), (layer, _) in zip(pairs, named, strict=True)
               if layer not in hint_layers]  # fmt: skip
    if missing:
        raise ConfigError(
            f"The {kind} teacher {teacher_name!r} was loaded without the hint tensor "
            f"{' and '.join(map(repr, missing))}: load it with its hints "
            f"({'onnx_model' if kind == 'ONNX' else 'saved_model'}.load(path, input_shape, "
            "hints=[...])); it has "
            f"{', '.join(map(repr, hint_layers)) or 'none'}."
        )
    return named


def describe(teacher_layer, input_shape) -> list[tuple]:
    """The rows ``--list_layers`` prints for an ONNX teacher: tensor, node type, shape."""
    import onnx  # noqa: PLC0415

    model = onnx.load(teacher_layer.onnx_path)
    listed = candidates(model, input_shape, teacher_layer.channels_first)
    return [(c.tensor, c.op, c.shape) for c in listed]
