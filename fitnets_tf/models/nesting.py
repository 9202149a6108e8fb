"""Models nested in models, brought to the top level so that their layers can be tapped.

People build a teacher around a backbone: ``keras.Sequential([keras.applications.MobileNetV2(
include_top=False), GlobalAveragePooling2D(), Dense(10)])``, or a Functional model calling a
block that is itself a model. Keras lists such a backbone as *one* layer, whose ``output`` is
a tensor of its own graph, not of the outer model's: a hint inside it cannot be named, and a
tap of the backbone itself fails deep in Keras ("Output with path `` is not connected to
`inputs`"). The middle of the teacher, the paper's hint, is usually inside the backbone.

:func:`flattened` calls every layer of the nested models on the outer model's tensors, in
their order: the same layer objects (weights shared, nothing copied), one Functional graph.
"""

from __future__ import annotations

import collections
import weakref

import keras

# {flattened model: {nested model's name: the layer giving its output}}: beside the model, not
# an attribute of it, which Keras would track (and a checkpoint might then key).
_ENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def nested_models(model: keras.Model) -> list[keras.Model]:
    """The models among ``model``'s layers, at any depth (a nested one's own nested ones too)."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += [layer, *nested_models(layer)]
    return out


def repeated_names(model: keras.Model) -> list[str]:
    """Layer names used more than once once ``model``'s nested models are flattened (Keras
    refuses a model whose layers share a name, so such a model stays nested)."""
    counts = collections.Counter(layer.name for layer in _leaf_layers(model))
    return sorted(name for name, n in counts.items() if n > 1)


def _leaf_layers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out += _leaf_layers(layer) if is_graph(layer) else [layer]
    return out


def is_graph(layer) -> bool:
    """Whether ``layer`` is a Functional or Sequential model: a graph of layers."""
    # Functional and Sequential models are graphs of layers; a subclassed model's ``call`` is
    # code, with no layer outputs to tap, so it stays one layer. Keras does not export its
    # Functional class: it is found by name among the model's bases, and must run its graph.
    if isinstance(layer, keras.Sequential):
        return True
    if not isinstance(layer, keras.Model):
        return False
    functional = [c for c in type(layer).__mro__ if c.__name__ == "Functional"]
    return bool(functional) and type(layer).call is functional[0].call


def flattened(model: keras.Model) -> keras.Model:
    """``model`` with the layers of its nested Functional and Sequential models at the top level
    (a new Functional model sharing every layer), or ``model`` itself when it nests none, is
    subclassed, or when flattening would give two layers the same name.

    The model computes the same function: each layer is called on the same inputs, with the
    same arguments, and ``training`` reaches it from the outer call as it did through the
    nested model.
    """
    if not any(is_graph(layer) for layer in model.layers) or repeated_names(model):
        return model
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):  # not built: nothing to tap anyway
        return model
    fresh = [keras.Input(batch_shape=x.shape, dtype=x.dtype, name=_input_name(model, i))
             for i, x in enumerate(inputs)]  # fmt: skip
    ends = {}
    outputs = _call_graph(model, fresh, ends)
    flat = keras.Model(fresh[0] if len(fresh) == 1 else fresh,
                       outputs[0] if len(outputs) == 1 else outputs, name=model.name)  # fmt: skip
    _ENDS[flat] = ends
    return flat


def nested_model_end(model: keras.Model, name: str) -> str | None:
    """The layer that gives the output of the nested model ``name`` in the flattened ``model``
    (what a user naming the backbone means), or None."""
    return _ENDS.get(model, {}).get(name)


def _input_name(model: keras.Model, i: int) -> str | None:
    names = [layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)]
    return names[i] if i < len(names) else None


def _call_graph(model: keras.Model, inputs: list, ends: dict) -> list:
    """``model``'s outputs computed from ``inputs`` layer by layer, nested graphs inlined;
    ``ends`` gets ``{nested model: the layer giving its output}``."""
    if isinstance(model, keras.Sequential):
        (x,) = inputs
        for layer in model.layers:
            x = _call_nested(layer, [x], ends)[0] if is_graph(layer) else layer(x)
        return [x]
    known = {id(t): x for t, x in zip(model.inputs, inputs, strict=True)}
    graph = _graph_tensors(model)
    # A layer's nodes include its calls in other graphs (a nested model's own graph, another
    # model sharing the layer): keep those whose outputs this model's outputs depend on.
    pending = [(layer, node) for layer in model.layers
               if not isinstance(layer, keras.layers.InputLayer)
               for node in list(layer._inbound_nodes)
               if any(id(t) in graph for t in node.outputs)]  # fmt: skip
    while pending:
        ready = [p for p in pending if all(id(t) in known for t in _node_inputs(p[1]))]
        if not ready:
            raise ValueError(f"The graph of {model.name!r} could not be traversed.")
        for layer, node in ready:
            pending.remove((layer, node))
            _call_node(layer, node, known, ends)
    return [known[id(t)] for t in model.outputs]


def _graph_tensors(model: keras.Model) -> set:
    """The ids of the tensors ``model``'s outputs are computed from."""
    seen, stack = set(), list(model.outputs)
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        history = getattr(t, "_keras_history", None)
        if history is not None:
            node = history.operation._inbound_nodes[history.node_index]
            stack += _node_inputs(node)
    return seen


