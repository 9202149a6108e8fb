"""ONNX teachers from PyTorch's default exporter (torch.onnx.export's dynamo one, PyTorch 2.13).

The files are ``tests/data/dynamo_onnx/``, made by ``tests/data/make_dynamo_onnx.py`` (its
docstring says how each was exported); CI installs no PyTorch, so they are committed with
PyTorch's own logits for a few images.
"""

import pathlib

import keras
import numpy as np
import onnxruntime
import pytest
from conftest import ROOT

from fitnets_tf import Distiller, data, errors, experiment, models, teacher_cache
from fitnets_tf import config as config_lib
from fitnets_tf.models import onnx_model
from fitnets_tf.run import io, resume, teacher_file
from fitnets_tf.step_inputs import CACHED_LOGITS, IMAGES

DATA = pathlib.Path(ROOT) / "tests" / "data" / "dynamo_onnx"
EXPECTED = np.load(DATA / "expected.npz")
SMOKE = config_lib.ExperimentConfig().with_values(
    dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", init="he_uniform",
    modes=("kd",), kd_epochs=1, batch_size=64, limit=128, measure_latency=False,
)  # fmt: skip

# name: (its input as ONNX Runtime reports it, the weights in the file). The exporter folds
# each batch norm into the convolution before it: PyTorch's 4290 parameters less the norms'
# 2 x 12 scales and offsets; 1506 less 2 x 24, plus the 24 biases the bias-free convolutions
# gain.
FILES = {
    "plain_cnn": (("input", ["batch", 1, 28, 28]), 4266),
    "resnet_block": (("x", [1, 3, 32, 32]), 1482),
    "flatten_dropout": (("x", ["batch", 1, 28, 28]), 11042),
}


def _images(name: str) -> np.ndarray:
    """The images PyTorch's logits are for, channels last as the pipelines give them."""
    return EXPECTED[f"{name}_pixels"].transpose(0, 2, 3, 1).astype(np.float32) / 255


@pytest.mark.parametrize("name", FILES)
def test_a_dynamo_exported_teacher_gives_pytorchs_logits(name):
    (input_name, dims), weights = FILES[name]
    path = DATA / f"{name}.onnx"
    session = onnxruntime.InferenceSession(str(path))
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(input_name, dims)]
    teacher = onnx_model.load(path)  # its input's sizes give the images' shape
    assert teacher.input_shape == (None, dims[2], dims[3], dims[1])
    assert teacher.get_layer("onnx_model").channels_first
    images, logits = _images(name), EXPECTED[f"{name}_logits"]
    assert models.count_params(teacher) == weights  # the weights in its .onnx.data too
    np.testing.assert_allclose(teacher(images), logits, atol=1e-5)
    # In a compiled function, batches of 2 and a last one of 1; and as ONNX Runtime runs it.
    np.testing.assert_allclose(teacher.predict(images, batch_size=2, verbose=0), logits,
                               atol=1e-5)  # fmt: skip
    run = onnx_model.runner(session)(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(run[0], logits, atol=1e-5)


def _softmax(z, temperature):
    e = np.exp((z - z.max(axis=-1, keepdims=True)) / temperature)
    return e / e.sum(axis=-1, keepdims=True)


def test_a_student_learns_pytorchs_soft_targets_from_a_dynamo_exported_teacher():
    teacher = onnx_model.load(DATA / "resnet_block.onnx")  # a fixed batch of 1
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
    student = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    # λ large: its near-uniform targets (an untrained net's) against the labels' one-hot ones.
    distiller = Distiller(teacher, student, temperature=2.0, kd_lambda=50.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), phase="kd")
    logits = EXPECTED["resnet_block_logits"]
    images, labels = _images("resnet_block"), logits.argmax(axis=-1)  # labels it agrees with
    # H(P_T, P_S) at τ = 2, P_T from PyTorch's logits: the targets are the PyTorch model's.
    targets = _softmax(logits, 2.0)
    student_probs = _softmax(keras.ops.convert_to_numpy(student(images)), 2.0)
    expected = -(targets * np.log(student_probs)).sum(axis=-1).mean()
    got = distiller.evaluate(images, labels, batch_size=5, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["kd_loss"], expected, rtol=1e-5)
    history = distiller.fit(images, labels, batch_size=5, epochs=30, shuffle=False, verbose=0)
    # Trained on them, its cross-entropy to them nears their entropy, its lower bound.
    entropy = -(targets * np.log(targets)).sum(axis=-1).mean()
    kd_loss = history.history["kd_loss"]
    assert kd_loss[-1] - entropy < (kd_loss[0] - entropy) / 4


def test_a_run_distils_from_a_dynamo_exported_teacher(tmp_path):
    config = SMOKE.with_values(teacher_path=str(DATA / "plain_cnn.onnx"),
                               serving_runtimes=("onnxruntime",))  # fmt: skip
    row, kd = experiment.run(config, tmp_path / "run", log=lambda m: None)["models"]
    assert (row["name"], row["params"], row["mults"], kd["name"]) == ("teacher", 4266, None, "kd")
    timed = {key.removeprefix("latency_ms_per_image_") for key in row if "latency" in key}
    assert timed == {"batch1_onnxruntime", "batch128_onnxruntime"}  # its file, as it is


