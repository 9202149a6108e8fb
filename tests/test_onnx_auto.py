"""hints='auto' for an ONNX teacher: the paper's rule over the block outputs of its file
(fitnets_tf.models.onnx_features, fitnets_tf.hint_choice.auto_pair)."""

import json

import keras
import numpy as np
import pytest
from conftest import tiny_model, train_cli

from fitnets_tf import Distiller, errors, hint_choice, hint_path
from fitnets_tf import config as config_lib
from fitnets_tf.export import writers
from fitnets_tf.models import onnx_features, onnx_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
helper, numpy_helper = onnx.helper, onnx.numpy_helper

# The dynamo exporter's names (PyTorch 2.9): module paths.
R1, P2, R3 = "/stem/relu/Relu_output_0", "/block/pool/MaxPool_output_0", "/head/relu/Relu_output_0"
SUM = "/block/Add_output_0"


def _torch_like(height=8, width=12, classes=3) -> onnx.ModelProto:
    """A PyTorch-like channels-first net on (1, H, W) images: normalised (Sub, Div); conv 4 +
    relu (R1); a residual block, conv 4 + relu + conv 4 added to R1, relu, max pool (P2);
    conv 6 + relu (R3); global average pool, flatten, linear."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    init = [weight("stem.w", 4, 1, 3, 3), weight("block.w1", 4, 4, 3, 3),
            weight("block.w2", 4, 4, 3, 3), weight("head.w", 6, 4, 3, 3),
            weight("fc.w", classes, 6), weight("fc.b", classes),
            numpy_helper.from_array(np.array(0.5, np.float32), "mean"),
            numpy_helper.from_array(np.array(0.25, np.float32), "std")]  # fmt: skip
    pads = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["/Sub_output_0"]),
        helper.make_node("Div", ["/Sub_output_0", "std"], ["/Div_output_0"]),
        helper.make_node("Conv", ["/Div_output_0", "stem.w"], ["/stem/conv/Conv_output_0"], **pads),
        helper.make_node("Relu", ["/stem/conv/Conv_output_0"], [R1]),
        helper.make_node("Conv", [R1, "block.w1"], ["/block/conv1/Conv_output_0"], **pads),
        helper.make_node("Relu", ["/block/conv1/Conv_output_0"], ["/block/relu/Relu_output_0"]),
        helper.make_node("Conv", ["/block/relu/Relu_output_0", "block.w2"],
                         ["/block/conv2/Conv_output_0"], **pads),  # fmt: skip
        helper.make_node("Add", ["/block/conv2/Conv_output_0", R1], [SUM]),
        helper.make_node("Relu", [SUM], ["/block/relu_1/Relu_output_0"]),
        helper.make_node("MaxPool", ["/block/relu_1/Relu_output_0"], [P2], kernel_shape=[2, 2],
                         strides=[2, 2]),  # fmt: skip
        helper.make_node("Conv", [P2, "head.w"], ["/head/conv/Conv_output_0"], **pads),
        helper.make_node("Relu", ["/head/conv/Conv_output_0"], [R3]),
        helper.make_node("GlobalAveragePool", [R3], ["/pool/GlobalAveragePool_output_0"]),
        helper.make_node("Flatten", ["/pool/GlobalAveragePool_output_0"], ["/Flatten_output_0"]),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    out = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)
    images = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                           ["batch", 1, height, width])  # fmt: skip
    graph = helper.make_graph(nodes, "torch_like", [images], [out], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _student(height=8, width=12, classes=3, stride=1) -> keras.Model:
    """(H, W, 1) -> conv 2 -> max pool -> conv 3 -> conv 3 -> logits, channels last."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((height, width, 1))
    h = keras.layers.Conv2D(2, 3, strides=stride, padding="same", activation="relu",
                            name="conv1")(inputs)  # fmt: skip
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv3")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(h), name="student")


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_auto") / "torch_like.onnx"
    onnx.save(_torch_like(), str(path))
    return path


