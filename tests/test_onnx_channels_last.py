"""Hints from a channels-last ONNX teacher (a Keras model's, converted by tf2onnx): its input is
NHWC, and its convolutions, ONNX's, still take and give NCHW tensors."""

import keras
import numpy as np
import pytest

from fitnets_tf import hint_path
from fitnets_tf.models import onnx_hints, onnx_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, numpy_helper = onnx.helper, onnx.numpy_helper

# tf2onnx's names and structure: the images scaled as they come (NHWC), transposed for the
# first Conv, convolved in NCHW, transposed back for Keras' Flatten.
SCALED, TO_NCHW = "model/scale/mul:0", "Transpose__10:0"
CONV1, RELU1, POOL1 = "model/conv1/convolution:0", "model/conv1/Relu:0", "model/pool1/MaxPool:0"
CONV2, RELU2, TO_NHWC = "model/conv2/convolution:0", "model/relu2/Relu:0", "Transpose__20:0"


def _keras_like(classes=3, upto=None) -> onnx.ModelProto:
    """8x8x2 images (NHWC) -> scale -> conv 4 + relu -> max pool -> conv 6 + relu -> flatten
    (channels last) -> dense; ``upto``: the graph ends at that tensor (ONNX Runtime's view)."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    init = [weight("c1.w", 4, 2, 3, 3), weight("c1.b", 4), weight("c2.w", 6, 4, 3, 3),
            weight("c2.b", 6), weight("fc.w", 4 * 4 * 6, classes), weight("fc.b", classes),
            numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
            numpy_helper.from_array(np.array([-1, 4 * 4 * 6], np.int64), "flat_shape")]  # fmt: skip
    pads = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Mul", ["images", "scale"], [SCALED]),
        helper.make_node("Transpose", [SCALED], [TO_NCHW], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", [TO_NCHW, "c1.w", "c1.b"], [CONV1], **pads),
        helper.make_node("Relu", [CONV1], [RELU1]),
        helper.make_node("MaxPool", [RELU1], [POOL1], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", [POOL1, "c2.w", "c2.b"], [CONV2], **pads),
        helper.make_node("Relu", [CONV2], [RELU2]),
        helper.make_node("Transpose", [RELU2], [TO_NHWC], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", [TO_NHWC, "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc.w"], ["dense"]),
        helper.make_node("Add", ["dense", "fc.b"], ["logits"]),
    ]
    if upto is not None:
        nodes = nodes[: [n.output[0] for n in nodes].index(upto) + 1]
    out = helper.make_tensor_value_info(upto or "logits", onnx.TensorProto.FLOAT, None)
    images = helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 8, 8, 2])
    graph = helper.make_graph(nodes, "keras_like", [images], [out], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _ort(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


@pytest.fixture(scope="module")
def keras_like_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_nhwc") / "keras_like.onnx"
    onnx.save(_keras_like(), str(path))
    return path


def test_the_candidates_shapes_are_channels_last_whatever_each_tensors_layout(keras_like_file):
    teacher = onnx_model.load(keras_like_file, (8, 8, 2))
    assert not teacher.get_layer("onnx_model").channels_first
    # What --list_layers prints.
    assert onnx_hints.describe(teacher.get_layer("onnx_model"), (8, 8, 2)) == [
        (SCALED, "Mul", (8, 8, 2)), (TO_NCHW, "Transpose", (8, 8, 2)),
        (CONV1, "Conv", (8, 8, 4)), (RELU1, "Relu", (8, 8, 4)), (POOL1, "MaxPool", (4, 4, 4)),
        (CONV2, "Conv", (4, 4, 6)), (RELU2, "Relu", (4, 4, 6)), (TO_NHWC, "Transpose", (4, 4, 6)),
    ]  # fmt: skip


def test_each_hint_is_the_tensor_onnxruntime_computes_channels_last(keras_like_file):
    x = np.random.default_rng(1).uniform(size=(5, 8, 8, 2)).astype(np.float32)
    hints = [SCALED, RELU1, POOL1, TO_NHWC]
    teacher = onnx_model.load(keras_like_file, (8, 8, 2), hints=hints)
    for tensor, nchw in ((SCALED, False), (RELU1, True), (POOL1, True), (TO_NHWC, False)):
        expected = _ort(_keras_like(upto=tensor), x)
        expected = expected.transpose(0, 2, 3, 1) if nchw else expected
        tapped = hint_path.tap(teacher, [onnx_hints.layer_name(tensor)], "hint")
        assert tapped.output.shape[1:] == expected.shape[1:], tensor
        np.testing.assert_allclose(tapped(x), expected, atol=1e-5, err_msg=tensor)
    np.testing.assert_allclose(teacher(x), _ort(_keras_like(), x), atol=1e-5)


def test_hints_of_a_keras_model_converted_by_tf2onnx_are_its_layers_outputs(tmp_path):
    pytest.importorskip("tf2onnx")
    from fitnets_tf.export import writers  # noqa: PLC0415  (tf2onnx: the export extra's)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool1")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv2")(h)
    h = keras.layers.ReLU(name="relu2")(h)
    outputs = keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs, name="keras_teacher")
    writers.write_onnx(model, tmp_path / "teacher.onnx")
    # tf2onnx's names carry Keras' of the moment (`keras_teacher_1/conv1_1/Relu:0`): the two
    # Relu tensors, found by their node, are conv1's and relu2's.
    listed = onnx_hints.candidates(onnx.load(str(tmp_path / "teacher.onnx")), (8, 8, 1), False)
    relus = [c for c in listed if c.op == "Relu"]
    assert [c.shape for c in relus] == [(8, 8, 4), (4, 4, 6)]
    teacher = onnx_model.load(tmp_path / "teacher.onnx", hints=[c.tensor for c in relus])
    x = np.random.default_rng(1).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    for candidate, layer in zip(relus, ("conv1", "relu2"), strict=True):
        tapped = hint_path.tap(teacher, [onnx_hints.layer_name(candidate.tensor)], "hint")
        expected = hint_path.tap(model, [layer], "keras")(x)
        np.testing.assert_allclose(tapped(x), expected, atol=1e-5, err_msg=layer)