def test_a_file_copied_without_its_weights_names_the_file_they_are_in(tmp_path):
    # The exporter writes the weights to NAME.onnx.data beside NAME.onnx: copied alone (and
    # renamed), the file was refused as "damaged, or not an ONNX model this ONNX Runtime runs".
    (tmp_path / "teacher.onnx").write_bytes((DATA / "plain_cnn.onnx").read_bytes())
    with pytest.raises(errors.TeacherLoadError, match=(
        r"The teacher ONNX model '.*teacher.onnx' keeps its weights in another file, "
        r"'plain_cnn.onnx.data', which is not beside it \(in '.*'\): copy it there, under that "
        r"name \(torch.onnx.export writes it beside the .onnx\), or export the model with "
        r"external_data=False, which keeps them in the .onnx"
    )):  # fmt: skip
        onnx_model.load(tmp_path / "teacher.onnx")


def test_a_run_is_bound_to_the_weights_in_the_teachers_data_file(tmp_path):
    # Its sha256 was the .onnx's alone: retrained weights exported over the .onnx.data (or
    # another export's copied over it) taught a resumed run's later stages unnoticed.
    teacher, data = tmp_path / "teacher.onnx", tmp_path / "plain_cnn.onnx.data"
    teacher.write_bytes((DATA / "plain_cnn.onnx").read_bytes())
    data.write_bytes((DATA / "plain_cnn.onnx.data").read_bytes())
    state = resume.RunState(tmp_path / "run", SMOKE.fingerprint())
    teacher_file.check_same(state, teacher)  # recorded
    state.stage("kd/kd")  # from its first stage on, the run is bound to them
    teacher_file.check_same(state, teacher)
    then = io.file_sha256(data)
    (np.fromfile(data, np.float32) * 1.5).tofile(data)
    with pytest.raises(errors.WorkdirError, match=(
        rf"The teacher file '{data}' changed since the run in .* started \(sha256 {then} then, "
        rf"{io.file_sha256(data)} now\): its stages must all learn from one teacher"
    )):  # fmt: skip
        teacher_file.check_same(state, teacher)
    # A run that recorded the .onnx alone takes its weights as they are now.
    del state.data[teacher_file.DATA_KEY]
    teacher_file.check_same(state, teacher)
    assert state.data[teacher_file.DATA_KEY] == io.file_sha256(data)
    assert state.data[teacher_file.KEY] == io.file_sha256(teacher)


def test_an_onnx_teachers_cache_on_disk_is_rebuilt_for_other_weights(tmp_path):
    # Its key was the digest of the teacher's Keras weights, which an ONNX teacher has none
    # of: a cache of another teacher's logits was reused (a run killed before its first
    # stage's commit, the file then re-exported: nothing binds the run to it yet).
    teacher, data_file = tmp_path / "teacher.onnx", tmp_path / "plain_cnn.onnx.data"
    teacher.write_bytes((DATA / "plain_cnn.onnx").read_bytes())
    data_file.write_bytes((DATA / "plain_cnn.onnx.data").read_bytes())
    datasets = data.load("synthetic", batch_size=64, seed=5, limit=192, validation_size=64)

    def cache(log):
        return teacher_cache.cache_datasets(onnx_model.load(teacher), datasets,
                                            memory_budget=4_000, directory=tmp_path / "cache",
                                            log=log.append)[0]  # fmt: skip

    cache([])
    log = []
    cache(log)
    assert not any("another teacher" in line for line in log)  # the same files: reused
    (np.fromfile(data_file, np.float32) * 1.5).tofile(data_file)
    log = []
    train = cache(log)
    assert "holds the outputs of another teacher" in log[1]
    features, _ = next(iter(train))  # the logits of the weights now in the file
    expected = onnx_model.load(teacher)(features[IMAGES])
    np.testing.assert_allclose(features[CACHED_LOGITS], expected, atol=1e-5)


def test_a_fixed_batch_is_told_with_the_default_exporters_way_to_free_it(capsys):
    # It named dynamic_axes alone, which the dynamo exporter takes with a warning that it is
    # not recommended (its own argument is dynamic_shapes).
    onnx_model.load(DATA / "resnet_block.onnx")
    told = capsys.readouterr().out
    assert ("'resnet_block' (an ONNX model) takes a fixed batch of 1 image: it runs 1 image "
            "per call. Exported with a dynamic batch, torch.onnx.export(..., dynamic_shapes="
            "({0: 'batch'},)) (PyTorch 2.9 or later; before, dynamic_axes={'x': {0: 'batch'}}), "
            "it would take each batch in one call, which is faster.") in told  # fmt: skip


def test_a_dynamo_exported_teachers_tensors_are_its_hints_weights_kept_beside_it():
    # plain_cnn keeps its weights in plain_cnn.onnx.data: the copy of the file that returns
    # the hints holds them too. Its names are the exporter's ("getitem": the first convolution
    # with its batch norm folded, "relu": the ReLU of it), channels last as a Keras hint's.
    teacher = onnx_model.load(DATA / "plain_cnn.onnx", hints=["getitem", "relu"])
    images = _images("plain_cnn")
    conv, relu = (keras.Model(teacher.inputs, teacher.get_layer(name).output)(images)
                  for name in ("getitem", "relu"))  # fmt: skip
    assert conv.shape == relu.shape == (len(images), 28, 28, 4)
    np.testing.assert_array_equal(relu, np.maximum(conv, 0))
    assert float(np.min(conv)) < 0 < float(np.max(conv))  # the ReLU does something
    np.testing.assert_allclose(teacher(images), EXPECTED["plain_cnn_logits"], atol=1e-5)
