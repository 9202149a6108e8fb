"""A SavedModel teacher's feature maps: the tensors ending the blocks of its signature's graph,
which ``hints='auto'`` chooses among (:func:`fitnets_tf.hint_choice.auto_pair`), and the
teacher loaded again to fetch the one chosen.

The blocks are found in the body the signature calls
(:mod:`~fitnets_tf.models.saved_model_hints`) by the rule an ONNX file's are
(:func:`~fitnets_tf.models.graph_blocks.block_outputs`): a block starts at an op with weights
(a convolution, a matrix product) and ends at the last 4-D activation every path from the
images passes through. So a Keras model exported ends its blocks where its own layers would
(``teacher_1/pool1_1/MaxPool2d``, a residual block's ReLU after its sum).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.errors import ConfigError
from fitnets_tf.models import graph_blocks, saved_model, saved_model_hints
from fitnets_tf.models.onnx_hints import Candidate

# Ops that hold a layer's weights (Keras' Conv2D, DepthwiseConv2D, Conv2DTranspose, Dense,
# EinsumDense; tf.nn's convolutions and products), checked: an operand is a weight.
_WEIGHTED = {"Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput",
             "Conv3DBackpropInputV2", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3",
             "Einsum"}  # fmt: skip
# A block's map passes through these unchanged, or only re-laid out: the hint is the map
# before them (Keras wraps a custom gradient's output in an IdentityN). They may sit between a
# separable conv's two halves, as may a bias added (Keras' DepthwiseConv2D adds its own).
_LAYOUT = {"Identity", "IdentityN", "StopGradient", "Transpose", "Cast"}
_BIASES = {"BiasAdd", "Add", "AddV2"}
# Framed: never a block's output either (the hint is the map before, as a Keras hint is taken
# before zero padding).
_PADS = {"Pad", "PadV2", "MirrorPad"}
# Keras' global pooling: a reduction over H and W, a vector even when its axes are kept.
_REDUCTIONS = {"Mean", "Max", "Min", "Sum", "Prod", "EuclideanNorm"}


def _pooled(op) -> bool:
    """A reduction over the H and W axes of a map (a maxout's Max over its pieces is not)."""
    if op.type not in _REDUCTIONS or op.inputs[0].shape.rank != 4:
        return False
    axes = tf.get_static_value(op.inputs[1])
    return axes is not None and {1, 2} <= {int(a) % 4 for a in np.ravel(axes)}


def _role(op) -> str:
    """``op``'s part in a block (:class:`~fitnets_tf.models.graph_blocks.Node`)."""
    if op.type == "DepthwiseConv2dNative":
        return graph_blocks.DEPTHWISE
    if op.type == "Conv2D" and tuple(op.inputs[1].shape[:2]) == (1, 1):
        return graph_blocks.POINTWISE  # a separable conv's second half, or a conv of its own
    if op.type in _WEIGHTED:
        return graph_blocks.WEIGHTED
    if op.type in _LAYOUT:
        return graph_blocks.LAYOUT
    if op.type in _PADS or _pooled(op):
        return graph_blocks.SKIPPED
    return graph_blocks.BIAS if op.type in _BIASES else ""


def feature_maps(body: saved_model_hints.Body, input_shape) -> list[Candidate]:
    """The block outputs of the SavedModel ``body`` for images of ``input_shape`` ``(H, W, C)``,
    input to output."""
    function = saved_model_hints.function(body, input_shape)
    prefix = f"{saved_model_hints.PREFIX}/"
    maps = {prefix + saved_model_hints.tensor_name(c.tensor): c
            for c in saved_model_hints.activations(function.graph)
            if graph_blocks.spatial(c.shape)}  # fmt: skip

    def floats(tensors):  # a path of the images' values (their shapes, ints, are no feature)
        return tuple(t.name for t in tensors if t.dtype.is_floating)

    nodes = [graph_blocks.Node(floats(op.inputs), floats(op.outputs), _role(op))
             for op in function.graph.get_operations() if op.name.startswith(prefix)]  # fmt: skip
    return graph_blocks.block_outputs(nodes, {function.inputs[0].name}, maps)


def of_teacher(teacher: keras.Model) -> list[Candidate]:
    """:func:`feature_maps` of the SavedModel teacher ``teacher`` (loaded with or without
    hints), for the images its input takes.

    Raises:
        ConfigError: it takes images of any size, whose maps have no shape to compare.
    """
    shape = tuple(teacher.inputs[0].shape[1:])
    if None in shape:
        raise ConfigError(f"The teacher SavedModel {teacher.name!r} takes images of any size "
                          f"{shape}, and hints='auto' compares its maps' shapes with the "
                          "student's: give their size, load(path, input_shape=(H, W, C)).")  # fmt: skip
    body = saved_model_hints.body(saved_model.signature_of(teacher), "The teacher SavedModel")
    return feature_maps(body, shape)


def with_hints(teacher: keras.Model, pairs) -> keras.Model:
    """``teacher`` fetching the hint tensors of ``pairs`` (hint, guided): a SavedModel teacher
    that lacks one is loaded again from its folder with them, on its loaded signature (the
    hints chosen after it was loaded: ``hints='auto'``); any other teacher, or one that has
    them, is ``teacher``."""
    layer = _signature_layer(teacher)
    if layer is None:
        return teacher
    have = [saved_model_hints.short_name(t) for t in getattr(layer, "hints", [])]
    tensors = [hint for hint, _ in pairs]
    if all(saved_model_hints.short_name(t) in have for t in tensors):
        return teacher
    signature = getattr(layer, "signature", layer)  # the TFSMLayer a hinted teacher holds
    shape = tuple(teacher.inputs[0].shape[1:])
    # Its variables shared, not loaded once more: a large teacher held twice in memory.
    return saved_model.load(signature.filepath, shape, hints=[*have, *tensors],
                            signature=signature)  # fmt: skip


def _signature_layer(teacher: keras.Model):
    for layer in teacher.layers:
        if isinstance(layer, (saved_model.SavedModelTeacher, keras.layers.TFSMLayer)):
            return layer
    return None