def _node_inputs(node) -> list:
    return [t for t in keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
            if isinstance(t, keras.KerasTensor)]  # fmt: skip


def _call_nested(model: keras.Model, inputs: list, ends: dict) -> list:
    outputs = _call_graph(model, inputs, ends)
    if len(outputs) == 1:
        ends[model.name] = outputs[0]._keras_history.operation.name
    return outputs


def _call_node(layer, node, known: dict, ends: dict) -> None:
    def swap(value):
        return known[id(value)] if isinstance(value, keras.KerasTensor) else value

    args = keras.tree.map_structure(swap, node.arguments.args)
    kwargs = keras.tree.map_structure(swap, node.arguments.kwargs)
    if is_graph(layer):
        outputs = _call_nested(layer, keras.tree.flatten(args), ends)
    else:
        outputs = keras.tree.flatten(layer(*args, **kwargs))
    for tensor, value in zip(keras.tree.flatten(node.outputs), outputs, strict=True):
        known[id(tensor)] = value


def own_nodes(model: keras.Model, layer) -> list:
    """The nodes of ``layer`` (its calls) in ``model``'s graph, in their order.

    A layer of a flattened model was also called in its nested model's graph, and
    ``layer.output`` is its *first* call's: a tap built from it would be connected to the
    nested model's input, not to ``model``'s, and its shape that of the nested graph.
    """
    nodes = list(getattr(layer, "_inbound_nodes", []))
    if len(nodes) <= 1:
        return nodes
    graph = _graph_tensors(model)
    own = [node for node in nodes if any(id(t) in graph for t in node.outputs)]
    return own or nodes


def layer_output(model: keras.Model, name: str):
    """The output of ``model``'s layer ``name`` in ``model``'s own graph (see :func:`own_nodes`);
    ``layer.output`` for a layer called once."""
    layer = model.get_layer(name)
    nodes = own_nodes(model, layer)
    if len(nodes) != 1:
        return layer.output  # a layer shared within the model: Keras' choice, its first call
    outputs = nodes[0].outputs
    return outputs[0] if len(outputs) == 1 else outputs


def layer_input(model: keras.Model, layer):
    """The input of ``layer`` in ``model``'s own graph (see :func:`own_nodes`)."""
    nodes = own_nodes(model, layer)
    if len(nodes) != 1:
        return layer.input
    inputs = nodes[0].input_tensors
    return inputs[0] if len(inputs) == 1 else inputs
