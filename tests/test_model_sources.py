"""The user's own teacher and student (.keras files, keras.applications), and hints from the CLI."""

import csv
import json
import os
import re
import socket

import keras
import numpy as np
import pytest
from conftest import train_cli

import fitnets_tf
from fitnets_tf import hint_choice
from fitnets_tf.errors import ConfigError, DataError, ModelFileError
from fitnets_tf.models import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--flagfile=configs/smoke.flags"




def _tiny_teacher(softmax: bool = False) -> keras.Model:
    """28×28×1 → t_pool1 (13, 13, 8) → t_pool2 (5, 5, 8) → t_conv3 (3, 3, 8) → 10."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="t_conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="t_pool1")(h)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="t_conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="t_pool2")(h)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="t_conv3")(h)
    h = keras.layers.Flatten(name="t_flatten")(h)
    outputs = keras.layers.Dense(10, activation="softmax" if softmax else None, name="logits")(h)
    return keras.Model(inputs, outputs, name="my_teacher")


def _tiny_student() -> keras.Model:
    """28×28×1 → s_conv1 (26, 26, 4) → s_pool2 (12, 12, 4) → s_pool3 (5, 5, 4) → 10.

    Its kernels have a seeded initializer: a run must draw them from its own seed anyway.
    """
    init = keras.initializers.GlorotUniform(seed=5)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=init, name="s_conv1")(inputs)
    h = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=init, name="s_conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="s_pool2")(h)
    h = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=init, name="s_conv3")(h)
    h = keras.layers.MaxPooling2D(2, name="s_pool3")(h)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten(name="s_flatten")(h))
    return keras.Model(inputs, outputs, name="my_student")


def _same_weights(a: keras.Model, b: keras.Model) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    teacher, student = directory / "teacher.keras", directory / "student.keras"
    keras.utils.set_random_seed(0)
    _tiny_teacher().save(teacher)
    _tiny_student().save(student)
    return str(teacher), str(student)


# -- the Python API ---------------------------------------------------------------------------


def test_check_accepts_names_existing_files_and_constructors(model_files):
    teacher, _ = model_files
    assert sources.check("mnist_fitnet") is None and sources.check(teacher) is None
    assert sources.check("keras.applications.MobileNetV3Small") is None
    assert "does not exist" in sources.check("/nonexistent/s.keras", "student")
    assert "not a Keras model constructor" in sources.check("keras.applications.mobilenet_v3")
    assert "unknown student 'resnet'" in sources.check("resnet", "student")


def test_application_student_gives_logits_at_a_small_input_without_any_download(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    spec = "keras.applications.MobileNetV3Small"
    student = sources.resolve(spec, (32, 32, 1), 7, seed=3, role="student")
    x = np.random.RandomState(0).rand(4, 32, 32, 1).astype("float32")
    logits = np.asarray(student(x))
    assert logits.shape == (4, 7) and student.layers[-1].activation is keras.activations.linear
    assert not np.allclose(logits.sum(axis=1), 1.0)  # not probabilities
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in student.layers)
    # Same seed, same weights and layer names, whatever Keras built in between.
    keras.layers.ReLU(name=None)  # takes the next auto-generated name: re_lu_N
    again = sources.resolve(spec, (32, 32, 1), 7, seed=3)
    assert [layer.name for layer in again.layers] == [layer.name for layer in student.layers]
    assert student.layers[0].name == "input" and "re_lu" in [layer.name for layer in student.layers]
    assert _same_weights(again, student)
    assert not _same_weights(sources.resolve(spec, (32, 32, 1), 7, seed=4), student)


def test_application_refuses_an_input_it_cannot_take():
    with pytest.raises(ConfigError, match=r"MobileNetV3Small cannot be built.*at least 32x32"):
        sources.resolve("keras.applications.MobileNetV3Small", (28, 28, 1), 10)


def test_student_file_gives_its_architecture_with_weights_drawn_from_the_seed(model_files):
    _, path = model_files
    saved = keras.saving.load_model(path)
    first = sources.resolve(path, (28, 28, 1), 10, seed=1, role="student")
    assert [layer.name for layer in first.layers] == [layer.name for layer in saved.layers]
    assert _same_weights(first, sources.resolve(path, (28, 28, 1), 10, seed=1))
    # The file's seeded initializer would give its own weights whatever the run's seed.
    assert not _same_weights(first, sources.resolve(path, (28, 28, 1), 10, seed=2))
    assert not _same_weights(first, saved)


def _normalising_student(images: np.ndarray, adapt: bool = True) -> keras.Model:
    """``images``' shape → Normalization adapted on ``images`` (Keras' tutorial way: its mean
    and variance are weights set by ``adapt``, not arguments) → conv → GAP → 10 logits."""
    norm = keras.layers.Normalization(name="norm")
    if adapt:
        norm.adapt(images)
    inputs = keras.Input(images.shape[1:])
    h = keras.layers.Conv2D(4, 3, name="s_conv")(norm(inputs))
    h = keras.layers.GlobalAveragePooling2D(name="s_gap")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name="normalising")


def _state(layer) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for w in layer.weights]


def test_a_student_files_adapted_normalization_keeps_its_statistics(tmp_path, capsys):
    # Re-created from its config, the layer had mean 0 and variance 1: the run fed the raw
    # input to the first convolution, and exported that student (user audit).
    images = np.random.RandomState(0).rand(16, 8, 8, 1).astype("float32") * 0.5 + 0.3
    saved = _normalising_student(images)
    saved.save(tmp_path / "student.keras")
    student = sources.resolve(str(tmp_path / "student.keras"), (8, 8, 1), 10, seed=1,
                              role="student")  # fmt: skip
    for kept, given in zip(_state(student.get_layer("norm")), _state(saved.get_layer("norm")),
                           strict=True):  # fmt: skip
        np.testing.assert_array_equal(kept, given)
    normalised = keras.Model(student.inputs[0], student.get_layer("norm").output)(images)
    np.testing.assert_allclose(np.mean(normalised), 0.0, atol=1e-5)  # what it computes, too
    np.testing.assert_allclose(np.var(normalised), 1.0, atol=1e-3)
    # Its learned weights are still drawn from the seed, and the run says what it kept, once.
    assert not np.array_equal(student.get_layer("s_conv").kernel, saved.get_layer("s_conv").kernel)
    out = capsys.readouterr().out
    assert out.count("The student 'normalising' keeps the state its layer 'norm' "
                     "(Normalization) was adapted to") == 1, out
    # A layer whose state is what a fresh one holds (never adapted) has nothing to tell.
    _normalising_student(images, adapt=False).save(tmp_path / "fresh.keras")
    sources.resolve(str(tmp_path / "fresh.keras"), (8, 8, 1), 10, seed=1, role="student")
    assert "adapted" not in capsys.readouterr().out


def test_teacher_file_keeps_its_weights_and_loses_its_softmax(tmp_path):
    teacher = _tiny_teacher(softmax=True)
    teacher.save(tmp_path / "softmax.keras")
    loaded = sources.resolve(str(tmp_path / "softmax.keras"), (28, 28, 1), 10, keep_weights=True)
    x = np.random.RandomState(1).rand(3, 28, 28, 1).astype("float32")
    np.testing.assert_allclose(keras.ops.softmax(loaded(x)), teacher(x), atol=1e-6)
    assert loaded.layers[-1].activation is keras.activations.linear


def test_a_student_file_whose_dense_has_the_softmax_is_trained_as_its_logits(tmp_path, capsys):
    # The command line's student file gives an architecture whose layers it re-creates: the
    # Dense is re-created linear and trained as the student's own layer, so, unlike the
    # Python Distiller (which refuses a given student's fused softmax: it would train a copy
    # of that layer), the file is accepted (README, "Your own models and hints").
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="s_conv")(inputs))
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(h),
                name="fused").save(tmp_path / "fused.keras")  # fmt: skip
    student = sources.resolve(str(tmp_path / "fused.keras"), (28, 28, 1), 10, role="student")
    assert student.layers[-1].activation is keras.activations.linear
    # ...and the run says so, as it does of a teacher's softmax.
    assert "The student 'fused' ends in a softmax: the Distiller uses its logits." in (
        capsys.readouterr().out)  # fmt: skip
    teacher = _tiny_teacher()
    d = fitnets_tf.Distiller(teacher, student, "t_pool1", "s_conv")
    assert d.student.layers[-1] is student.layers[-1]  # the trained layer is the student's


def test_files_whose_input_and_output_are_one_element_lists_work(tmp_path):
    # `keras.Model([x], [y])` and `keras.Model(other.inputs, ...)` are common ways to build one;
    # a Sequential model is one too.
    sequential = keras.Sequential(_tiny_student().layers[1:], name="my_student")
    sequential.build((None, 28, 28, 1))
    for role, model in (("teacher", _tiny_teacher()), ("student", _tiny_student()),
                        ("sequential", sequential)):  # fmt: skip
        nested = model if role == "sequential" else keras.Model(
            [model.inputs[0]], [model.outputs[0]], name=model.name)  # fmt: skip
        nested.save(tmp_path / f"{role}.keras")
        got = sources.resolve(str(tmp_path / f"{role}.keras"), (28, 28, 1), 10, seed=0,
                              keep_weights=role == "teacher", role=role)  # fmt: skip
        if role != "sequential":  # (whose `input` is only defined once it is called)
            assert isinstance(got.input, keras.KerasTensor)
            assert isinstance(got.output, keras.KerasTensor)
        assert [layer.name for layer in got.layers] == [layer.name for layer in model.layers]
        x = np.zeros((2, 28, 28, 1), "float32")
        assert got(x).shape == (2, 10)
        if role == "teacher":
            np.testing.assert_array_equal(got(x), model(x))


@pytest.mark.parametrize("sequential", [False, True])
def test_a_model_of_any_image_size_is_built_for_the_datas(tmp_path, sequential):
    """A fully convolutional model saved with ``Input((None, None, 1))`` gets the data's size,
    so its feature maps' sizes (the hint regressor's kernel) are known; a teacher keeps its
    weights."""
    layers = [keras.layers.Conv2D(4, 3, name="conv"), keras.layers.MaxPooling2D(name="pool"),
              keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(10, name="fc")]
    if sequential:
        model = keras.Sequential([keras.Input((None, None, 1)), *layers], name="open")
    else:
        h = inputs = keras.Input((None, None, 1), name="images")
        for layer in layers:
            h = layer(h)
        model = keras.Model(inputs, h, name="open")
    model.save(tmp_path / "open.keras")
    for role in ("teacher", "student"):
        got = sources.resolve(str(tmp_path / "open.keras"), (12, 10, 1), 10, seed=0,
                              keep_weights=role == "teacher", role=role)  # fmt: skip
        assert got.get_layer("pool").output.shape == (None, 5, 4, 4)
        assert [layer.name for layer in got.layers if layer.name != "images"] == [
            layer.name for layer in model.layers if layer.name != "images"]  # fmt: skip
    x = np.random.RandomState(0).rand(2, 12, 10, 1).astype("float32")
    teacher = sources.resolve(str(tmp_path / "open.keras"), (12, 10, 1), 10, keep_weights=True)
    np.testing.assert_allclose(teacher(x), model(x), atol=1e-6)
    hint_choice.auto_pair(teacher, got)  # both maps known: a pair is found, none refused


def test_a_model_for_other_images_is_refused(model_files):
    with pytest.raises(DataError, match=r"teacher takes images of shape 28x28x1 but the data's "
                       r"are 32x32x3"):  # fmt: skip
        sources.resolve(model_files[0], (32, 32, 3), 10, keep_weights=True, role="teacher")


def _binary_classifier() -> keras.Model:
    """28×28×1 → one sigmoid output: Keras' usual binary classifier."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.GlobalAveragePooling2D(name="b_gap")(keras.layers.Conv2D(2, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h), name="binary")


