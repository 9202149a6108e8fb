"""A trained teacher given as a TensorFlow SavedModel folder (fitnets_tf.models.saved_model)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, tiny_data, tiny_model, train_cli

from fitnets_tf import Distiller, builders, errors, experiment
from fitnets_tf import config as config_lib
from fitnets_tf.models import saved_model
from fitnets_tf.run import io

SMOKE = config_lib.ExperimentConfig().with_values(
    dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", init="he_uniform",
    modes=("kd",), kd_epochs=1, batch_size=64, limit=128, measure_latency=False,
)  # fmt: skip


def _softmax(z, temperature=1.0):
    e = np.exp((z - z.max(axis=-1, keepdims=True)) / temperature)
    return e / e.sum(axis=-1, keepdims=True)


def test_an_exported_teacher_gives_its_logits_and_a_probabilities_one_their_logarithms(tmp_path):
    model = tiny_model("teacher", width=4, seed=0)
    x, _ = tiny_data(4)
    logits = keras.ops.convert_to_numpy(model(x))
    model.export(tmp_path / "my-teacher.v2")  # Keras' export: a "serve" and a serving_default
    loaded = saved_model.load(tmp_path / "my-teacher.v2")
    assert loaded.name == "my_teacher_v2" and loaded.input_shape == (None, 8, 8, 1)
    np.testing.assert_allclose(loaded(x), logits, atol=1e-6)
    # tf.saved_model.save: a dict of outputs; a final softmax, as serving signatures often have.
    probs = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))
    tf.saved_model.save(probs, str(tmp_path / "probs"))
    assert saved_model.is_saved_model(tmp_path / "probs")
    taken = keras.ops.convert_to_numpy(saved_model.load(tmp_path / "probs", (8, 8, 1))(x))
    np.testing.assert_allclose(taken, np.log(_softmax(logits)), atol=1e-5)
    for temperature in (1.0, 4.0):  # the soft targets its logits would give
        np.testing.assert_allclose(_softmax(taken, temperature), _softmax(logits, temperature),
                                   atol=1e-6)  # fmt: skip


def _kd_student(teacher, steps: int = 4):
    """The tiny student's weights after ``steps`` KD steps from ``teacher``, from one start."""
    student = tiny_model("student", width=2, seed=1)
    distiller = Distiller(teacher, student, temperature=4.0, kd_lambda=2.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5), phase="kd")
    x, y = tiny_data(32)
    distiller.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return student.get_weights()


def test_a_student_distilled_from_the_export_is_the_one_distilled_from_the_model(tmp_path):
    # What a user distils from their exported teacher is what the Keras teacher would teach.
    model = tiny_model("teacher", width=4, seed=0)
    model.export(tmp_path / "logits")
    keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0])).export(tmp_path / "probs")
    expected = _kd_student(model)
    for got in _kd_student(saved_model.load(tmp_path / "logits")):  # the same graph's ops
        np.testing.assert_array_equal(got, expected.pop(0))
    expected = _kd_student(model)
    for got in _kd_student(saved_model.load(tmp_path / "probs")):  # rounding apart
        np.testing.assert_allclose(got, expected.pop(0), rtol=1e-4, atol=1e-6)


class _TwoOutputs(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 1), tf.float32)])
    def serve(self, images):
        flat = tf.reshape(images, (-1, 64))
        return {"logits": flat[:, :3], "features": flat}


class _Bytes(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 1), tf.uint8)])
    def serve(self, images):
        return tf.cast(tf.reshape(images, (-1, 64))[:, :3], tf.float32)


class _Half(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 1), tf.float16)])
    def serve(self, images):
        return tf.reshape(images, (-1, 64))[:, :3] * 2


class _FixedBatch(tf.Module):
    # A batch of 1 in its signature (TensorSpec([1, ...])): its graph's shapes are static, and
    # another batch size fails inside it ("Input to reshape is a tensor with 256 values").
    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 1), tf.float32)])
    def serve(self, images):
        return tf.reshape(images, (1, 64))[:, :3]


