"""Which axis of each 4-D tensor of an ONNX file holds the channels.

A file records no layout, and its input's does not decide its inner tensors': ONNX's image
operators (``Conv``, the poolings, ``BatchNormalization``...) take and give ``(N, C, H, W)``
whatever the input, so a channels-last file (tf2onnx's, from a Keras model) transposes its
images for its first ``Conv`` (or reshapes them, for one channel) and may transpose them back
(before a Keras ``Flatten``), and a channels-first one may transpose too (a PyTorch
``permute``). Each tensor's layout is therefore traced through the graph
(:func:`channels_first`).
"""

from __future__ import annotations

# Operators whose first input and first output are (N, C, H, W) by their definition.
IMAGE_OPS = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv", "MaxPool",
    "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "BatchNormalization", "InstanceNormalization", "GroupNormalization", "LRN", "MaxUnpool",
    "DepthToSpace", "SpaceToDepth",
})  # fmt: skip

# Operators whose 4-D output has the axes of their 4-D inputs: element-wise ones (with
# broadcasting), and those acting along an axis without moving it.
KEEP_LAYOUT = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "Erf", "Exp", "Log", "Abs", "Neg",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Clip", "Cast", "Identity",
    "Dropout", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where",
    "Concat", "Split", "Slice", "Pad", "Resize", "Upsample", "Softmax", "LogSoftmax",
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "DequantizeLinear",
    "QuantizeLinear",
})  # fmt: skip

_FIRST, _LAST = "NCHW", "NHWC"


def channels_first(model, image: str, image_channels_first: bool, ranks: dict) -> dict:
    """``{tensor: whether it is (N, C, H, W)}`` for each 4-D tensor of the ONNX ``model``, the
    image input ``image`` being as ``image_channels_first`` says; ``ranks``: each tensor's
    rank where shape inference knows it. An image operator's input and output are
    channels-first; a ``Transpose`` permutes its input's axes; an element-wise operator keeps
    its 4-D inputs' (both ways: a ``Reshape`` feeding a ``Relu`` feeding a ``Conv`` is
    channels-first). A tensor none of these reach (a ``Reshape`` to 4-D alone) is taken in the
    image input's layout, the framework's the file came from; one whose axes are no image's
    (a transpose of a spatial axis to the channels' place) is left out."""
    nodes = list(model.graph.node)
    layouts = {image: _FIRST if image_channels_first else _LAST}
    for node in nodes:  # by definition, over anything traced
        if node.op_type in IMAGE_OPS and node.input and node.output:
            layouts[node.input[0]] = layouts[node.output[0]] = _FIRST
    changed = True
    while changed:  # each pass settles at least one tensor, or ends
        changed = False
        for node in (*nodes, *reversed(nodes)):
            for tensor, layout in _implied(node, layouts, ranks):
                if tensor not in layouts:
                    layouts[tensor], changed = layout, True
    default = layouts[image]
    # A transpose that takes a spatial axis to the channels' place makes no image (NCWH...).
    return {t: layouts.get(t, default) == _FIRST for t, rank in ranks.items()
            if rank == 4 and layouts.get(t, default) in (_FIRST, _LAST)}  # fmt: skip


def _implied(node, layouts: dict, ranks: dict) -> list[tuple[str, str]]:
    """The layouts ``node`` gives the untraced 4-D tensors it touches, from its traced ones."""
    if node.op_type == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [3, 2, 1, 0])
        source, target = node.input[0], node.output[0]
        if source in layouts:  # output axis i is input axis perm[i]
            return [(target, "".join(layouts[source][p] for p in perm))]
        if target in layouts:
            inverse = [perm.index(i) for i in range(4)]
            return [(source, "".join(layouts[target][p] for p in inverse))]
        return []
    if node.op_type not in KEEP_LAYOUT:
        return []
    tensors = [t for t in (*node.input, *node.output) if ranks.get(t) == 4]
    known = [layouts[t] for t in tensors if t in layouts]
    return [(t, known[0]) for t in tensors if t not in layouts] if known else []
