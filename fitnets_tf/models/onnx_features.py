"""An ONNX teacher's feature maps: the tensors ending its blocks, which ``hints='auto'`` chooses
among (:func:`fitnets_tf.hint_choice.auto_pair`), and the teacher loaded again to fetch the one
chosen.

A file has no layers, but the paper's "layer" is found in its graph as in a Keras model's
(:func:`fitnets_tf.hint_choice.feature_layers`): a block starts at a node with weights (a
convolution or a matrix product) and ends, before the next one, at the last 4-D activation
that every path from the input passes through (after a residual sum, never inside a block).
So a PyTorch ResNet's block ends at the ReLU after its sum, a VGG's at its max pool. Shapes
are channels last, whatever the file's layout (:func:`~fitnets_tf.models.onnx_hints.candidates`
reads PyTorch's NCHW tensors as ``(H, W, C)``), so they compare with a Keras student's.
"""

from __future__ import annotations

import keras

from fitnets_tf.models import graph_blocks, onnx_hints, onnx_model

# Nodes starting a block: those that hold a layer's weights (checked: an operand is a weight).
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# A block's map passes through these unchanged, or only re-laid out (tf2onnx's transposes
# between a Keras file's NHWC and its convolutions' NCHW): the hint is the map before them, as
# a Keras hint is taken before dropout. They may sit between a separable conv's two halves.
_LAYOUT = {"Dropout", "Identity", "Transpose", "Cast"}
# 4-D in ONNX, (N, C) in Keras: a pooled vector, not a map (Keras' global pooling). PyTorch's
# dynamo exporter writes AdaptiveAvgPool2d(1) and x.mean((2, 3), keepdim=True) as a ReduceMean:
# a reduction (over H and W, or any axis) is never a block's output; nor is a Pad (the map
# framed: the hint is the map before it, as a Keras hint is taken before zero padding).
_VECTORS = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}


def _pooled(op_type: str) -> bool:
    return op_type in _VECTORS or op_type.startswith("Reduce")


def _role(node, channels: dict, weights: dict) -> str:
    """``node``'s part in a block (:class:`~fitnets_tf.models.graph_blocks.Node`);
    ``channels``: each map's channels; ``weights``: each initializer's dims."""
    if node.op_type == "Conv":
        return _conv_role(node, channels, weights)
    if node.op_type in _WEIGHTED:
        return graph_blocks.WEIGHTED
    if node.op_type in _LAYOUT:
        return graph_blocks.LAYOUT
    if node.op_type == "Pad" or _pooled(node.op_type):
        return graph_blocks.SKIPPED
    return graph_blocks.BIAS if node.op_type == "Add" else ""


def _conv_role(node, channels: dict, weights: dict) -> str:
    """A depthwise conv (as many groups as input channels), a pointwise one (1×1, one group)
    or another: a separable conv is the two first, one block."""
    attributes = {a.name: a for a in node.attribute}
    group = attributes["group"].i if "group" in attributes else 1
    if group > 1 and channels.get(node.input[0]) == group:
        return graph_blocks.DEPTHWISE
    dims = weights.get(node.input[1], ())
    kernel = list(attributes["kernel_shape"].ints) if "kernel_shape" in attributes else dims[2:]
    return graph_blocks.POINTWISE if group == 1 and kernel == [1, 1] else graph_blocks.WEIGHTED


def feature_maps(model, input_shape, channels_first: bool) -> list[onnx_hints.Candidate]:
    """The block outputs of the ONNX ``model`` (a ``ModelProto``) for images of
    ``input_shape`` ``(H, W, C)``, input to output
    (:func:`~fitnets_tf.models.graph_blocks.block_outputs`); ``channels_first``: the images'
    layout in the file."""
    listed = onnx_hints.candidates(model, input_shape, channels_first)
    maps = {c.tensor: c for c in listed if graph_blocks.spatial(c.shape)}
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    images = {i.name for i in model.graph.input if i.name not in weights}
    # The images' channels too: a channels-first file's first conv reads them, no node's output.
    channels = {c.tensor: c.shape[-1] for c in listed} | dict.fromkeys(images, input_shape[-1])
    nodes = [graph_blocks.Node(tuple(n.input), tuple(n.output), _role(n, channels, weights))
             for n in model.graph.node]  # fmt: skip
    return graph_blocks.block_outputs(nodes, images, maps)


def of_teacher(teacher: keras.Model) -> list[onnx_hints.Candidate]:
    """:func:`feature_maps` of the file of the ONNX teacher ``teacher`` (loaded with or without
    hints), for the images its input takes."""
    import onnx  # noqa: PLC0415  (installed with ONNX Runtime, the export extra's)

    layer = onnx_model.onnx_layer(teacher)
    parsed = onnx.load(str(layer.onnx_path), load_external_data=False)
    return feature_maps(parsed, tuple(teacher.inputs[0].shape[1:]), layer.channels_first)


def with_hints(teacher: keras.Model, pairs) -> keras.Model:
    """``teacher`` fetching the hint tensors of ``pairs`` (hint, guided): an ONNX teacher that
    lacks one is loaded again from its file with them (the hints chosen after it was loaded:
    ``hints='auto'``); any other teacher, or one that has them, is ``teacher`` itself."""
    layer = onnx_model.onnx_layer(teacher)
    if layer is None:
        return teacher
    have = [onnx_hints.layer_name(t) for t in layer.hints]
    tensors = [hint for hint, _ in pairs]
    if all(onnx_hints.layer_name(t) in have for t in tensors):
        return teacher
    shape = tuple(teacher.inputs[0].shape[1:])
    return onnx_model.load(layer.onnx_path, shape, hints=[*layer.hints, *tensors])
