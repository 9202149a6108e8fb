"""A Keras teacher and the same model as a graph (its tf2onnx file, its ``model.export``
SavedModel) have the same blocks for hints='auto' (fitnets_tf.models.graph_blocks,
onnx_features, saved_model_features; fitnets_tf.hint_choice.feature_layers), choose the same
pair and get the same regressor."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import built_once

from fitnets_tf import hint_choice, hint_path, regressor
from fitnets_tf.export import writers
from fitnets_tf.models import (
    onnx_features,
    onnx_hints,
    onnx_model,
    saved_model,
    saved_model_features,
    saved_model_hints,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
helper, numpy_helper = onnx.helper, onnx.numpy_helper


def _teacher(kind: str) -> keras.Model:
    """8×8×1 → conv "c1" (ReLU) → ``kind``'s middle → global average pool → logits."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    if kind == "separable":
        h = keras.layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="s2")(h)
        h = keras.layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="s3")(h)
    elif kind in ("two_layers", "mobilenet"):  # a depthwise conv, then a 1x1 one
        activation = "relu" if kind == "mobilenet" else None
        h = keras.layers.DepthwiseConv2D(3, padding="same", activation=activation, name="dw2")(h)
        h = keras.layers.Conv2D(6, 1, activation="relu", name="pw2")(h)
        h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c3")(h)
    elif kind == "keepdims":  # a classifier written as a 1x1 conv on a 1x1 map (MobileNet's)
        h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
        h = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(h)
        h = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(3, 1, name="c3")(h))
        return keras.Model(inputs, h, name=kind)
    elif kind == "pooled":
        h = keras.layers.MaxPooling2D(2, name="p1")(h)
        h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
        h = keras.layers.MaxPooling2D(2, name="p2")(h)
        h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c3")(h)
    elif kind == "relu6":  # MobileNet's activation: tf2onnx writes it as a Clip(0, 6)
        h = keras.layers.Conv2D(6, 3, padding="same", name="c2")(h)
        h = keras.layers.MaxPooling2D(2, name="p2")(keras.layers.ReLU(6.0, name="r2")(h))
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name=kind)


def _student() -> keras.Model:
    """8×8×1 → three convs (2, 3, 3 channels), 8×8 maps each → logits."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    h = inputs
    for i, width in enumerate((2, 3, 3), 1):
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"g{i}")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="student")


def _exported(tmp_path_factory, kind: str):
    """``kind``'s teacher, its ONNX file and its SavedModel folder (built once a session)."""

    def build(folder):
        model = _teacher(kind)
        writers.write_onnx(model, folder / "teacher.onnx")
        model.export(folder / "saved", verbose=False)

    folder = built_once(tmp_path_factory, f"graph_blocks_{kind}", build)
    return (_teacher(kind), onnx_model.load(folder / "teacher.onnx"),
            saved_model.load(folder / "saved"))  # fmt: skip


def _layer(tensor: str) -> str:
    """The Keras layer a graph tensor of a traced model belongs to (``s2`` for tf2onnx's
    ``separable_1/s2_1/Relu:0`` and the SavedModel's ``separable_1/s2_1/Relu``)."""
    return re.sub(r"_\d+$", "", tensor.split("/")[1])


def _blocks(keras_teacher, onnx_teacher, saved_teacher) -> list:
    """Each teacher's feature maps: (layer, shape) for Keras, (layer, op, shape) for graphs."""
    graph = [[(_layer(c.tensor), c.op, c.shape) for c in module.of_teacher(teacher)]
             for module, teacher in ((onnx_features, onnx_teacher),
                                     (saved_model_features, saved_teacher))]  # fmt: skip
    ours = [(layer.name, tuple(layer.output.shape[1:]))
            for layer in hint_choice.feature_layers(keras_teacher)]  # fmt: skip
    return [ours, *graph]