def test_a_one_output_file_is_refused_as_a_binary_classifier(tmp_path):
    # It was refused as a model for another dataset ("gives 1 outputs, but the dataset has 2
    # classes"), which does not say that distillation cannot use one logit.
    path = str(tmp_path / "binary.keras")
    _binary_classifier().save(path)
    with pytest.raises(ConfigError, match=rf"The teacher '{re.escape(path)}' gives 1 output, but "
                       r"distillation needs at least 2 class logits.*Dense\(2\)"):  # fmt: skip
        sources.resolve(path, (28, 28, 1), 2, keep_weights=True, role="teacher")


def _score_map() -> keras.Model:
    """28×28×1 → a (13, 13, 10) map of per-pixel scores: ends in 10 like logits, not of rank 2."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(4, 3, name="m_conv")(inputs))
    return keras.Model(inputs, keras.layers.Conv2D(10, 1, name="m_scores")(h), name="score_map")


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_file_whose_output_is_not_batch_by_classes_is_refused(tmp_path, role):
    # Only its last axis was checked: a student trained through stage 1, then KD's first step
    # failed ("Incompatible shapes: [13] vs. [13,16,16]"); a teacher failed its evaluation.
    path = str(tmp_path / "map.keras")
    _score_map().save(path)
    with pytest.raises(ConfigError, match=rf"The {role} '{re.escape(path)}' outputs shape "
                       r"\(None, 13, 13, 10\), but distillation needs class logits of shape "
                       r"\(batch, classes\).*GlobalAveragePooling2D"):  # fmt: skip
        sources.resolve(path, (28, 28, 1), 10, keep_weights=True, role=role)


def test_a_file_with_a_lambda_layer_is_refused_as_code_not_as_damaged(tmp_path):
    # Keras' safe mode refuses the lambda with a ValueError; it was reported as a damaged file
    # to restore from a backup, which the user cannot fix (their file is intact).
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h))
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, keras.layers.Dense(10)(h)).save(path)
    with pytest.raises(ModelFileError) as refused:
        sources.resolve(path, (28, 28, 1), 10, keep_weights=False, role="student")
    message = str(refused.value)
    assert f"Cannot load the student {path!r}: it is not damaged, but it holds Python code " \
           "(Requested the deserialization of a `Lambda` layer" in message
    assert "keras.layers.Rescaling" in message and "backup" not in message


def test_the_files_auto_pair_is_the_middle_of_each(model_files):
    teacher, student = (keras.saving.load_model(p) for p in model_files)
    chosen = hint_choice.auto_pair(teacher, student)
    assert (chosen.hint_layer, chosen.guided_layer) == ("t_pool2", "s_pool2")


# -- the command line -------------------------------------------------------------------------


def _columns(path) -> set[str]:
    with open(path) as f:
        return set(next(csv.reader(f)))


@pytest.fixture(scope="module")
def file_run(model_files, tmp_path_factory):
    teacher, student = model_files
    workdir = tmp_path_factory.mktemp("file_run")
    proc = train_cli(SMOKE, f"--workdir={workdir}", f"--teacher={teacher}", f"--student={student}",
                  "--hints=auto", "--mode=fitnet,stagewise_labels", "--kd_epochs=1",
                  "--nomeasure_latency")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir, proc


def test_keras_files_train_end_to_end_with_the_auto_pair_recorded(file_run, model_files):
    workdir, proc = file_run
    assert not (workdir / "teacher").exists()  # a .keras teacher is a trained teacher
    assert "hints=auto: t_pool2:s_pool2 (the paper's rule" in proc.stdout
    hints = json.loads((workdir / "hints.json").read_text())
    regressor = {"layer": "Conv2D", "kernel_size": [8, 8], "channels": 8, "activation": "relu"}
    assert hints["pairs"] == [{"hint_layer": "t_pool2", "guided_layer": "s_pool2", "weight": 1.0,
                               "regressor": regressor}]  # fmt: skip
    assert "regressor t_pool2:s_pool2: Conv2D, 8x8 kernel, 8 channels, relu" in proc.stdout
    assert "middle" in hints["auto"]["reason"]
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["hint_layer"], summary["guided_layer"]) == ("t_pool2", "s_pool2")
    assert summary["hints"] == hints and summary["teacher"] == model_files[0]
    rows = {r["name"]: r for r in summary["models"]}
    # 3·3·1·8+8 + 2·(3·3·8·8+8) + 72·10+10, and 3·3·1·4+4 + 2·(3·3·4·4+4) + 100·10+10
    assert rows["teacher"]["params"] == 1_978 and rows["fitnet"]["params"] == 1_346
    assert "hint_loss" in _columns(workdir / "fitnet" / "hints" / "log.csv")
    assert (workdir / "stagewise_labels" / "guided_labels" / "log.csv").exists()
    assert (workdir / "student.keras").exists()


def test_two_hint_pairs_from_the_command_line(model_files, tmp_path):
    teacher, student = model_files
    proc = train_cli(SMOKE, f"--workdir={tmp_path}", f"--teacher={teacher}", f"--student={student}",
                  "--hints=t_pool1:s_conv1,t_pool2:s_pool2", "--hint_weights=1,0.5",
                  "--mode=fitnet", "--stages=stage1", "--nomeasure_latency")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    columns = _columns(tmp_path / "fitnet" / "hints" / "log.csv")
    assert {"hint_loss", "hint_loss/t_pool1:s_conv1", "hint_loss/t_pool2:s_pool2",
            "val_hint_loss/t_pool2:s_pool2"} <= columns  # fmt: skip
    pairs = json.loads((tmp_path / "hints.json").read_text())["pairs"]
    assert [(p["hint_layer"], p["guided_layer"], p["weight"]) for p in pairs] == [
        ("t_pool1", "s_conv1", 1.0), ("t_pool2", "s_pool2", 0.5)
    ]  # fmt: skip
    assert "--hints=t_pool1:s_conv1,t_pool2:s_pool2" in (tmp_path / "flags.txt").read_text()


@pytest.mark.slow  # three CLI runs; describe_models (what --list_layers prints): test_hints
def test_list_layers_prints_both_models_and_the_auto_choice_and_writes_nothing(model_files, tmp_path):
    teacher, student = model_files
    workdir = tmp_path / "never"
    proc = train_cli(SMOKE, f"--workdir={workdir}", f"--teacher={teacher}", f"--student={student}",
                  "--list_layers", timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"\*\s+t_pool2\s+MaxPooling2D\s+\(5, 5, 8\)", out)
    assert re.search(r"\*\s+s_pool2\s+MaxPooling2D\s+\(12, 12, 4\)", out)
    assert re.search(r"^\s+t_conv2\s+Conv2D\s+\(11, 11, 8\)", out, re.MULTILINE)  # not marked
    assert "hints=auto chooses t_pool2:s_pool2" in out
    assert not workdir.exists()
    # Pairs given are checked as the run checks them, and listed.
    given = train_cli(SMOKE, f"--workdir={workdir}", f"--teacher={teacher}",
                      f"--student={student}", "--hints=t_pool1:s_conv1,t_pool2:s_pool2",
                      "--list_layers", timeout=120)  # fmt: skip
    assert given.returncode == 0, given.stderr[-3000:]
    assert "hints: t_pool1:s_conv1, t_pool2:s_pool2 (checked" in given.stdout
    assert "hints=auto would choose t_pool2:s_pool2" in given.stdout
    wrong = train_cli(SMOKE, f"--teacher={teacher}", f"--student={student}",
                      "--hints=t_poolX:s_pool2", "--list_layers", timeout=120)  # fmt: skip
    assert wrong.returncode == 1 and "Unknown hint_layer 't_poolX'" in wrong.stderr
    assert not workdir.exists()


def test_a_student_files_adapted_normalization_is_trained_and_saved_with_its_statistics(
    model_files, tmp_path
):
    # From the command line too: each mode's student, and the run's final one, normalise with
    # the file's statistics (adapted on images / 255: what the default preprocessing feeds).
    images = np.random.RandomState(0).rand(64, 28, 28, 1).astype("float32")
    _normalising_student(images).save(tmp_path / "student.keras")
    workdir = tmp_path / "run"
    proc = train_cli(SMOKE, f"--workdir={workdir}", f"--teacher={model_files[0]}",
                     f"--student={tmp_path / 'student.keras'}", "--mode=scratch,kd",
                     "--kd_epochs=1", "--nomeasure_latency")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    given = _state(keras.saving.load_model(tmp_path / "student.keras").get_layer("norm"))
    for path in (workdir / "student.keras", workdir / "kd" / "student.keras"):
        trained = _state(keras.saving.load_model(path).get_layer("norm"))
        for kept, saved in zip(trained, given, strict=True):
            np.testing.assert_array_equal(kept, saved)
    # Told once, though each mode re-creates the student.
    assert proc.stdout.count("keeps the state its layer 'norm' (Normalization) was adapted "
                             "to (mean, variance, count)") == 1, proc.stdout[-4000:]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_binary_classifier, "' gives 1 output, but distillation needs at least 2 class"),
        (_score_map, "' outputs shape (None, 13, 13, 10), but distillation needs class logits"),
    ],
)
def test_a_student_file_not_giving_class_logits_is_refused_before_any_training(
    tmp_path, build, message
):
    build().save(tmp_path / "model.keras")
    workdir = tmp_path / "run"
    proc = train_cli(SMOKE, f"--workdir={workdir}", f"--student={tmp_path / 'model.keras'}",
                     "--mode=kd", "--nomeasure_latency", timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "fitnets_tf.train: error:" in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "model.keras" + message in errors[0]
    assert not (workdir / "teacher").exists() and not (workdir / "kd").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--student=/nonexistent/student.keras"], "student file '/nonexistent/student.keras' "
         "does not exist"),
        (["--teacher=keras.applications.NoSuchNet"], "keras.applications.NoSuchNet is not a "
         "Keras model constructor"),
        (["--hints=pool2"], "hints takes 'auto' or one or more 'teacher_layer:student_layer'"),
        (["--hints=auto", "--hint_layer=pool2"], "not both"),
        (["--hint_weights=1,2"], "one weight per hint pair: 1 pair"),
        (["--hints=pool2:pool4,conv1:pool2"], r"Pair 2 \(conv1:pool2\)"),
    ],
)
def test_bad_models_and_hints_fail_fast_in_one_paragraph(args, message, tmp_path):
    proc = train_cli(SMOKE, f"--workdir={tmp_path}", *args, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "fitnets_tf.train: error:" in line]
    assert len(errors) == 1 and re.search(message, errors[0]), proc.stderr[-2000:]
    assert not (tmp_path / "teacher").exists() and not (tmp_path / "fitnet").exists()


def test_a_relative_path_that_does_not_exist_is_named_with_the_current_folder(
        tmp_path, monkeypatch):  # fmt: skip
    # Paths of a flagfile are read from where the command runs: a user running from another
    # folder is told which folder the names were looked for in.
    from fitnets_tf.config import ExperimentConfig
    from fitnets_tf.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    config = ExperimentConfig().with_values(dataset="folder:images", teacher="teacher.keras",
                                            student="student.keras")  # fmt: skip
    with pytest.raises(ConfigError) as error:
        config.validate()
    message = str(error.value)
    assert "dataset folder 'images' does not exist" in message, message
    assert (f"Relative paths are read from the current folder, {tmp_path} (not a flagfile's): "
            f"'images', 'teacher.keras', 'student.keras' are not there") in message, message
    absolute = ExperimentConfig().with_values(teacher=str(tmp_path / "teacher.keras"))
    with pytest.raises(ConfigError) as error:
        absolute.validate()
    assert "current folder" not in str(error.value)