def test_the_feature_maps_are_the_block_outputs_channels_last():
    # NCHW tensors read as (H, W, C): 8x12 images, not 4x... or 12x8 ones. The normalisation
    # before the first conv computes no features; the residual block ends after its sum.
    found = onnx_features.feature_maps(_torch_like(), (8, 12, 1), channels_first=True)
    assert [(c.tensor, c.shape, c.op) for c in found] == [
        (R1, (8, 12, 4), "Relu"), (P2, (4, 6, 4), "MaxPool"), (R3, (4, 6, 6), "Relu"),
    ]  # fmt: skip


def test_a_global_mean_is_a_pooled_vector_not_the_last_block_s_map():
    # PyTorch's dynamo exporter writes AdaptiveAvgPool2d(1) as a ReduceMean over H and W kept
    # as (N, C, 1, 1): Keras' global pooling, a vector, not the last block's output (R3).
    model = _torch_like()
    pool = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    pool.op_type = "ReduceMean"
    pool.attribute.extend([helper.make_attribute("axes", [2, 3]),
                           helper.make_attribute("keepdims", 1)])  # fmt: skip
    found = onnx_features.feature_maps(model, (8, 12, 1), channels_first=True)
    assert [c.tensor for c in found] == [R1, P2, R3]


def test_a_constant_node_read_far_below_leaves_the_blocks_as_they_are():
    # PyTorch's exporters write some weights as Constant nodes, at the top of the graph: the
    # edge from one to the last Gemm passed over every node, which left no block's end.
    model = _torch_like()
    bias = next(w for w in model.graph.initializer if w.name == "fc.b")
    model.graph.initializer.remove(bias)
    model.graph.node.insert(0, helper.make_node("Constant", [], ["fc.b"], value=bias))
    found = onnx_features.feature_maps(model, (8, 12, 1), channels_first=True)
    assert [c.tensor for c in found] == [R1, P2, R3]


def test_auto_chooses_the_middle_tensor_for_the_student_s_middle_layer(torch_file):
    teacher = onnx_model.load(torch_file, (8, 12, 1))  # no hints: the choice needs none
    chosen = hint_choice.auto_pair(teacher, _student())
    assert (chosen.hint_layer, chosen.guided_layer) == (P2, "conv2")
    assert chosen.reason == (
        "the paper's rule (the middle of the teacher guides the middle of the student): "
        f"'{P2}' (4, 6, 4) is feature layer 2 of 3 of 'torch_like', its middle; 'conv2' "
        "(4, 6, 3) is feature layer 2 of 3 of 'student', its middle; the convolutional "
        "regressor maps it onto the hint with a 1×1 kernel (k² · O_g · O_h = 12 weights)"
    )


def test_no_student_map_large_enough_is_refused_as_for_a_keras_teacher(torch_file):
    teacher = onnx_model.load(torch_file, (8, 12, 1))
    # The student's maps after its pool are 1×1: pooled vectors, no feature layers.
    with pytest.raises(errors.HintShapeError, match=(
            r"no student layer can be mapped onto the teacher's middle layer "
            rf"'{P2}' \(4, 6, 4\) \(a guided map must be at least as large\)\. Student feature "
            r"layers: conv1 \(2, 3, 2\)\. Name a pair")):  # fmt: skip
        hint_choice.auto_pair(teacher, _student(stride=4))


def test_a_keras_teacher_and_its_onnx_file_choose_alike(tmp_path):
    teacher = tiny_model("teacher", width=4, seed=0, batch_norm=False)
    student = tiny_model("student", width=2, seed=1)
    writers.write_onnx(teacher, tmp_path / "teacher.onnx")  # tf2onnx: NHWC images, NCHW convs
    keras_choice = hint_choice.auto_pair(teacher, student)
    onnx_choice = hint_choice.auto_pair(onnx_model.load(tmp_path / "teacher.onnx"), student)
    assert (keras_choice.hint_layer, keras_choice.guided_layer) == ("pool1", "bn")
    assert "pool1" in onnx_choice.hint_layer and onnx_choice.guided_layer == "bn"
    expected = keras_choice.reason.replace("'pool1' (4, 4, 4)",
                                           f"'{onnx_choice.hint_layer}' (4, 4, 4)")  # fmt: skip
    expected = expected.replace("'conv2' (4, 4, 4)", "'{}' (4, 4, 4)")
    other = onnx_choice.reason.split("the other middle layer, '")[1].split("'")[0]
    assert onnx_choice.reason == expected.format(other)