def _check_agree(teachers, expected_keras, expected_graph):
    ours, from_onnx, from_saved = _blocks(*teachers)
    assert ours == expected_keras
    assert from_onnx == from_saved == expected_graph
    chosen = [hint_choice.auto_pair(t, _student()) for t in teachers]
    assert len({(_layer(c.hint_layer) if "/" in c.hint_layer else c.hint_layer, c.guided_layer)
                for c in chosen}) == 1  # fmt: skip


def test_a_separable_conv_is_one_block_in_its_graphs(tmp_path_factory):
    # Keras' SeparableConv2D is two ops in a graph, a depthwise conv read straight by a 1x1
    # one: its depthwise half ended a block of its own (5 blocks, not 3).
    _check_agree(_exported(tmp_path_factory, "separable"),
                 [("c1", (8, 8, 4)), ("s2", (8, 8, 6)), ("s3", (8, 8, 6))],
                 [("c1", "Relu", (8, 8, 4)), ("s2", "Relu", (8, 8, 6)),
                  ("s3", "Relu", (8, 8, 6))])  # fmt: skip


def test_a_linear_depthwise_conv_then_a_1x1_conv_is_one_block_as_a_separable_conv(
        tmp_path_factory):  # fmt: skip
    # Two Keras layers, one separable conv: no activation between, its graph is the separable
    # layer's (tf2onnx folds the depthwise bias into its Conv). Keras counted dw2 as a block.
    _check_agree(_exported(tmp_path_factory, "two_layers"),
                 [("c1", (8, 8, 4)), ("pw2", (8, 8, 6)), ("c3", (8, 8, 6))],
                 [("c1", "Relu", (8, 8, 4)), ("pw2", "Relu", (8, 8, 6)),
                  ("c3", "Relu", (8, 8, 6))])  # fmt: skip


def test_an_activation_between_depthwise_and_1x1_convs_keeps_two_blocks(tmp_path_factory):
    # MobileNet v1's layers: the depthwise conv's ReLU makes it a layer of its own.
    _check_agree(_exported(tmp_path_factory, "mobilenet"),
                 [("c1", (8, 8, 4)), ("dw2", (8, 8, 4)), ("pw2", (8, 8, 6)), ("c3", (8, 8, 6))],
                 [("c1", "Relu", (8, 8, 4)), ("dw2", "Relu", (8, 8, 4)),
                  ("pw2", "Relu", (8, 8, 6)), ("c3", "Relu", (8, 8, 6))])  # fmt: skip


def test_a_1x1_map_is_a_pooled_vector_not_a_block_s_end(tmp_path_factory):
    # GlobalAveragePooling2D(keepdims=True) and the 1x1 conv after it: maps with no spatial
    # information to hint. Keras counted gap and c3, tf2onnx's file a Reshape and c3 (its c2
    # lost), the SavedModel c2 and c3.
    _check_agree(_exported(tmp_path_factory, "keepdims"),
                 [("c1", (8, 8, 4)), ("c2", (8, 8, 6))],
                 [("c1", "Relu", (8, 8, 4)), ("c2", "Relu", (8, 8, 6))])  # fmt: skip


def test_a_max_pool_after_a_relu_gets_a_relu_regressor_as_in_keras(tmp_path_factory):
    # The hint p1 is a max pool of a ReLU's map: non-negative, as its Keras layer's. A graph's
    # MaxPool tensor got a linear regressor.
    keras_teacher, onnx_teacher, saved_teacher = _exported(tmp_path_factory, "pooled")
    _check_agree((keras_teacher, onnx_teacher, saved_teacher),
                 [("p1", (4, 4, 4)), ("p2", (2, 2, 6)), ("c3", (2, 2, 6))],
                 [("p1", "MaxPool", (4, 4, 4)), ("p2", "MaxPool", (2, 2, 6)),
                  ("c3", "Relu", (2, 2, 6))])  # fmt: skip
    student = _student()
    described = [regressor.describe(hint_path.make_regressor(keras_teacher, student, "p1", "g2"))]
    for teacher, module in ((onnx_teacher, onnx_features),
                            (saved_teacher, saved_model_features)):  # fmt: skip
        tensor = module.of_teacher(teacher)[0].tensor
        hinted = module.with_hints(teacher, [(tensor, "g2")])  # loaded with its hint
        name = onnx_hints.layer_name(tensor)
        described.append(regressor.describe(hint_path.make_regressor(hinted, student, name, "g2")))
    assert [d["activation"] for d in described] == ["relu", "relu", "relu"]
    assert described[0] == described[1] == described[2]


