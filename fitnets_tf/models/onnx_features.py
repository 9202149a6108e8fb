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

# Nodes starting a block: those that hold a layer's weights.
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# A block's map passes through these unchanged, or only framed or re-laid out (tf2onnx's
# transposes between a Keras file's NHWC and its convolutions' NCHW): the hint is the map
# before them, as a Keras hint is taken before dropout and zero padding.
_PASS_THROUGH = {"Dropout", "Identity", "Pad", "Transpose", "Cast"}
# 4-D in ONNX, (N, C) in Keras: a pooled vector, not a map (Keras' global pooling). PyTorch's
# dynamo exporter writes AdaptiveAvgPool2d(1) and x.mean((2, 3), keepdim=True) as a ReduceMean:
# a reduction (over H and W, or any axis) is never a block's output.
_VECTORS = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}


def _pooled(op_type: str) -> bool:
    return op_type in _VECTORS or op_type.startswith("Reduce")


def _role(op_type: str) -> str:
    if op_type in _WEIGHTED:
        return graph_blocks.WEIGHTED
    skipped = op_type in _PASS_THROUGH or _pooled(op_type)
    return graph_blocks.SKIPPED if skipped else ""


def feature_maps(model, input_shape, channels_first: bool) -> list[onnx_hints.Candidate]:
    """The block outputs of the ONNX ``model`` (a ``ModelProto``) for images of
    ``input_shape`` ``(H, W, C)``, input to output
    (:func:`~fitnets_tf.models.graph_blocks.block_outputs`); ``channels_first``: the images'
    layout in the file."""
    maps = {c.tensor: c for c in onnx_hints.candidates(model, input_shape, channels_first)}
    nodes = [graph_blocks.Node(tuple(n.input), tuple(n.output), _role(n.op_type))
             for n in model.graph.node]  # fmt: skip
    weights = {w.name for w in model.graph.initializer}
    images = {i.name for i in model.graph.input if i.name not in weights}
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
