"""Hints from an ONNX teacher's tensors (fitnets_tf.models.onnx_hints)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data, tiny_model, train_cli

from fitnets_tf import Distiller, errors, hint_path, teacher_cache
from fitnets_tf import config as config_lib
from fitnets_tf.models import onnx_hints, onnx_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, numpy_helper = onnx.helper, onnx.numpy_helper

# Names as PyTorch's exporters give them: the dynamo one's module paths, TorchScript's
# `input.N` and `onnx::Op_N` (named after the node that takes the tensor).
CONV1, RELU1, POOL1 = "/net/c1/Conv_output_0", "/net/Relu_output_0", "/net/MaxPool_output_0"
CONV2, RELU2, GAP = "onnx::Relu_23", "input.20", "/net/GlobalAveragePool_output_0"


def _net(size=8, classes=3, upto=None, batch="batch") -> onnx.ModelProto:
    """A PyTorch-like channels-first net: conv, relu, max pool, conv, relu, global average
    pool, reshape (its shape a constant: shape arithmetic), linear. ``upto``: the graph ends at
    that tensor instead, onnxruntime's own view of it (what a hint must equal)."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    init = [weight("net.c1.weight", 4, 1, 3, 3), weight("net.c1.bias", 4),
            weight("net.c2.weight", 6, 4, 3, 3), weight("net.c2.bias", 6),
            weight("net.fc.weight", classes, 6), weight("net.fc.bias", classes),
            numpy_helper.from_array(np.array([-1, 6], np.int64), "/Constant_output_0")]  # fmt: skip
    pads = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["input", "net.c1.weight", "net.c1.bias"], [CONV1], **pads),
        helper.make_node("Relu", [CONV1], [RELU1]),
        helper.make_node("MaxPool", [RELU1], [POOL1], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", [POOL1, "net.c2.weight", "net.c2.bias"], [CONV2], **pads),
        helper.make_node("Relu", [CONV2], [RELU2]),
        helper.make_node("GlobalAveragePool", [RELU2], [GAP]),
        helper.make_node("Reshape", [GAP, "/Constant_output_0"], ["/net/Reshape_output_0"]),
        helper.make_node("Gemm", ["/net/Reshape_output_0", "net.fc.weight", "net.fc.bias"],
                         ["logits"], transB=1),  # fmt: skip
    ]
    if upto is not None:
        nodes = nodes[: [n.output[0] for n in nodes].index(upto) + 1]
    out = helper.make_tensor_value_info(upto or "logits", onnx.TensorProto.FLOAT, None)
    images = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [batch, 1, size, size])
    graph = helper.make_graph(nodes, "net", [images], [out], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def net_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_hints") / "net.onnx"
    onnx.save(_net(), str(path))
    return path


def _ort(model: onnx.ModelProto, images_nchw: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": images_nchw})[0]


def test_a_hint_is_the_tensor_onnxruntime_computes_channels_last(net_file):
    x, _ = tiny_data(5)
    teacher = onnx_model.load(net_file, (8, 8, 1), hints=[RELU1, CONV2])
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    for tensor, shape in ((RELU1, (8, 8, 4)), (CONV2, (4, 4, 6))):
        tapped = hint_path.tap(teacher, [onnx_hints.layer_name(tensor)], "hint")
        assert tapped.output.shape[1:] == shape
        expected = _ort(_net(upto=tensor), nchw).transpose(0, 2, 3, 1)
        np.testing.assert_allclose(tapped(x), expected, atol=1e-5)
    # The logits are the file's, as without hints.
    np.testing.assert_allclose(teacher(x), _ort(_net(), nchw), atol=1e-5)
    # A copy from its config (clone_model's) has the same hint layers, with the same values.
    copy = keras.models.clone_model(teacher)
    expected = _ort(_net(upto=CONV2), nchw).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(hint_path.tap(copy, ["onnx__Relu_23"], "hint")(x), expected,
                               atol=1e-5)  # fmt: skip
    # A Relu's tensor gives a ReLU regressor, as a Keras ReLU hint does; a Conv's a linear one.
    student = tiny_model("student", width=2, seed=1)
    pairs = hint_path.layer_pairs(teacher, [(RELU1, "conv1"), (CONV2, "conv2")])
    assert pairs == [("net.Relu_output_0", "conv1"), ("onnx__Relu_23", "conv2")]
    built = hint_path.make_regressors(teacher, student, pairs)
    assert [r.activation.__name__ for r in built] == ["relu", "linear"]


@pytest.fixture
def fetches(monkeypatch):
    """The outputs each ONNX Runtime call asks for (None: all of them), in order."""
    asked, make = [], ort.InferenceSession

    class Recording:
        def __init__(self, *args, **kwargs):
            self._session = make(*args, **kwargs)

        def run(self, names, feeds, *args):
            asked.append(None if names is None else tuple(names))
            return self._session.run(names, feeds, *args)

        def __getattr__(self, name):
            return getattr(self._session, name)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    return asked


@pytest.mark.parametrize("batch", ["batch", 1])
def test_a_call_for_the_logits_alone_fetches_no_hint(tmp_path, fetches, batch):
    path = tmp_path / "net.onnx"
    onnx.save(_net(batch=batch), str(path))
    x, y = tiny_data(5)
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    teacher = onnx_model.load(path, (8, 8, 1), hints=[RELU1, CONV2])
    calls = 5 if batch == 1 else 1  # a file of a fixed batch of 1 takes the images one by one
    fetches.clear()
    logits = tf.function(lambda images: teacher(images, training=False))(x)
    assert fetches == [("logits",)] * calls
    np.testing.assert_allclose(logits, _ort(_net(), nchw), atol=1e-5)
    # Stage 2's step, the KD Distiller's: the logits alone.
    distiller = Distiller(teacher, tiny_model("student", width=2, seed=1),
                          hints=[(RELU1, "conv1")])  # fmt: skip
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), phase="kd")
    fetches.clear()
    distiller.fit(x, y, batch_size=5, epochs=1, verbose=0)
    assert set(fetches) == {("logits",)}
    # Stage 1's tap: one call for both hints, each the tensor ONNX Runtime computes.
    names = [onnx_hints.layer_name(RELU1), onnx_hints.layer_name(CONV2)]
    fetches.clear()
    hints = tf.function(hint_path.tap(teacher, names, "hints"))(x)
    assert len(fetches) == calls and {RELU1, CONV2} <= set(fetches[0])
    for tensor, hint in zip((RELU1, CONV2), hints, strict=True):
        expected = _ort(_net(upto=tensor), nchw).transpose(0, 2, 3, 1)
        np.testing.assert_allclose(hint, expected, atol=1e-5)
    # The cache's pass, logits and hints: one call gives both.
    fetches.clear()
    cached = teacher_cache.outputs_function(teacher, names)(x)
    assert len(fetches) == calls
    np.testing.assert_allclose(cached["teacher_logits"], logits, atol=1e-6)
    np.testing.assert_allclose(cached["teacher_hint"][1], hints[1], atol=1e-6)
    # An eager call runs the file once, whatever it returns.
    fetches.clear()
    np.testing.assert_allclose(teacher(x), logits, atol=1e-6)
    assert len(fetches) == calls