def test_a_relu6_hint_gets_a_relu6_regressor_as_in_keras(tmp_path_factory):
    # Keras' ReLU(6.) is a Relu6 op in the SavedModel and a Clip with min 0 and max 6 in
    # tf2onnx's file: both got a linear regressor, the Keras hint a relu6 one. Its max pool
    # (p2) too, as a max pool of a ReLU's map.
    keras_teacher, onnx_teacher, saved_teacher = _exported(tmp_path_factory, "relu6")
    student = _student()
    for hint in ("r2", "p2"):
        described = [regressor.describe(hint_path.make_regressor(keras_teacher, student, hint,
                                                                 "g2"))]  # fmt: skip
        for teacher, module, listed in (
            (onnx_teacher, onnx_features,
             onnx_hints.describe(onnx_model.onnx_layer(onnx_teacher), (8, 8, 1))),
            (saved_teacher, saved_model_features,
             saved_model_hints.describe(saved_model.signature_of(saved_teacher), (8, 8, 1))),
        ):  # fmt: skip
            ops = {"r2": ("Clip", "Relu6"), "p2": ("MaxPool",)}[hint]
            tensor = next(t for t, op, _ in listed if _layer(t) == hint and op in ops)
            hinted = module.with_hints(teacher, [(tensor, "g2")])
            name = onnx_hints.layer_name(tensor)
            described.append(regressor.describe(hint_path.make_regressor(hinted, student, name,
                                                                         "g2")))  # fmt: skip
        assert [d["activation"] for d in described] == ["relu6", "relu6", "relu6"], hint
        assert described[0] == described[1] == described[2]


# Attention: a product of two activations, which holds no weights.
R1, ATT, SUM, R2 = "r1", "attention", "sum", "r2"