def test_a_signature_of_a_fixed_batch_size_is_refused_naming_the_fix(tmp_path):
    fixed = _FixedBatch()
    tf.saved_model.save(fixed, str(tmp_path / "fixed"), signatures=fixed.serve)
    with pytest.raises(errors.ConfigError, match=r"'serving_default' signature takes batches of "
                       r"1 image \(1, 8, 8, 1\) and no other size; the Distiller gives it batches "
                       r"of any size.* Save it with input_signature=\[tf.TensorSpec\(\[None, 8, "
                       r"8, 1\], tf.float32\)\], or with Keras' model.export\(path\), which "
                       r"does"):  # fmt: skip
        saved_model.load(tmp_path / "fixed")


def test_a_float16_signature_is_given_float16_images_and_gives_float32(tmp_path):
    half = _Half()
    tf.saved_model.save(half, str(tmp_path / "half"), signatures=half.serve)
    keras.config.set_dtype_policy("mixed_bfloat16")  # not the signature's: its own is used
    teacher = saved_model.load(tmp_path / "half")
    x, _ = tiny_data(4)
    got = teacher(x)
    assert got.dtype == "float32"
    expected = 2 * x.reshape(4, 64)[:, :3].astype("float16").astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), expected)


def test_signatures_it_cannot_distil_from_are_refused_naming_what_they_take(tmp_path):
    two, raw = _TwoOutputs(), _Bytes()
    tf.saved_model.save(two, str(tmp_path / "two"), signatures=two.serve)
    with pytest.raises(errors.ConfigError, match=r"returns 2 outputs \(features, logits\)"):
        saved_model.load(tmp_path / "two")
    with pytest.raises(errors.ConfigError, match=r"takes images of shape \(8, 8, 1\) \(its "
                       r"signature\), and the data's are \(28, 28, 1\): give --image_size"):
        saved_model.load(tmp_path / "two", (28, 28, 1))
    tf.saved_model.save(raw, str(tmp_path / "raw"), signatures=raw.serve)
    with pytest.raises(errors.ConfigError, match=r"signature takes uint8 \(None, 8, 8, 1\); the "
                       r"Distiller gives it one batch of float images"):
        saved_model.load(tmp_path / "raw")
    unsigned = tf.Module()
    unsigned.scale = tf.Variable(1.0)
    tf.saved_model.save(unsigned, str(tmp_path / "unsigned"))  # a variable, no signature
    with pytest.raises(errors.TeacherLoadError, match=r"has no 'serving_default' signature "
                       r"\(its signatures: none\)\. Save it with one"):  # fmt: skip
        saved_model.load(tmp_path / "unsigned")
    tf.saved_model.save(two, str(tmp_path / "named"), signatures={"predict": two.serve})
    with pytest.raises(errors.TeacherLoadError, match=r"has no 'serving_default' signature "
                       r"\(its signatures: 'predict'\)\. Save it with one") as refused:
        saved_model.load(tmp_path / "named")
    # Not Keras' advice, to pick another with TFSMLayer's call_endpoint: no option here.
    assert "call_endpoint" not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    (tmp_path / "unsigned" / "saved_model.pb").write_bytes(b"not a graph")
    with pytest.raises(errors.TeacherLoadError, match=r"Cannot load the teacher SavedModel .*"
                       r"unsigned.*it is damaged"):
        saved_model.load(tmp_path / "unsigned")