def test_loading_a_teacher_with_hints_parses_its_file_once(net_file, monkeypatch):
    parsed, parse = [], onnx.load
    monkeypatch.setattr(onnx, "load", lambda *args, **kwargs: parsed.append(args[0])
                        or parse(*args, **kwargs))  # fmt: skip
    teacher = onnx_model.load(net_file, (8, 8, 1), hints=[RELU1])
    # Its weights checked, counted, and the hints found and added as outputs: from one parse.
    assert len(parsed) == 1
    assert teacher.get_layer("onnx_model").params == 4 * 9 + 4 + 6 * 4 * 9 + 6 + 3 * 6 + 3


def test_a_hint_named_with_colons_is_tapped_in_a_traced_step(net_file):
    # TensorFlow's name scopes, a layer's in a traced step, take no `:` (TorchScript's
    # `onnx::Relu_23`, tf2onnx's `Relu:0`).
    assert onnx_hints.layer_name(CONV2) == "onnx__Relu_23"
    assert onnx_hints.layer_name("model/conv1/Relu:0") == "model.conv1.Relu_0"
    x, _ = tiny_data(5)
    teacher = onnx_model.load(net_file, (8, 8, 1), hints=[CONV2])
    tapped = tf.function(hint_path.tap(teacher, ["onnx__Relu_23"], "hint"))
    expected = _ort(_net(upto=CONV2), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(tapped(x), expected.transpose(0, 2, 3, 1), atol=1e-5)


def test_the_candidates_are_the_4d_activations_in_graph_order(net_file):
    listed = onnx_hints.candidates(onnx.load(str(net_file)), (8, 8, 1), channels_first=True)
    assert [(c.tensor, c.shape, c.op) for c in listed] == [
        (CONV1, (8, 8, 4), "Conv"), (RELU1, (8, 8, 4), "Relu"), (POOL1, (4, 4, 4), "MaxPool"),
        (CONV2, (4, 4, 6), "Conv"), (RELU2, (4, 4, 6), "Relu"), (GAP, (1, 1, 6), "GlobalAveragePool"),
    ]  # fmt: skip


def test_a_stage_one_step_from_an_onnx_hint_lowers_the_hint_loss(net_file):
    teacher = onnx_model.load(net_file, (8, 8, 1), hints=[RELU2])
    student = tiny_model("student", width=2, seed=1)
    distiller = Distiller(teacher, student, hints=[(RELU2, "conv2")])
    assert distiller.hints == [("input.20", "conv2")]
    # Pairs sharing a hint, named by the tensor and by its layer: one hint layer.
    shared = onnx_model.load(net_file, (8, 8, 1), hints=[RELU1, RELU2, "net.Relu_output_0"])
    assert shared.get_layer("onnx_model").hints == [RELU1, RELU2]
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), phase="hints")
    x, y = tiny_data(32)
    first = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["hint_loss"]
    distiller.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0)
    last = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["hint_loss"]
    assert last < 0.9 * first