def test_the_distiller_loads_the_chosen_tensor_and_stage_one_trains_on_it(torch_file):
    teacher = onnx_model.load(torch_file, (8, 12, 1))
    distiller = Distiller(teacher, _student(), hints="auto")
    assert distiller.auto_pair.hint_layer == P2
    assert distiller.hints == [("block.pool.MaxPool_output_0", "conv2")]
    assert distiller.teacher.get_layer("onnx_model").hints == [P2]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 8, 12, 1)).astype("float32")
    y = rng.integers(0, 3, 32)
    # The hint is the file's P2, channels last.
    tapped = hint_path.tap(distiller.teacher, ["block.pool.MaxPool_output_0"], "hint")(x)
    assert tapped.shape == (32, 4, 6, 4)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), phase="hints")
    first = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["hint_loss"]
    distiller.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0)
    last = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["hint_loss"]
    assert np.isfinite(last) and last < 0.9 * first


def test_hints_auto_for_an_onnx_teacher_in_the_config(torch_file):
    config = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", student="mnist_fitnet", teacher_path=str(torch_file),
        modes=("fitnet",), limit=128, hints=("auto",),
    )  # fmt: skip
    config.validate()  # accepted: the run chooses once it has built the student
    assert config.hint_pairs() == "auto"


# The CLI's runs: 28x28 images of 10 classes, synthetic's, and the smoke config's student.
@pytest.fixture(scope="module")
def mnist_sized(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_auto_cli") / "torch_like.onnx"
    onnx.save(_torch_like(28, 28, classes=10), str(path))
    return path


SMOKE_FLAGS = ("--flagfile=configs/smoke.flags", "--teacher_epochs=0", "--limit=128")


def test_list_layers_shows_the_auto_choice_for_an_onnx_teacher(mnist_sized):
    done = train_cli(*SMOKE_FLAGS, f"--teacher_path={mnist_sized}", "--mode=fitnet",
                     "--hints=auto", "--list_layers")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"hints=auto chooses {P2}:" in done.stdout
    assert f"'{P2}' (14, 14, 4) is feature layer 2 of 3 of 'torch_like', its middle" in done.stdout


def test_the_cli_trains_fitnet_from_the_auto_choice_of_an_onnx_teacher(mnist_sized, tmp_path):
    done = train_cli(*SMOKE_FLAGS, f"--teacher_path={mnist_sized}", "--mode=fitnet",
                     "--hints=auto", "--hints_epochs=1", "--kd_epochs=1",
                     "--measure_latency=false", f"--workdir={tmp_path / 'run'}", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"hints=auto: {P2}:" in done.stdout
    hints = json.loads((tmp_path / "run" / "hints.json").read_text())
    assert hints["auto"]["hint_layer"] == P2
    assert hints["pairs"][0]["hint_layer"] == "block.pool.MaxPool_output_0"
    assert hints["pairs"][0]["guided_layer"] == hints["auto"]["guided_layer"]


def test_a_search_trial_with_auto_hints_loads_the_chosen_tensor(torch_file):
    import keras_tuner  # noqa: PLC0415  (the search's)

    from fitnets_tf import search  # noqa: PLC0415

    model = search.FitNetsHyperModel(torch_file, _student, hints="auto", hints_epochs=1)
    hp = keras_tuner.HyperParameters()
    model.declare_hyperparameters(hp)
    distiller = model.build(hp)
    assert distiller.hints == [("block.pool.MaxPool_output_0", "conv2")]
    assert distiller.teacher.get_layer("onnx_model").hints == [P2]
