"""Hints from a SavedModel teacher: tensors of its signature's graph, named as the graph names
them.

A SavedModel keeps its ``serving_default`` signature as a function that calls one other, the
body the model was traced into (Keras' ``model.export``, ``tf.saved_model.save`` of a Keras
model or of a ``tf.Module``): every op of the model is in that body, named by the name scopes of
its trace (``teacher_1/conv1_1/Relu``; the ``_1``: a Keras model's names in a second trace).
The body is imported again (``tf.graph_util.import_graph_def``) into a function of its own
(``tf.compat.v1.wrap_function``), its images fed the teacher's and its variable handles the
loaded variables', which returns the signature's output and the hint tensors: the same ops on
the same weights. The teacher is frozen: nothing is differentiated through it.

The names are the file's: a SavedModel exported again may name its tensors otherwise
(``--list_layers`` lists them). A tensor inside a function the body calls (a ``tf.while_loop``
or ``tf.cond`` body, a layer saved as a function of its own) is not one of the body's: it is
refused, naming the function.
"""

from __future__ import annotations

import dataclasses
import difflib

import tensorflow as tf

# The one way from a FunctionDef (whose tensors are named ``node:output_arg:index``) to a
# GraphDef that import_graph_def takes: the renaming needs each op's definition, which no
# public API gives. Present since TensorFlow 1.12 and used by tf2onnx too;
# tests/test_saved_model_hints.py fails first if it goes.
from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def

from fitnets_tf.errors import ConfigError
from fitnets_tf.models.onnx_hints import Candidate, layer_name

_CALLS = {"StatefulPartitionedCall", "PartitionedCall"}
# Ops whose outputs are weights, constants or the body's own inputs, never activations.
_NOT_ACTIVATIONS = {"Placeholder", "Const", "ReadVariableOp", "VarHandleOp"}
# Ops whose output's values are some of their input's (a max pool's) or the same re-laid out:
# a max pool of a ReLU's map is non-negative (onnx_hints' _SAME_VALUES).
_SAME_VALUES = {"MaxPool", "Identity", "IdentityN", "StopGradient", "Transpose"}
# Copies of the tensor before them (Keras adds them around custom gradients): not listed, as
# the tensor copied is, but a hint when named (tf.identity(x, name="features")).
_COPIES = {"Identity"}
PREFIX = "body"  # of the imported ops' names: no clash with the function's own placeholders
REFUSED_ADVICE = "save the teacher as a .keras file (model.save) or export it to ONNX"


@dataclasses.dataclass(frozen=True)
class Body:
    """The function a SavedModel's signature calls: its ops as a GraphDef, the name of its
    image input, its variable handles (argument -> the loaded variable's handle), the tensor
    it returns for the signature's output, and which function each op of a function it calls
    lies in."""

    graph_def: object
    image: str
    dtype: tf.DType
    handles: dict
    output: str
    nested: dict


def body(signature, what: str) -> Body:
    """The :class:`Body` of the ``signature`` (a loaded ConcreteFunction of one image input
    and one output).

    Raises:
        ConfigError: the signature is not one call of one function, fed its images and its
            variables only (a SavedModel of another kind: names what to do instead).
    """
    graph = signature.graph
    calls = [op for op in graph.get_operations() if op.type in _CALLS]
    if len(calls) != 1:
        raise ConfigError(f"{what}'s signature makes {len(calls)} function calls where a "
                          "TensorFlow 2 export makes one, so its tensors cannot be taken as "
                          f"hints: {REFUSED_ADVICE}.")  # fmt: skip
    call = calls[0]
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    function = library[call.get_attr("f").name]
    graph_def, flat_names = function_def_to_graph_def(function)
    image_name, captured = graph.inputs[0].name, {i.name: e for e, i in graph.captures}
    image, handles = None, {}
    for arg, fed in zip(function.signature.input_arg, call.inputs, strict=True):
        if fed.name == image_name:
            image = arg.name
        elif fed.name in captured:
            handles[arg.name] = captured[fed.name]
        else:
            raise ConfigError(f"{what}'s signature computes an input of its function "
                              f"({arg.name!r}) itself, so its tensors cannot be taken as hints: "
                              f"{REFUSED_ADVICE}.")  # fmt: skip
    output = signature.outputs[0]
    while output.op.type == "Identity":
        output = output.op.inputs[0]
    if output.op is not call or image is None:
        raise ConfigError(f"{what}'s signature does not return what its function returns, so "
                          f"its tensors cannot be taken as hints: {REFUSED_ADVICE}.")  # fmt: skip
    returned = function.ret[function.signature.output_arg[output.value_index].name]
    nested = {node.name: name for name, f in library.items() if name != function.signature.name
              for node in f.node_def}  # fmt: skip
    return Body(
        graph_def, image, graph.inputs[0].dtype, handles, flat_names.get(returned, returned), nested
    )


def tensor_name(name: str) -> str:
    """A hint's name as a graph tensor's: an op's name is its first output's."""
    return name if ":" in name else f"{name}:0"


def short_name(name: str) -> str:
    """A tensor's name as the listing gives it: its op's for its first output
    (``teacher_1/conv1_1/Relu``), ``op:k`` for another."""
    op, _, index = tensor_name(name).rpartition(":")
    return op if index == "0" else f"{op}:{index}"