def test_a_search_trial_training_hints_loads_the_onnx_hints(net_file):
    import keras_tuner  # noqa: PLC0415  (the search's)

    from fitnets_tf import search  # noqa: PLC0415

    model = search.FitNetsHyperModel(net_file, lambda: tiny_model("student", width=2, seed=1),
                                     hints=[(RELU2, "conv2")], hints_epochs=1)  # fmt: skip
    hp = keras_tuner.HyperParameters()
    model.declare_hyperparameters(hp)
    assert model.build(hp).hints == [("input.20", "conv2")]


def test_bad_hint_tensors_are_refused_naming_close_ones(net_file):
    with pytest.raises(errors.ConfigError, match=r"no tensor '/net/Relu_output_1'.*"
                       r"'/net/Relu_output_0'.*--list_layers"):
        onnx_model.load(net_file, (8, 8, 1), hints=["/net/Relu_output_1"])
    with pytest.raises(errors.ConfigError, match=r"'/net/Reshape_output_0' is not a 4-D "
                       r"activation \(its shape: \(N, 6\)\)"):
        onnx_model.load(net_file, (8, 8, 1), hints=["/net/Reshape_output_0"])
    with pytest.raises(errors.ConfigError, match=r"'net.c1.weight' is not a 4-D activation "
                       r"\(a weight of the file\)"):
        onnx_model.load(net_file, (8, 8, 1), hints=["net.c1.weight"])
    teacher = onnx_model.load(net_file, (8, 8, 1), hints=[RELU1])
    student = tiny_model("student", width=2, seed=1)
    with pytest.raises(errors.ConfigError, match=r"loaded without the hint tensor 'input.20'"):
        Distiller(teacher, student, hints=[(RELU2, "conv2")])


def test_auto_adds_its_choice_to_the_hints_an_onnx_teacher_was_loaded_with(net_file):
    # Of the file's two blocks (pool1, relu2), the two middles: pool1 needs the smaller
    # regressor onto the student's deeper middle layer (tests/test_onnx_auto.py: the rule).
    teacher = onnx_model.load(net_file, (8, 8, 1), hints=[RELU1])
    distiller = Distiller(teacher, tiny_model("student", width=2, seed=1), hints="auto")
    assert (distiller.auto_pair.hint_layer, distiller.auto_pair.guided_layer) == (POOL1, "bn")
    assert distiller.hints == [("net.MaxPool_output_0", "bn")]
    assert distiller.teacher.get_layer("onnx_model").hints == [RELU1, POOL1]
    assert teacher.get_layer("onnx_model").hints == [RELU1]  # the given model left as it was


def test_hints_from_an_onnx_teacher_in_the_config(net_file):
    smoke = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", student="mnist_fitnet", teacher_path=str(net_file),
        modes=("fitnet",), limit=128,
    )  # fmt: skip
    smoke.with_values(hints=(f"{RELU2}:conv2",)).validate()  # accepted as it is
    smoke.with_values(hints=("auto",)).validate()  # chosen once the run has the student
    # No pair of the paper's for a file: the run asks for one.
    assert smoke.hint_pairs() == []


