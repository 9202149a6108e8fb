"""Hints from an ONNX teacher: its intermediate tensors, named as the file names them.

A frozen teacher needs no gradient, so stage 1 needs only its hint activations, as targets. ONNX
Runtime returns any intermediate tensor once it is a graph output: the teacher's session runs a
copy of the file (in memory) with the requested tensors added as outputs, and its Keras model
exposes each through a named layer (:func:`layer_name`), which the hint machinery taps as it taps
a Keras layer: ``Activation("relu")`` for a tensor a ``Relu`` node makes (a no-op on it, and the
regressor's non-linearity is then a ReLU, as for a Keras ReLU hint), ``Activation("linear")``
otherwise. A channels-first file's hints are transposed to channels last, as the student's
guided layers are. The candidates (:func:`candidates`) are the graph's 4-D float activations;
shapes come from ONNX shape inference for the images' size.
"""

from __future__ import annotations

import dataclasses
import difflib

import keras

from fitnets_tf.errors import ConfigError

# Nodes whose outputs are constants or shapes, never activations.
_NOT_ACTIVATIONS = {"Constant", "ConstantOfShape", "Shape", "Size", "Range"}


def layer_name(tensor: str) -> str:
    """The Keras layer exposing the hint ``tensor``: Keras names take no ``/``, which PyTorch's
    exporter puts in every name (``/layer2/layer2.1/relu_1/Relu_output_0`` ->
    ``layer2.layer2.1.relu_1.Relu_output_0``). A layer's name maps to itself."""
    return tensor.lstrip("/").replace("/", ".")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A 4-D activation of the file: its name, its shape channels last ``(H, W, C)``, and the
    type of the node making it (``"Relu"``, ``"Conv"``...)."""

    tensor: str
    shape: tuple
    op: str


def candidates(model, input_shape, channels_first: bool) -> list[Candidate]:
    """The 4-D float activations of the ONNX ``model`` (a ``ModelProto``) for images of
    ``input_shape`` ``(H, W, C)``, in graph order; weights and shape arithmetic left out."""
    types = _inferred_types(model, input_shape, channels_first)
    found = []
    for node in model.graph.node:
        if node.op_type in _NOT_ACTIVATIONS:
            continue
        for tensor in node.output:
            dims = types.get(tensor)
            if dims is not None and len(dims) == 4 and all(d > 0 for d in dims[1:]):
                shape = tuple(dims[2:]) + (dims[1],) if channels_first else tuple(dims[1:])
                found.append(Candidate(tensor, shape, node.op_type))
    return found


def _inferred_types(model, input_shape, channels_first: bool) -> dict[str, tuple]:
    """Each float tensor's dims (an unknown one: 0) by ``onnx.shape_inference``, the input's
    sizes set to the images' (the file may leave them open)."""
    import onnx  # noqa: PLC0415  (installed with ONNX Runtime, the export extra's)

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    height, width, channels = input_shape
    sizes = (channels, height, width) if channels_first else (height, width, channels)
    initializers = {i.name for i in fixed.graph.initializer}
    image = next(i for i in fixed.graph.input if i.name not in initializers)
    for dim, size in zip(image.type.tensor_type.shape.dim[1:], sizes, strict=True):
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(fixed).graph
    return {value.name: tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
            for value in (*inferred.value_info, *inferred.output)
            if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}  # fmt: skip


def requested(model, names, input_shape, channels_first: bool, what: str) -> list[Candidate]:
    """The candidates ``names`` name (a tensor's name, or its :func:`layer_name`), in order,
    each once (pairs may share a hint).

    Raises:
        ConfigError: a name that is no tensor of the graph (with the closest ones), or one that
            is not a 4-D activation; every bad name at once.
    """
    listed = candidates(model, input_shape, channels_first)
    by_name = {c.tensor: c for c in listed} | {layer_name(c.tensor): c for c in listed}
    problems = [_problem(model, name, listed, input_shape, channels_first)
                for name in names if name not in by_name]  # fmt: skip
    if problems:
        raise ConfigError(f"{what}: {' '.join(problems)} A hint is a 4-D activation of its "
                          "graph: --list_layers lists them with their shapes.")  # fmt: skip
    return list(dict.fromkeys(by_name[name] for name in names))


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


def with_outputs(model, tensors) -> bytes:
    """The serialized copy of ``model`` that also returns ``tensors`` (after its own outputs)."""
    import onnx  # noqa: PLC0415

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                             for t in tensors)  # fmt: skip
    return copy.SerializeToString()


def hint_layer(candidate: Candidate) -> keras.layers.Layer:
    """The layer exposing ``candidate``, whose type tells the regressor its non-linearity."""
    activation = "relu" if candidate.op == "Relu" else "linear"
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


def layer_pairs(pairs, teacher_name: str, hint_layers) -> list[tuple[str, str]]:
    """``pairs`` with each hint named by its layer; ``hint_layers``: those of the teacher.

    Raises:
        ConfigError: a hint the teacher was not loaded with.
    """
    pairs = [(layer_name(hint), guided) for hint, guided in pairs]
    missing = [hint for hint, _ in pairs if hint not in hint_layers]
    if missing:
        raise ConfigError(
            f"The ONNX teacher {teacher_name!r} was loaded without the hint tensor "
            f"{' and '.join(map(repr, missing))}: load it with its hints "
            "(onnx_model.load(path, input_shape, hints=[...])); it has "
            f"{', '.join(map(repr, hint_layers)) or 'none'}."
        )
    return pairs


AUTO_REFUSED = (
    "hints='auto' chooses among Keras layers, and an ONNX teacher's hints are tensors of its "
    "file: name one, hints=[(tensor, guided_layer)] (--hints=TENSOR:GUIDED_LAYER; "
    "--list_layers lists the tensors)."
)


def describe(teacher_layer, input_shape) -> list[tuple]:
    """The rows ``--list_layers`` prints for an ONNX teacher: tensor, node type, shape."""
    import onnx  # noqa: PLC0415

    model = onnx.load(teacher_layer.onnx_path)
    listed = candidates(model, input_shape, teacher_layer.channels_first)
    return [(c.tensor, c.op, c.shape) for c in listed]