def test_a_saved_model_teacher_loaded_without_hints_gives_none(tmp_path):
    # Its hints are tensors of its graph, named by hand (tests/test_saved_model_hints.py) or
    # chosen by hints='auto', which loads it again (tests/test_saved_model_auto.py).
    model = tiny_model("teacher", width=4, seed=0)
    model.export(tmp_path / "teacher")
    teacher = saved_model.load(tmp_path / "teacher")
    with pytest.raises(errors.ConfigError, match=r"'teacher' is a TensorFlow SavedModel, run as a "
                       r"function, loaded without hints: it has no layer to take a hint from.*"
                       r"let hints='auto' choose one"):
        Distiller(teacher, tiny_model("student", width=2, seed=1), hints=[("pool1", "conv2")])
    Distiller(teacher, tiny_model("student", width=2, seed=1))  # KD: taken
    config = SMOKE.with_values(teacher_path=str(tmp_path / "teacher"), modes=("kd", "fitnet"))
    with pytest.raises(errors.ConfigError, match=r"--mode fitnet trains from hints: give "
                       r"--hints=auto \(the paper's middle layers\), or name them, "
                       r"--hints=TENSOR:GUIDED_LAYER"):  # before anything is read or built
        config.validate()
    folder = str(tmp_path / "teacher")
    with pytest.raises(errors.ConfigError, match=r"is a TensorFlow SavedModel, a trained teacher: "
                       r"give it as --teacher_path"):  # --teacher names what a run builds
        SMOKE.with_values(teacher=folder).validate()
    with pytest.raises(errors.ConfigError, match=r"cannot be re-created and trained as a "
                       r"student: give a .keras file or an architecture"):
        SMOKE.with_values(student=folder).validate()


def _export_teacher(path, seed: int = 0) -> str:
    """A small trained-teacher SavedModel for the synthetic data (28×28×1, 10 classes)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    # Named: the graph's names are the model's and its layers' (Keras' own, counted in the
    # process, would differ with the tests run before).
    keras.Model(inputs, outputs, name="net").export(path)
    return str(path)


def test_a_run_distils_from_a_saved_model_and_is_bound_to_its_files(tmp_path):
    path = _export_teacher(tmp_path / "teacher")
    assert builders.teacher_location(path) == tmp_path / "teacher"  # not a run directory
    config = SMOKE.with_values(teacher_path=path)
    assert builders.input_paths(config)["--teacher_path"] == tmp_path / "teacher"
    run = tmp_path / "run"
    teacher, kd = experiment.run(config, run, log=lambda m: None)["models"]
    assert teacher["name"] == "teacher" and kd["name"] == "kd"
    assert teacher["mults"] is None and teacher["mults_uncounted"] == ["saved_model"]
    then = io.tree_sha256(path)
    _export_teacher(path, seed=1)  # exported again over it: other weights
    (run / "summary.json").unlink()  # as if killed before its end: resumed, not done
    with pytest.raises(errors.WorkdirError, match=rf"The teacher file '{path}' changed since the "
                       rf"run in .* started \(sha256 {then} then, {io.tree_sha256(path)} now\)"):
        experiment.run(config, run, log=lambda m: None)


def test_list_layers_lists_the_tensors_of_a_saved_model_teacher(tmp_path):
    # The smoke flags' --teacher=mnist_teacher gives the paper's pair (pool2:pool4), which a
    # KD run never uses: it was checked against the SavedModel and refused.
    path = _export_teacher(tmp_path / "teacher")
    listed = train_cli(f"--flagfile={ROOT}/configs/smoke.flags", f"--teacher_path={path}",
                       "--mode=kd,scratch", "--list_layers")  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "hint tensors of the SavedModel teacher 'teacher'" in listed.stdout
    rows = [line.split() for line in listed.stdout.splitlines()
            if line.lstrip("* ").startswith("net_1/")]  # fmt: skip
    assert rows == [["net_1/conv_1/convolution", "Conv2D", "(13,", "13,", "8)"],
                    ["net_1/conv_1/BiasAdd", "BiasAdd", "(13,", "13,", "8)"],
                    ["*", "net_1/conv_1/Relu", "Relu", "(13,", "13,", "8)"]]  # a block's output
    assert "hints=auto chooses net_1/conv_1/Relu:" in listed.stdout
