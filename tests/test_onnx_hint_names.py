"""An ONNX teacher's hint tensors whose Keras layer names would collide (onnx_hints.layer_name
turns `/` into `.`): each hint must be the tensor named, or be refused naming the others."""

import numpy as np
import pytest
from conftest import tiny_data

from fitnets_tf import errors, hint_path
from fitnets_tf.models import onnx_hints, onnx_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, numpy_helper = onnx.helper, onnx.numpy_helper


def _colliding(size=8, classes=3) -> onnx.ModelProto:
    """Channels-first 4-D activations whose names meet once `/` is `.`: `a.b` (a Relu of the
    images), then `/a/b` (its negation), then `/x/y` and `x/y` (neither is `x.y`), then one
    named `onnx_model`, the name of the layer that runs the file; pooled into the logits."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.normal(0, 0.5, (classes, 1)).astype(np.float32), "fc.w"),
            numpy_helper.from_array(np.zeros(classes, np.float32), "fc.b")]  # fmt: skip
    nodes = [
        helper.make_node("Relu", ["input"], ["a.b"]),
        helper.make_node("Neg", ["a.b"], ["/a/b"]),
        helper.make_node("Sigmoid", ["/a/b"], ["/x/y"]),
        helper.make_node("Abs", ["/x/y"], ["x/y"]),
        helper.make_node("Tanh", ["x/y"], ["onnx_model"]),
        helper.make_node("GlobalAveragePool", ["onnx_model"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    images = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 1, size, size])
    logits = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "colliding", [images], [logits], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def colliding_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_names") / "colliding.onnx"
    onnx.save(_colliding(), str(path))
    return path


def test_a_name_that_is_a_tensor_of_the_file_is_that_tensor(colliding_file):
    # `a.b` is a tensor, and also what `/a/b` becomes as a layer: the tensor wins.
    x, _ = tiny_data(4)
    teacher = onnx_model.load(colliding_file, (8, 8, 1), hints=["a.b"])
    assert teacher.get_layer("onnx_model").hints == ["a.b"]
    tapped = hint_path.tap(teacher, ["a.b"], "hint")
    np.testing.assert_allclose(tapped(x), np.maximum(x, 0), atol=1e-6)


def test_a_hint_whose_layer_name_stands_for_another_tensor_is_refused(colliding_file):
    # `/a/b`'s layer would be `a.b`, another tensor's name: the logs, hints.json and a pair
    # naming the layer would all mean the other tensor.
    with pytest.raises(errors.ConfigError, match=r"'/a/b'.*layer 'a\.b'.*the tensor 'a\.b'.*"
                       r"rename"):
        onnx_model.load(colliding_file, (8, 8, 1), hints=["/a/b"])
    with pytest.raises(errors.ConfigError, match=r"'/a/b'.*'a\.b'"):
        onnx_model.load(colliding_file, (8, 8, 1), hints=["a.b", "/a/b"])


def test_a_layer_name_two_tensors_share_is_refused_naming_both(colliding_file):
    # `x.y` is no tensor, and both `/x/y` and `x/y` become it.
    with pytest.raises(errors.ConfigError, match=r"'x\.y'.*both '/x/y' and 'x/y'.*name the "
                       r"tensor itself"):
        onnx_model.load(colliding_file, (8, 8, 1), hints=["x.y"])
    with pytest.raises(errors.ConfigError, match=r"'/x/y'.*layer 'x\.y'.*the tensor 'x/y'"):
        onnx_model.load(colliding_file, (8, 8, 1), hints=["/x/y"])


def test_a_hint_named_as_a_layer_of_the_teachers_model_is_refused(colliding_file):
    with pytest.raises(errors.ConfigError, match=r"'onnx_model'.*a layer the teacher's Keras "
                       r"model has already.*rename"):
        onnx_model.load(colliding_file, (8, 8, 1), hints=["onnx_model"])


def test_a_pair_names_its_hint_by_tensor_or_layer(colliding_file):
    teacher = onnx_model.load(colliding_file, (8, 8, 1), hints=["a.b"])
    assert hint_path.layer_pairs(teacher, [("a.b", "conv1")]) == [("a.b", "conv1")]
    assert onnx_hints.layer_name("/layer2/relu/Relu_output_0") == "layer2.relu.Relu_output_0"