# The CLI's runs: a 28x28 net of 10 classes, synthetic's, and the smoke config's student.
@pytest.fixture(scope="module")
def mnist_sized(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_cli") / "teacher.onnx"
    onnx.save(_net(size=28, classes=10), str(path))
    return path


SMOKE_FLAGS = ("--flagfile=configs/smoke.flags", "--teacher_epochs=0", "--limit=128")


def test_list_layers_lists_the_onnx_tensors(mnist_sized):
    done = train_cli(*SMOKE_FLAGS, f"--teacher_path={mnist_sized}", "--mode=kd",
                     "--list_layers")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "hint tensors of the ONNX teacher 'teacher'" in done.stdout
    table = done.stdout.split("student 'mnist_fitnet'")[0]
    rows = [line.split() for line in table.splitlines() if "_output_0" in line
            or line.strip().lstrip("* ").startswith(("onnx::", "input."))]  # fmt: skip
    # The block outputs, hints=auto's candidates, marked.
    assert [" ".join(row[:-4]) for row in rows] == [
        CONV1, RELU1, f"* {POOL1}", CONV2, f"* {RELU2}", GAP,
    ]  # fmt: skip
    assert rows[1][1:] == ["Relu", "(28,", "28,", "4)"]
    assert f"hints=auto chooses {POOL1}:conv1 (the paper's rule" in done.stdout


def test_the_cli_trains_fitnet_from_an_onnx_teacher(mnist_sized, tmp_path):
    done = train_cli(*SMOKE_FLAGS, f"--teacher_path={mnist_sized}", "--mode=fitnet",
                     f"--hints={RELU2}:conv2", "--hints_epochs=1", "--kd_epochs=1",
                     "--measure_latency=false", f"--workdir={tmp_path / 'run'}", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "input.20:conv2" in done.stdout
    hints = (tmp_path / "run" / "hints.json").read_text()
    assert '"hint_layer": "input.20"' in hints and '"activation": "relu"' in hints


def _clips(opset: int) -> onnx.ModelProto:
    """(1, 4, 4) images, each clipped between bounds (Constant nodes, as PyTorch writes them,
    or initializers, as tf2onnx does; attributes before opset 11); a max pool of the first."""
    bounds = {"a": (0, 6), "b": (0, 4), "c": (-1, 1), "d": (0, None), "e": (0.5, 6)}
    numbers = sorted({n for pair in bounds.values() for n in pair if n is not None})
    names = {n: f"k{i}" for i, n in enumerate(numbers)}
    nodes, init = [], []
    for n, name in names.items():
        # 4 held with shape (1,), as a file may hold a scalar: NumPy 2 makes no float of it.
        value = numpy_helper.from_array(np.array([n] if n == 4 else n, np.float32), name)
        if n == 0:  # one as a Constant node, the others as initializers
            nodes.append(helper.make_node("Constant", [], [name], value=value))
        else:
            init.append(value)
    for out, (low, high) in bounds.items():
        if opset < 11:
            limits = {"min": float(low)} | ({"max": float(high)} if high is not None else {})
            nodes.append(helper.make_node("Clip", ["input"], [out], **limits))
        else:
            ins = ["input", names[low]] + ([names[high]] if high is not None else [])
            nodes.append(helper.make_node("Clip", ins, [out]))
    nodes.append(helper.make_node("MaxPool", ["a"], ["pooled"], kernel_shape=[2, 2],
                                  strides=[2, 2]))  # fmt: skip
    images = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 1, 4, 4])
    out = helper.make_tensor_value_info("pooled", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "clips", [images], [out], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [10, 17])
def test_a_clip_from_0_to_6_is_exposed_as_a_relu6(opset):
    # tf2onnx writes Keras' ReLU(6.) as a Clip(0, 6), PyTorch its ReLU6 too: it was exposed as
    # a linear layer, so its regressor was linear where the Keras hint's is a ReLU6. A Clip
    # from 0 is a Keras ReLU(max_value=...) and gets its ReLU; other bounds stay linear.
    listed = onnx_hints.candidates(_clips(opset), (4, 4, 1), channels_first=True)
    exposed = {c.tensor: (c.op, onnx_hints.hint_layer(c).activation.__name__) for c in listed}
    assert exposed == {
        "a": ("Clip", "relu6"), "b": ("Clip", "relu"), "c": ("Clip", "linear"),
        "d": ("Clip", "relu"), "e": ("Clip", "linear"), "pooled": ("MaxPool", "relu6"),
    }  # fmt: skip