def _attention_file() -> onnx.ModelProto:
    """(1, 8, 8) images → conv 4 + relu (R1) → R1 + (R1 · R1ᵀ) · R1 over the width (SUM) → conv
    4 + relu (R2), its weight an Identity of an initializer → global average pool → Gemm."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    init = [weight("w1", 4, 1, 3, 3), weight("w2", 4, 4, 3, 3), weight("fc.w", 3, 4)]
    pads = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], **pads),
        helper.make_node("Relu", ["c1"], [R1]),
        helper.make_node("Transpose", [R1], ["r1t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", [R1, "r1t"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", R1], [ATT]),
        helper.make_node("Add", [R1, ATT], [SUM]),
        helper.make_node("Identity", ["w2"], ["w2_copy"]),  # a weight computed from one
        helper.make_node("Conv", [SUM, "w2_copy"], ["c2"], **pads),
        helper.make_node("Relu", ["c2"], [R2]),
        helper.make_node("GlobalAveragePool", [R2], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w"], ["logits"], transB=1),
    ]
    images = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8])
    out = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "attention", [images], [out], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_an_onnx_product_of_two_activations_starts_no_block():
    # Only a MatMul with a weight operand is a layer's: the attention's two MatMuls each
    # started a block (R1, SUM, R2: R1 ended the conv's block before them). A weight computed
    # from an initializer (w2's Identity) is a weight.
    found = onnx_features.feature_maps(_attention_file(), (8, 8, 1), channels_first=True)
    assert [(c.tensor, c.shape) for c in found] == [(SUM, (8, 8, 4)), (R2, (8, 8, 4))]


def test_a_saved_model_product_of_two_activations_starts_no_block(tmp_path):
    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.k1 = tf.Variable(tf.random.stateless_normal((3, 3, 1, 4), seed=(1, 2)))
            self.k2 = tf.Variable(tf.random.stateless_normal((3, 3, 4, 4), seed=(3, 4)))
            self.dense = tf.Variable(tf.random.stateless_normal((4, 3), seed=(5, 6)))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def __call__(self, images):
            r1 = tf.nn.relu(tf.nn.conv2d(images, self.k1, 1, "SAME"), name="r1")
            scores = tf.nn.softmax(tf.matmul(r1, r1, transpose_b=True))  # BatchMatMulV2
            mixed = tf.add(r1, tf.matmul(scores, r1), name="sum")
            r2 = tf.nn.relu(tf.nn.conv2d(mixed, self.k2, 1, "SAME"), name="r2")
            return tf.reduce_mean(r2, axis=[1, 2]) @ self.dense

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "module"), signatures=module.__call__)
    found = saved_model_features.of_teacher(saved_model.load(tmp_path / "module"))
    assert [(c.tensor, c.shape) for c in found] == [("sum", (8, 8, 4)), ("r2", (8, 8, 4))]


def test_shape_inference_reads_a_file_s_shapes_not_its_weights():
    # hints='auto' read a large file's shapes with its weights copied for ONNX's shape
    # inference, which serializes its model again: several copies at once. A Reshape's
    # shape, a small initializer, is still read.
    rng = np.random.default_rng(0)
    kernel = numpy_helper.from_array(rng.normal(size=(64, 8, 3, 3)).astype(np.float32), "w")
    target = numpy_helper.from_array(np.array([-1, 64, 4, 16], np.int64), "target")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "target"], ["folded"]),
             helper.make_node("GlobalAveragePool", ["folded"], ["pooled"])]  # fmt: skip
    images = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 8, 8, 8])
    out = helper.make_tensor_value_info("pooled", onnx.TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "big", [images], [out], [kernel, target]),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    listed = onnx_hints.candidates(model, (8, 8, 8), channels_first=True)
    assert [(c.tensor, c.shape) for c in listed] == [
        ("c", (8, 8, 64)), ("r", (8, 8, 64)), ("folded", (4, 16, 64)), ("pooled", (1, 1, 64)),
    ]  # fmt: skip
    copied = {t.name: t for t in onnx_hints._without_weights(model).graph.initializer}
    assert not copied["w"].raw_data and list(copied["w"].dims) == [64, 8, 3, 3]
    assert copied["target"] == target


def _depthwise_first_file() -> onnx.ModelProto:
    """(2, 8, 8) images → depthwise conv (2 groups, no bias) → 1×1 conv + relu ("r1") → conv +
    relu ("r3") → global average pool → Gemm: a PyTorch file, its first conv on the input."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    init = [weight("dw", 2, 1, 3, 3), weight("pw", 4, 2, 1, 1), weight("w3", 4, 4, 3, 3),
            weight("fc.w", 3, 4)]  # fmt: skip
    pads = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["input", "dw"], ["d1"], group=2, **pads),
        helper.make_node("Conv", ["d1", "pw"], ["p1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["p1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w3"], ["c3"], **pads),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w"], ["logits"], transB=1),
    ]
    images = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 2, 8, 8])
    out = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "depthwise_first", [images], [out], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_depthwise_conv_on_the_file_s_input_is_one_block_with_its_1x1_conv():
    # A depthwise conv was told by its input's channels, known of the nodes' outputs alone: on
    # the images themselves (a channels-first file has no transpose before its first conv) it
    # was an ordinary conv, and the separable conv two blocks ("d1" ended the first).
    found = onnx_features.feature_maps(_depthwise_first_file(), (8, 8, 2), channels_first=True)
    assert [(c.tensor, c.shape) for c in found] == [("r1", (8, 8, 4)), ("r3", (8, 8, 4))]