def function(body_: Body, input_shape, hints=()):
    """A function of images ``(N, *input_shape)`` that returns the signature's output and the
    tensors ``hints`` names (by :func:`tensor_name`), in order."""
    fetches = [body_.output, *map(tensor_name, hints)]

    def run(images):
        # The handles, eager tensors, captured by the function's graph, where the import
        # needs them.
        feeds = {f"{body_.image}:0": images} | {
            f"{arg}:0": tf.convert_to_tensor(handle) for arg, handle in body_.handles.items()
        }
        return tf.graph_util.import_graph_def(body_.graph_def, input_map=feeds,
                                              return_elements=fetches, name=PREFIX)  # fmt: skip

    return tf.compat.v1.wrap_function(run, [tf.TensorSpec((None, *input_shape), body_.dtype)])


def candidates(body_: Body, input_shape) -> list[Candidate]:
    """The body's 4-D float activations for images of ``input_shape`` ``(H, W, C)``, in graph
    order: tensors of a batch axis whose other sizes are known (weights, shapes and
    constants left out; copies too, :data:`_COPIES`)."""
    return activations(function(body_, input_shape).graph)


def activations(graph, copies: bool = False) -> list[Candidate]:
    """The 4-D float activations of the body imported into ``graph`` (a :func:`function`'s),
    in graph order; copies (:data:`_COPIES`) too when ``copies``."""
    left_out = _NOT_ACTIVATIONS if copies else _NOT_ACTIVATIONS | _COPIES
    found = []
    for op in graph.get_operations():
        if not op.name.startswith(f"{PREFIX}/") or op.type in left_out:
            continue
        for tensor in op.outputs:
            shape = tensor.shape
            if (tensor.dtype.is_floating and shape.rank == 4 and shape[0] is None
                    and None not in shape[1:]):  # fmt: skip
                name = short_name(tensor.name.removeprefix(f"{PREFIX}/"))
                found.append(Candidate(name, tuple(shape[1:]), op.type, False,
                                       _values_of(tensor)))  # fmt: skip
    return found


def _values_of(tensor) -> str:
    """The type of the op making ``tensor``'s values (:attr:`Candidate.values_of`): a Keras
    ``ReLU(6.)``'s is ``Relu6``, which :func:`~fitnets_tf.models.onnx_hints.hint_layer` exposes
    as a ReLU6, as tf2onnx's ``Clip`` of it."""
    while tensor.op.type in _SAME_VALUES and tensor.op.inputs:
        tensor = tensor.op.inputs[tensor.value_index if tensor.op.type == "IdentityN" else 0]
    return tensor.op.type


def requested(body_: Body, names, input_shape, what: str, taken=()) -> list[Candidate]:
    """The candidates ``names`` name (a tensor's name, an op's for its first output, or its
    layer name: :func:`~fitnets_tf.models.onnx_hints.layer_name`), in order, each once.

    Raises:
        ConfigError: a name that is no tensor of the body (with the closest ones), one inside
            a function the body calls, one that is not a 4-D activation, one whose layer name
            another tensor of the body or a layer of the teacher's model (``taken``) has;
            every problem at once.
    """
    graph = function(body_, input_shape).graph
    listed = activations(graph, copies=True)
    by_name = {c.tensor: c for c in listed} | {layer_name(c.tensor): c for c in listed}
    ops = {node.name for node in body_.graph_def.node}
    chosen, problems = [], []
    for name in names:
        found = by_name.get(short_name(name)) or by_name.get(name)
        if found is not None:
            chosen.append(found)
        else:
            problems.append(_problem(body_, name, graph, listed))
    chosen = list(dict.fromkeys(chosen))
    for c in chosen:
        others = sorted(n for n in ops if n != c.tensor.split(":")[0]
                        and layer_name(n) == layer_name(c.tensor))  # fmt: skip
        if layer_name(c.tensor) in set(taken) or others:
            problems.append(f"The hint '{c.tensor}' would be the layer "
                            f"'{layer_name(c.tensor)}', which another tensor or layer of the "
                            "teacher also is ('/' and ':' replaced: Keras names take neither): "
                            "name another tensor.")  # fmt: skip
    if problems:
        raise ConfigError(f"{what}: {' '.join(problems)} A hint is a 4-D activation of its "
                          "graph: --list_layers lists them with their shapes.")  # fmt: skip
    return chosen


def _problem(body_: Body, name: str, graph, listed) -> str:
    try:
        tensor = graph.get_tensor_by_name(f"{PREFIX}/{tensor_name(name)}")
    except (KeyError, ValueError):
        return _not_in_body(body_, name, listed)
    if tensor.op.type in ("ReadVariableOp", "Const"):
        return f"'{name}' is not a 4-D activation (a weight of the SavedModel)."
    shape = "unknown" if tensor.shape.rank is None else "(" + ", ".join(
        "N" if i == 0 else str(d or "?") for i, d in enumerate(tensor.shape)) + ")"  # fmt: skip
    return f"'{name}' is not a 4-D activation (its shape: {shape})."


def _not_in_body(body_: Body, name: str, listed) -> str:
    function = body_.nested.get(tensor_name(name).rpartition(":")[0])
    if function is not None:
        return (f"'{name}' lies inside the function {function!r}, which the graph calls (a "
                "tf.while_loop or tf.cond body, or a layer saved as a function of its own): "
                "only the tensors of the signature's own graph can be hints. Name one outside "
                f"it, or {REFUSED_ADVICE}.")  # fmt: skip
    close = difflib.get_close_matches(name, [c.tensor for c in listed], n=3, cutoff=0.6)
    mean = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return f"There is no tensor '{name}' in the graph{mean}."


def describe(signature, input_shape) -> list[tuple]:
    """The rows ``--list_layers`` prints for a SavedModel teacher: tensor, op type, shape."""
    listed = candidates(body(signature, "The teacher SavedModel"), input_shape)
    return [(c.tensor, c.op, c.shape) for c in listed]
