"""Tests of fitnets_tf.export and fitnets_tf.latency.

The four formats are checked in one fresh process (tests/export_check.py) with their own
runtimes, against the in-memory student: TensorFlow starts in about 5 s, so one process for all
cases keeps the file fast.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from fitnets_tf import export
from fitnets_tf.export import artifacts, labels
from fitnets_tf.latency import artifact_size, measure_latency
from fitnets_tf.layers import CeilMaxPooling2D, MaxoutConv2D, MaxoutDense
from fitnets_tf.preprocessing import Preprocessor
from fitnets_tf.reporting.summary import dataset_fields
from fitnets_tf.run.layout import RunLayout

REPO = pathlib.Path(__file__).resolve().parents[1]
SHAPE = (8, 8, 1)
CASES = [(fmt, raw) for raw in (False, True) for fmt in export.FORMATS]
# A folder dataset's sorted sub-folder names, one per output of make_student: a comma and a
# non-ASCII letter, which a comma-separated or ASCII-only encoding would break.
CLASS_NAMES = ["ankle boot", "bag, small", "cat", "dog", "écharpe"]


def make_student(filters: int = 4, name: str = "student") -> keras.Model:
    inputs = keras.Input(SHAPE)
    x = MaxoutConv2D(filters, 3, pieces=2)(inputs)
    bn = keras.layers.BatchNormalization()
    x = bn(x)
    x = CeilMaxPooling2D(3, 2)(x)  # 6x6 -> 3x3 with an overhanging window.
    x = keras.layers.Flatten()(x)
    x = MaxoutDense(8, pieces=3)(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name=name)
    # Moving statistics far from (0, 1): an export that ran BN in training mode would differ.
    rng = np.random.default_rng(0)
    gamma, beta, _, _ = bn.get_weights()
    bn.set_weights([gamma, beta, rng.normal(size=filters), rng.uniform(0.5, 2.0, filters)])
    return model


def make_preprocessor() -> keras.Model:
    """The project's GCN + ZCA preprocessing, fitted on random images, as a run saves it."""
    layer = Preprocessor(mode="gcn_zca")
    layer.adapt(np.random.default_rng(2).uniform(0, 255, (200, *SHAPE)))
    raw = keras.Input(SHAPE, name="images")  # The same input name as the serving model's.
    return keras.Model(raw, layer(raw), name="preprocessor")


def make_run(
    workdir: pathlib.Path, preprocessing: bool = True, class_names: list[str] | None = None
) -> tuple[keras.Model, keras.Model]:
    """A finished run's files; with ``class_names``, its summary.json naming them."""
    keras.utils.set_random_seed(0)
    student, preprocessor = make_student(), make_preprocessor()
    workdir.mkdir(parents=True, exist_ok=True)
    student.save(workdir / export.STUDENT_FILE)
    if preprocessing:
        preprocessor.save(workdir / export.PREPROCESSOR_FILE)
    if class_names is not None:
        summary = dataset_fields("folder:images", class_names)  # as a run writes them
        RunLayout(workdir).summary.write_text(json.dumps({**summary, "models": []}))
    return student, preprocessor


def softmax(logits) -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits))


def run_python(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run, exported to every format with and without preprocessing (its class
    names taken from its summary.json, as by default)."""
    workdir = tmp_path_factory.mktemp("run")
    student, preprocessor = make_run(workdir, class_names=CLASS_NAMES)
    paths, unavailable = {}, {}
    for fmt, raw in CASES:
        try:
            paths[fmt, raw] = export.export_student(workdir, None, fmt, include_preprocessing=raw)
        except export.RuntimeUnavailableError as err:
            unavailable[fmt, raw] = str(err)  # Reported by the tests as a skip, with this reason.
    return workdir, student, preprocessor, paths, unavailable


@pytest.fixture(scope="module")
def fresh_process_results(run, tmp_path_factory):
    workdir, student, preprocessor, paths, _ = run
    rng = np.random.default_rng(1)
    x_raw = rng.uniform(0.0, 255.0, (6, *SHAPE)).astype("float32")
    x_norm = rng.normal(size=(6, *SHAPE)).astype("float32")
    arrays = {
        "x_norm": x_norm,
        "x_raw": x_raw,
        "expected_norm": softmax(student(x_norm)),
        "expected_raw": softmax(student(preprocessor(x_raw))),
    }
    scratch = tmp_path_factory.mktemp("check")
    np.savez(scratch / "arrays.npz", **arrays)
    cases = [
        {
            "id": f"{fmt}-{raw}",
            "format": fmt,
            "path": str(paths[fmt, raw]),
            "inputs": "x_raw" if raw else "x_norm",
            "expected": "expected_raw" if raw else "expected_norm",
        }
        for fmt, raw in paths
    ]
    manifest = scratch / "manifest.json"
    manifest.write_text(json.dumps({"arrays": str(scratch / "arrays.npz"), "cases": cases}))
    result = run_python("tests/export_check.py", str(manifest))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "fmt,raw", CASES, ids=[f"{f}-{'raw' if r else 'normalised'}" for f, r in CASES]
)
def test_runtime_in_fresh_process_matches_student(run, fresh_process_results, fmt, raw):
    if (fmt, raw) in run[4]:
        pytest.skip(run[4][fmt, raw])
    result = fresh_process_results[f"{fmt}-{raw}"]
    if result["status"] == "unavailable":
        pytest.skip(result["detail"])
    assert result["status"] == "ok", result
    if fmt != "keras":
        assert not result["fitnets_tf_imported"], "non-Keras artifacts must run without fitnets_tf"
    if fmt in ("saved_model", "litert"):
        assert result["outputs"] == ["probabilities"]
    if fmt == "onnx":
        assert (result["inputs"], result["outputs"]) == (["images"], ["probabilities"])
    # Read back as labels' docstring says a client does; a .keras file has no place for them.
    assert result["class_names"] == (None if fmt == "keras" else CLASS_NAMES)


@pytest.mark.parametrize("raw", [False, True])
def test_keras_export_loads_safely_and_holds_only_the_student(run, fresh_process_results, raw):
    _, student, preprocessor, _, _ = run
    result = fresh_process_results[f"keras-{raw}"]
    assert result["status"] == "ok", result
    # The student's weights (plus the fitted ZCA when baked in): no teacher, regressor or Distiller.
    assert result["params"] == student.count_params() + (preprocessor.count_params() if raw else 0)
    assert "Lambda" not in result["layer_classes"]


@pytest.mark.parametrize("raw", [False, True])
def test_saved_model_refuses_a_batch_of_another_shape_naming_the_expected_one(
    fresh_process_results, raw
):
    # A batch without its channel axis aborted the server's process (oneDNN's convolution); one
    # with three channels could run as a grouped convolution, with wrong probabilities.
    result = fresh_process_results[f"saved_model-{raw}"]
    expected = "is not compatible with expected shape [?,8,8,1]."
    assert result["refused"] == {
        "rank3": f"InvalidArgumentError: Shape of tensor images [6,8,8] {expected}",
        "rgb": f"InvalidArgumentError: Shape of tensor images [6,8,8,3] {expected}",
    }


def test_litert_runs_another_channel_count_unless_the_client_resizes_strictly(tmp_path):
    # LiteRT cannot refuse it itself (README, "Export and serving"): the converter drops a shape
    # check, which the declared shape proves true, and the signature runner resizes the input to
    # whatever it is given. The README's advice, a strict resize, is what refuses.
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert runs LiteRT", exc_type=ImportError)
    from ai_edge_litert.interpreter import Interpreter

    inputs = keras.Input(SHAPE)
    # Six filters: a three-channel batch runs as a grouped convolution of three groups.
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3)(inputs))
    student = keras.Model(inputs, keras.layers.Dense(5)(x))
    path = export.export_student(student, tmp_path / "s.tflite", "litert")
    rgb = np.ones((2, 8, 8, 3), "float32")
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    assert runner(images=rgb)["probabilities"].shape == (2, 5)  # accepted, and meaningless
    interpreter = Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    with pytest.raises(RuntimeError, match="dimension 3 of tensor 0 with value 1 to 3"):
        interpreter.resize_tensor_input(index, rgb.shape, strict=True)
    with pytest.raises(RuntimeError, match=r"\(4 != 3\)"):
        interpreter.resize_tensor_input(index, (2, 8, 8), strict=True)
    gray = np.linspace(-1, 1, 2 * 64, dtype="float32").reshape(2, *SHAPE)
    interpreter.resize_tensor_input(index, gray.shape, strict=True)  # the batch alone: allowed
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, gray)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, softmax(student(gray)), atol=1e-5)


def test_default_paths(run):
    workdir, _, _, paths, _ = run
    names = {key: path.relative_to(workdir / "export").as_posix() for key, path in paths.items()}
    assert names[("saved_model", False)] == "student_saved_model"
    assert names[("keras", True)] == "student_raw.keras"
    for (fmt, raw), name in names.items():
        assert name == export.default_output(".", fmt, raw).name
    assert sorted(os.listdir(workdir / "export")) == sorted(names.values()), "staging litter left"


def test_export_of_in_memory_student(tmp_path):
    student = make_student()
    path = export.export_student(student, tmp_path / "s.keras", "keras")
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.ones((2, *SHAPE), "float32")
    np.testing.assert_allclose(loaded(x)["probabilities"], softmax(student(x)), atol=1e-6)
    with pytest.raises(export.ExportConfigError, match="`output` is required"):
        export.export_student(student, None, "keras")


class _SubclassedStudent(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed_student")
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.bn = keras.layers.BatchNormalization(name="bn")
        self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
        self.logits = keras.layers.Dense(5, name="logits")

    def call(self, x, training=False):
        return self.logits(self.pool(keras.ops.relu(self.bn(self.conv(x), training=training))))


def test_a_subclassed_student_is_exported_as_the_graph_of_its_layers(tmp_path):
    # Notebook 04 trains one by KD alone; its export was refused as not a Functional model.
    student = _SubclassedStudent()
    with pytest.raises(export.ExportConfigError, match=r"has not been called yet.*student\(images"):
        export.export_student(student, tmp_path / "s.keras", "keras")
    assert os.listdir(tmp_path) == []
    x = np.random.default_rng(0).random((2, *SHAPE)).astype("float32")
    student(x)
    bn = student.bn  # moving statistics far from (0, 1), as in make_student
    bn.set_weights([*bn.get_weights()[:2], np.full(4, 0.7), np.full(4, 3.0)])
    path = export.export_student(student, tmp_path / "s.keras", "keras")
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x)["probabilities"], softmax(student(x)), atol=1e-6)


def test_format_all_writes_every_format_as_the_cli_does(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    student, _ = make_run(tmp_path / "run")
    paths = export.export_student(tmp_path / "run", None, "all", include_preprocessing=True)
    assert set(paths) == set(export.FORMATS)
    for fmt, path in paths.items():
        assert path == export.default_output(tmp_path / "run", fmt, True) and path.exists()
    into = export.export_student(student, tmp_path / "served", "all")
    assert sorted(p.name for p in into.values()) == sorted(os.listdir(tmp_path / "served"))
    with pytest.raises(export.ExportConfigError, match="not one file"):
        export.export_student(student, tmp_path / "s.onnx", "all")
    with pytest.raises(export.OutputExistsError):  # refused before anything is written
        export.export_student(student, tmp_path / "served", "all")


def test_format_all_failing_at_one_format_names_the_artifacts_it_wrote(tmp_path, monkeypatch):
    # Each format is published in turn: a refusal at the last said nothing of the three
    # written before it, which the next --format=all then refused as existing.
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    monkeypatch.setitem(export.WRITERS, "litert", lambda model, path: path.write_bytes(b"no"))
    with pytest.raises(export.ExportVerificationError) as refused:
        export.export_student(make_student(), tmp_path, "all")
    written = sorted(os.listdir(tmp_path))
    assert written == ["student.keras", "student.onnx", "student_saved_model"]
    said = str(refused.value)
    assert "litert artifact written for" in said and "--overwrite" in said
    assert all(str(tmp_path / name) in said for name in written)


@pytest.mark.parametrize("make_dir", [False, True])
def test_run_without_student_is_refused(tmp_path, make_dir):
    workdir = tmp_path / "run"
    if make_dir:
        workdir.mkdir()
    with pytest.raises(export.MissingStudentError, match=str(workdir)) as info:
        export.export_student(workdir, None, "onnx")
    assert isinstance(info.value, FileNotFoundError)
    assert ("train first" in str(info.value)) == make_dir
    assert not (workdir / "export").exists()


@pytest.mark.parametrize("fmt", ["onnx", "saved_model"])
def test_non_empty_output_is_refused_and_untouched(tmp_path, fmt):
    student = make_student()
    output = tmp_path / ("old.onnx" if fmt == "onnx" else "old_saved_model")
    sentinel = output / "keep.txt" if fmt == "saved_model" else output
    sentinel.parent.mkdir(parents=True, exist_ok=True)
    sentinel.write_text("old")
    with pytest.raises(export.OutputExistsError, match="--overwrite"):
        export.export_student(student, output, fmt)
    assert sentinel.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == [output.name]


def test_overwrite_replaces_an_earlier_artifact_never_a_folder_of_other_files(tmp_path):
    # `--format=saved_model --output=RUN/export --overwrite` replaced the folder holding every
    # earlier export with one SavedModel.
    student = make_student()
    folder = tmp_path / "export"
    export.export_student(student, folder / "student.keras", "keras")
    (tmp_path / "notes.onnx").mkdir()
    (tmp_path / "notes.onnx" / "mine.txt").write_text("mine")
    (tmp_path / "notes").write_text("mine")
    refused = {
        folder: (f"{folder} is a directory without saved_model.pb, not a SavedModel; nothing was "
                 "written. --overwrite replaces only an earlier SavedModel, never other files: "
                 f"choose another --output, such as a new path inside {folder}."),
        tmp_path / "notes": "notes is a file, not a SavedModel",
        tmp_path / "notes.onnx": "notes.onnx is a directory, not a .onnx file",
    }  # fmt: skip
    for output, message in refused.items():
        fmt = "onnx" if output.suffix else "saved_model"
        for overwrite in (True, False):  # --overwrite would not help: the message says so
            with pytest.raises(export.OutputExistsError) as info:
                export.export_student(student, output, fmt, overwrite=overwrite)
            assert message in str(info.value)
    (folder / "student_saved_model").mkdir()  # format="all" checks each path before writing
    (folder / "student_saved_model" / "mine.txt").write_text("mine")
    with pytest.raises(export.OutputExistsError, match="without saved_model.pb"):
        export.export_student(student, folder, "all", overwrite=True)
    assert sorted(os.listdir(folder)) == ["student.keras", "student_saved_model"]
    assert os.listdir(folder / "student_saved_model") == ["mine.txt"]
    # An earlier artifact of the format is replaced, as before.
    earlier = export.export_student(student, folder / "served", "saved_model")
    assert export.export_student(student, earlier, "saved_model", overwrite=True) == earlier
    assert export.export_student(student, folder / "student.keras", "keras", overwrite=True)


def _zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "{}")
    return buffer.getvalue()


# A user's files that only have an artifact's name; the second of each is close to one.
USERS_FILES = {
    "keras": [b"my notes", _zip("config.json")],  # a zip, without metadata.json
    "onnx": [b"my notes", b"\x08\x08\x12\x07tf2onnx"],  # starts as tf2onnx's, but no graph
    "litert": [b"my notes", b"\x1c\x00\x00\x00TFL2" + bytes(16)],  # another identifier
}


@pytest.mark.parametrize("fmt", list(USERS_FILES))
def test_overwrite_never_replaces_a_users_file_named_like_the_artifact(tmp_path, fmt):
    # `--output=x.onnx --overwrite` replaced any non-empty file of that name, a user's own too.
    student = make_student()
    output = tmp_path / f"mine{export.SUFFIXES[fmt]}"
    for before in USERS_FILES[fmt]:
        output.write_bytes(before)
        with pytest.raises(export.OutputExistsError) as info:
            export.export_student(student, output, fmt, overwrite=True)
        assert str(info.value) == (
            f"{output} is a file, not {artifacts.DESCRIPTIONS[fmt]}; nothing was written. "
            f"--overwrite replaces only an earlier {export.SUFFIXES[fmt]} file, never other "
            f"files: move {output.name} elsewhere, or choose another --output."
        )
        assert output.read_bytes() == before and os.listdir(tmp_path) == [output.name]


def test_each_formats_artifacts_are_told_by_their_content(run, tmp_path):
    _, _, _, paths, unavailable = run
    if unavailable:
        pytest.skip(f"not every format could be written: {unavailable}")
    for (fmt, _), path in paths.items():  # class names added to each, as by default
        for other in export.FORMATS:
            assert artifacts.is_artifact(path, other) == (other == fmt), (path, other)
    onnx = paths["onnx", False].read_bytes()
    for damaged in (onnx[:-1], onnx + b"\x00", onnx[2:]):  # cut, extended, its start lost
        (tmp_path / "damaged.onnx").write_bytes(damaged)
        assert not artifacts.is_artifact(tmp_path / "damaged.onnx", "onnx")


def _crashing_writer(exc: BaseException):
    def write(model, path):
        # Leave partial files behind, as a writer killed half-way would.
        path.mkdir(parents=True)
        (path / "variables.data-00000-of-00001").write_bytes(b"\0" * 100)
        raise exc

    return write


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_crash_mid_export_leaves_nothing(tmp_path, monkeypatch, exc):
    monkeypatch.setitem(export.WRITERS, "saved_model", _crashing_writer(exc))
    output = tmp_path / "export" / "student_saved_model"
    with pytest.raises(type(exc)):
        export.export_student(make_student(), output, "saved_model")
    assert not output.exists()
    # Not even export/, which the export made for its artifact.
    assert os.listdir(tmp_path) == [], "staging directory left behind"


def test_overwrite_keeps_old_artifact_until_new_one_is_complete(tmp_path, monkeypatch):
    student = make_student()
    output = tmp_path / "student.keras"
    make_student(filters=2).save(output)  # an earlier artifact: --overwrite may replace it
    old = output.read_bytes()
    with monkeypatch.context() as patch:
        patch.setitem(export.WRITERS, "keras", _crashing_writer(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            export.export_student(student, output, "keras", overwrite=True)
    assert output.read_bytes() == old
    export.export_student(student, output, "keras", overwrite=True)
    assert keras.saving.load_model(output, safe_mode=True).count_params() == student.count_params()
    assert os.listdir(tmp_path) == ["student.keras"]


def test_bad_arguments_are_refused(tmp_path):
    student = make_student()
    with pytest.raises(export.ExportConfigError, match="format='pt'"):
        export.export_student(student, tmp_path / "s.pt", "pt")
    with pytest.raises(export.ExportConfigError, match="'.tflite'"):
        export.export_student(student, tmp_path / "s.lite", "litert")
    with pytest.raises(export.ExportConfigError, match="format='onnx'"):  # the default format
        export.export_student(student, tmp_path / "s.onnx", "saved_model")
    with pytest.raises(export.ExportConfigError, match="include_preprocessing needs"):
        export.export_student(student, tmp_path / "s.keras", "keras", include_preprocessing=True)
    softmax_student = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    )
    with pytest.raises(export.ExportConfigError, match="must output logits"):
        export.export_student(softmax_student, tmp_path / "s.keras", "keras")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("softmax", [tf.nn.softmax, keras.ops.softmax], ids=["tf", "ops"])
def test_a_student_ending_in_any_softmax_function_is_refused(tmp_path, softmax):
    # Only keras.activations.softmax was found: tf.nn.softmax's probabilities were exported,
    # and the export's own softmax applied to them (every row near uniform).
    student = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3, activation=softmax)]
    )
    with pytest.raises(export.ExportConfigError, match="must output logits; its last layer"):
        export.export_student(student, tmp_path / "s.keras", "keras")
    assert os.listdir(tmp_path) == []


def test_onnx_keeps_constants_of_preprocessing_layers(tmp_path):
    # keras' Normalization(mean=...) holds its statistics as captured constants, not variables;
    # Keras' own ONNX route made them required graph inputs. The export verifies the artifact
    # with onnxruntime on "images" alone, so this raises if the regression comes back.
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime is needed to run the ONNX artifact", exc_type=ImportError
    )
    normalise = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Normalization(mean=100.0, variance=3600.0)]
    )
    path = export.export_student(
        make_student(),
        tmp_path / "s.onnx",
        "onnx",
        preprocessor=normalise,
        include_preprocessing=True,
    )
    assert path.is_file()


def test_a_standardizing_preprocessor_is_baked_into_every_format(tmp_path):
    # --preprocessing=standardize (torchvision's Normalize): its constants live in the layer's
    # config. Each artifact is verified in its runtime against the Keras model as it is
    # written: a constant a converter lost or made an input fails the export.
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    raw = keras.Input(SHAPE, name="images")
    layer = Preprocessor(mode="standardize", mean=0.2860, std=0.3530)
    preprocessor = keras.Model(raw, layer(raw), name="preprocessor")
    preprocessor.save(tmp_path / "preprocessor.keras")
    fitted = tmp_path / "preprocessor.keras"
    student = make_student()
    paths = export.export_student(student, tmp_path / "served", "all", preprocessor=fitted,
                                  include_preprocessing=True)  # fmt: skip
    assert set(paths) == set(export.FORMATS)
    served = keras.saving.load_model(paths["keras"], safe_mode=True)
    x = np.random.default_rng(3).uniform(0, 255, (2, *SHAPE)).astype("float32")
    expected = softmax(student((x / 255 - 0.2860) / 0.3530))
    np.testing.assert_allclose(served(x)["probabilities"], expected, atol=1e-5)


def test_mixed_precision_student_is_served_in_float32(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    onnxruntime = pytest.importorskip(
        "onnxruntime", reason="onnxruntime runs the ONNX artifact", exc_type=ImportError
    )

    keras.config.set_dtype_policy("mixed_float16")  # conftest restores float32 afterwards.
    student = make_student()
    keras.config.set_dtype_policy("float32")
    # ONNX is the format the mixed graph broke (mixed-type Pad); the export verifies it runs.
    path = export.export_student(student, tmp_path / "s.onnx", "onnx")
    x = np.random.default_rng(3).normal(size=(4, *SHAPE)).astype("float32")
    got = onnxruntime.InferenceSession(str(path)).run(["probabilities"], {"images": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, softmax(keras.ops.cast(student(x), "float32")), atol=1e-2)


def test_a_mixed_precision_student_with_graph_ops_is_served_in_float32():
    # keras.applications.MobileNetV3 computes `x + 3` as an op of the graph, not a layer: the
    # float32 copy gave it a dtype it does not take, and a --mixed_precision run (the default)
    # with such a student crashed in its report, after all the training.
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32 afterwards.
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(2, 3, name="conv")(inputs) + 3.0
    student = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    keras.config.set_dtype_policy("float32")
    served = export.serving.in_float32(student)
    x = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype("float32")
    assert served(x).dtype == "float32"
    np.testing.assert_allclose(served(x), keras.ops.cast(student(x), "float32"), atol=0.1)


def test_a_mixed_precision_student_with_a_nested_block_is_served_in_float32(tmp_path):
    # A block that is a model (a Sequential inside a Functional student) kept its layers'
    # bfloat16: the float32 copy re-created the block, not its layers, and ONNX Runtime refused
    # the written file ("Type 'tensor(bfloat16)' ... of operator (Conv)"). A block built under
    # the mixed policy inside an otherwise float32 student was not copied at all.
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    onnxruntime = pytest.importorskip(
        "onnxruntime", reason="onnxruntime runs the ONNX artifact", exc_type=ImportError
    )
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32 afterwards.
    block = keras.Sequential([keras.layers.Conv2D(2, 3, name="conv"), keras.layers.ReLU()],
                             name="block")  # fmt: skip
    keras.config.set_dtype_policy("float32")
    inputs = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(block(keras.layers.Rescaling(0.5, name="half")(inputs)))
    student = keras.Model(inputs, keras.layers.Dense(3, name="logits")(flat))
    served = export.serving.in_float32(student)
    assert {layer.compute_dtype for layer in served.get_layer("block").layers} == {"float32"}
    x = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype("float32")
    np.testing.assert_allclose(served(x), keras.ops.cast(student(x), "float32"), atol=0.1)
    path = export.export_student(student, tmp_path / "s.onnx", "onnx")
    got = onnxruntime.InferenceSession(str(path)).run(["probabilities"], {"images": x})[0]
    np.testing.assert_allclose(got, softmax(served(x)), atol=1e-5)


def test_onnx_conv_stack_is_what_onnx_runtime_fuses(tmp_path):
    # ONNX Runtime's speed on the plain CNNs rests on this shape of graph (issue 15's profile:
    # Conv is 80-90% of the time, layout reorders and the flatten's Transpose the rest): each
    # BatchNormalization folded into its Conv, whose output feeds the Relu directly (fused
    # into one blocked-layout kernel), and no Transpose among the convs: at most one, after
    # them, puts the last map in Keras' NHWC flatten order. The input stays NHWC "images".
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    import onnx  # tf2onnx depends on it

    from fitnets_tf import models

    # 16x16 -> 8x8 -> 4x4 -> 2x2 x 96: a last map of 1x1 flattens alike in NHWC and NCHW.
    shape = (16, 16, 1)
    student = models.build("thin_cnn", shape, 5, seed=0)
    graph = onnx.load(export.export_student(student, tmp_path / "s.onnx", "onnx")).graph
    ops = [node.op_type for node in graph.node]
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert len(convs) == 3 and "BatchNormalization" not in ops
    for conv in convs:
        assert [n.op_type for n in graph.node if conv.output[0] in n.input] == ["Relu"]
    last_conv = max(i for i, op in enumerate(ops) if op == "Conv")
    assert "Transpose" not in ops[:last_conv] and ops.count("Transpose") <= 1
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]
    assert (graph.input[0].name, dims) == ("images", list(shape))


def test_onnx_maxout_stack_keeps_onnx_runtimes_layout(tmp_path):
    # The maxout layers are traced as a maximum of channel slices for ONNX
    # (fitnets_tf.maxout.blockwise): tf2onnx then runs the whole stack in NCHW, where the
    # reshape + max of the training graph put two Transposes of the activation around every
    # maxout (mnist_fitnet in ONNX Runtime, by hand: 0.074 -> 0.057 ms at batch 1, 5.0 -> 3.8
    # ms at batch 128).
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    import onnx  # tf2onnx depends on it

    from fitnets_tf import models

    student = models.build("mnist_fitnet", (28, 28, 1), 10, seed=0)
    path = export.export_student(student, tmp_path / "s.onnx", "onnx")
    ops = [node.op_type for node in onnx.load(path).graph.node]
    last_conv = max(i for i, op in enumerate(ops) if op == "Conv")
    assert ops.count("Conv") == 6 and "Transpose" not in ops[:last_conv]
    x = np.random.default_rng(0).normal(size=(3, 28, 28, 1)).astype("float32")
    got = onnxruntime.InferenceSession(str(path)).run(["probabilities"], {"images": x})[0]
    np.testing.assert_allclose(got, softmax(student(x)), rtol=1e-5, atol=1e-6)


def test_raw_export_of_run_without_preprocessor_is_refused(tmp_path):
    workdir = tmp_path / "run"
    make_run(workdir, preprocessing=False)
    with pytest.raises(export.ExportConfigError, match="preprocessor.keras does not exist"):
        export.export_student(workdir, None, "keras", include_preprocessing=True)


def test_latency_and_artifact_size(run, tmp_path):
    _, student, _, paths, _ = run
    result = measure_latency(student, batch_sizes=(1, 128), warmup=1, repeats=3)
    assert sorted(result) == [1, 128]
    for batch, numbers in result.items():
        assert numbers["ms_per_image"] > 0 and numbers["images_per_second"] > 0
        assert numbers["ms_per_batch"] == pytest.approx(numbers["ms_per_image"] * batch)
    keras_file = paths["keras", False]
    assert artifact_size(keras_file) == keras_file.stat().st_size > 0
    saved_model = paths["saved_model", False]
    assert artifact_size(saved_model) > artifact_size(saved_model / "saved_model.pb")
    with pytest.raises(FileNotFoundError):
        artifact_size(tmp_path / "missing")
    # TensorFlow already runs in this process: a new thread count must be refused, loudly.
    with pytest.raises(RuntimeError, match="fresh process"):
        measure_latency(student, threads=tf.config.threading.get_intra_op_parallelism_threads() + 1)


def test_cli_bad_input_exits_without_traceback(tmp_path):
    result = run_python("-m", "fitnets_tf.export", f"--workdir={tmp_path}", "--format=keras")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{tmp_path} holds no trained student" in result.stderr


def test_cli_exports_and_prints_sizes_and_latency(tmp_path):
    make_run(tmp_path, class_names=CLASS_NAMES)
    keras.utils.set_random_seed(1)
    (tmp_path / "teacher").mkdir()
    make_student(filters=16, name="teacher").save(tmp_path / "teacher" / "teacher.keras")
    result = run_python(
        "-m",
        "fitnets_tf.export",
        f"--workdir={tmp_path}",
        "--format=litert",
        "--include_preprocessing",
        "--latency_repeats=2",
        "--threads=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"note: {tmp_path / 'student.keras'} has no sha256" in result.stdout  # an older run
    output = tmp_path / "export" / "student_raw.tflite"
    assert output.is_file()
    assert labels.read(output, "litert") == CLASS_NAMES  # the run's, by default
    lines = result.stdout.splitlines()
    assert any(line.startswith("litert") and str(output) in line for line in lines)
    for model in ("student", "teacher"):
        assert {line.split()[1] for line in lines if line.startswith(model + " ")} == {"1", "128"}


def test_cli_format_all_writes_into_the_output_directory_as_the_library_does(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    make_run(tmp_path / "run")
    served = tmp_path / "served"
    result = run_python("-m", "fitnets_tf.export", f"--workdir={tmp_path / 'run'}",
                        "--format=all", f"--output={served}", "--nolatency",
                        "--class_names=a b,c,d,e,f")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = [export.default_output(".", fmt).name for fmt in export.FORMATS]
    assert sorted(os.listdir(served)) == sorted(expected)
    given = ["a b", "c", "d", "e", "f"]
    for fmt in export.FORMATS:
        path = served / export.default_output(".", fmt).name
        assert labels.read(path, fmt) == (None if fmt == "keras" else given), fmt
    assert not (tmp_path / "run" / "export").exists()


def test_the_teacher_to_time_is_the_runs_or_the_one_it_loaded(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    elsewhere = tmp_path / "mine.keras"
    make_student(filters=6, name="outside").save(elsewhere)
    (run / "flags.txt").write_text("--teacher=mnist_teacher\n")  # an architecture, trained
    assert export.serving.load_runs_teacher(run) is None  # ... and its file is gone
    (run / "flags.txt").write_text(f"--teacher_path={elsewhere}\n--teacher=mnist_teacher\n")
    assert export.serving.load_runs_teacher(run).name == "outside"
    (run / "flags.txt").write_text(f"--teacher={elsewhere}\n")  # the same thing, said so
    assert export.serving.load_runs_teacher(run).name == "outside"
    (run / "flags.txt").write_text(f"--teacher_path={tmp_path / 'moved.keras'}\n")
    notes = []
    assert export.serving.load_runs_teacher(run, log=notes.append) is None
    assert len(notes) == 1 and "teacher is left out" in notes[0] and "moved.keras" in notes[0]
    assert "--teacher=PATH.keras" in notes[0] and "--teacher_path" not in notes[0]
    from fitnets_tf.run import runtime

    assert runtime.versions()["working_directory"] == os.getcwd()  # what a run records
    (run / "flags.txt").write_text("--teacher=mine.keras\n")  # relative to where it ran
    (run / "versions.json").write_text(json.dumps({"working_directory": str(tmp_path)}))
    assert export.serving.load_runs_teacher(run).name == "outside"  # whatever the cwd is
    (run / "teacher").mkdir()
    make_student(filters=8, name="own").save(run / "teacher" / "teacher.keras")
    assert export.serving.load_runs_teacher(run).name == "own"  # the one it trained first


def test_a_runs_relative_teacher_path_is_read_from_where_the_run_started(tmp_path, monkeypatch):
    run = tmp_path / "run"
    make_run(run)
    started = tmp_path / "project"
    (started / "models").mkdir(parents=True)
    make_student(filters=6, name="relative").save(started / "models" / "mine.keras")
    (run / "flags.txt").write_text("--teacher_path=models/mine.keras\n")
    (run / "versions.json").write_text(json.dumps({"working_directory": str(started)}))
    monkeypatch.chdir(tmp_path)  # the export runs elsewhere
    assert export.serving.load_runs_teacher(run).name == "relative"
    (run / "versions.json").write_text("{damaged")
    assert export.serving.load_runs_teacher(run, log=lambda _: None) is None  # as written


def test_artifact_that_does_not_match_is_not_published(tmp_path, monkeypatch):
    def write_another_student(model, path):
        keras.utils.set_random_seed(7)
        export.build_serving_model(make_student(name="other")).save(path)

    monkeypatch.setitem(export.WRITERS, "keras", write_another_student)
    output = tmp_path / "student.keras"
    with pytest.raises(export.ExportVerificationError, match="differ"):
        export.export_student(make_student(), output, "keras")
    assert os.listdir(tmp_path) == []


def test_an_artifact_that_does_not_reload_is_named_by_its_output_not_its_staging_path(
    tmp_path, monkeypatch
):
    # The message named the staged file (.student.keras.partial-*/new/student.keras), removed
    # by the time it was read: a user went looking for a file that was never there.
    monkeypatch.setitem(export.WRITERS, "keras", lambda model, path: path.write_bytes(b"PK no"))
    output = tmp_path / "student.keras"
    with pytest.raises(export.ExportVerificationError) as refused:
        export.export_student(make_student(), output, "keras")
    assert f"written for {output} does not reload" in str(refused.value)
    assert ".partial-" not in str(refused.value)
    assert os.listdir(tmp_path) == []


# -- damaged run files ---------------------------------------------------------------------------


def make_checksummed_run(workdir: pathlib.Path) -> keras.Model:
    """A run's student and preprocessor, saved the way a run saves them (with their sha256)."""
    from fitnets_tf.run import io

    keras.utils.set_random_seed(0)
    student = make_student()
    io.save_model(student, workdir / export.STUDENT_FILE)
    io.save_model(make_preprocessor(), workdir / export.PREPROCESSOR_FILE)
    return student


def damage(path: pathlib.Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[len(data) // 2 :]
    else:  # one bit flipped in the middle: often still a valid zip, with other weights
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_run_saves_each_model_with_its_sha256(tmp_path):
    from fitnets_tf.run import io

    make_checksummed_run(tmp_path)
    for name in (export.STUDENT_FILE, export.PREPROCESSOR_FILE):
        digest, filename = (tmp_path / f"{name}.sha256").read_text().split()
        assert filename == name and digest == io.file_sha256(tmp_path / name)
    assert export.serving.unverified(tmp_path) == []
    io.save_model(make_student(filters=5), tmp_path / export.STUDENT_FILE)  # saved again
    assert io.checksum_problem(tmp_path / export.STUDENT_FILE) is None
    files = [export.STUDENT_FILE, export.PREPROCESSOR_FILE]
    assert sorted(os.listdir(tmp_path)) == sorted(files + [f"{f}.sha256" for f in files])


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_student_is_refused_by_name_and_nothing_is_written(tmp_path, how):
    make_checksummed_run(tmp_path)
    student = tmp_path / export.STUDENT_FILE
    damage(student, how)
    with pytest.raises(export.ExportError, match="Cannot load the student") as info:
        export.export_student(tmp_path, None, "keras")
    message = str(info.value)
    assert f"{student}', which is damaged: its content" in message
    assert "does not match the sha256 recorded in student.keras.sha256" in message
    assert "summary.json and re-run the training command" in message
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_student_without_checksum_is_caught_by_its_zip_crcs(tmp_path, how):
    make_run(tmp_path)  # saved before runs wrote checksums
    assert export.serving.unverified(tmp_path) == [tmp_path / export.STUDENT_FILE,
                                                   tmp_path / export.PREPROCESSOR_FILE]  # fmt: skip
    damage(tmp_path / export.STUDENT_FILE, how)
    with pytest.raises(export.ExportError, match=r"student .*, which is damaged: it") as info:
        export.export_student(tmp_path, None, "keras")
    assert "not a complete zip" in str(info.value) or "fails its CRC" in str(info.value)
    assert not (tmp_path / "export").exists()


def test_cli_refuses_a_damaged_student_without_traceback_and_leaves_the_output(tmp_path):
    make_checksummed_run(tmp_path / "run")
    damage(tmp_path / "run" / export.STUDENT_FILE, "flip")
    output = tmp_path / "served" / "student.keras"
    output.parent.mkdir()
    output.write_text("old")
    result = run_python("-m", "fitnets_tf.export", f"--workdir={tmp_path / 'run'}",
                        "--format=keras", f"--output={output}", "--overwrite")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'run' / export.STUDENT_FILE}', which is damaged" in result.stderr
    assert output.read_text() == "old" and os.listdir(output.parent) == ["student.keras"]
    assert not (tmp_path / "run" / "export").exists()


def test_a_full_disk_fails_every_format_clearly_and_keeps_the_previous_artifacts(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    result = run_python(str(REPO / "tests" / "full_disk_export_check.py"), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    for fmt, (name, message) in outcome["errors"].items():
        assert name == "DiskFullError", (fmt, message)
        assert message.startswith(f"Cannot write the {fmt} export ")
        assert "the file size limit is exceeded" in message and "is unchanged" in message
    assert sorted(outcome["errors"]) == sorted(export.FORMATS)
    assert all(outcome["intact"].values()), outcome["intact"]
    assert outcome["names"] == outcome["expected_names"]  # no staging directory left behind


@pytest.mark.slow  # two training runs of the smoke config (one mode)
def test_a_finished_runs_damaged_student_is_refused_then_repaired_as_the_message_says(tmp_path):
    from conftest import train_cli

    run = tmp_path / "run"
    train = ("--flagfile=configs/smoke.flags", f"--workdir={run}", "--mode=scratch",
             "--nomeasure_latency")  # fmt: skip
    assert train_cli(*train).returncode == 0
    assert {p.name for p in run.rglob("*.sha256")} >= {
        "student.keras.sha256", "preprocessor.keras.sha256", "teacher.keras.sha256"}  # fmt: skip
    damage(run / export.STUDENT_FILE, "flip")
    refused = run_python("-m", "fitnets_tf.export", f"--workdir={run}", "--format=keras",
                         "--nolatency")  # fmt: skip
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "which is damaged" in refused.stderr and not (run / "export").exists()
    (run / "summary.json").unlink()  # what the message says to do
    again = train_cli(*train)
    assert again.returncode == 0 and "Epoch 1/" not in again.stdout  # nothing retrained
    exported = run_python("-m", "fitnets_tf.export", f"--workdir={run}", "--format=keras",
                          "--nolatency")  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (run / "export" / "student.keras").is_file()


def test_staging_left_by_a_killed_export_is_removed_by_the_next(tmp_path):
    from fitnets_tf.run import lock

    output = tmp_path / "student.keras"
    killed = tmp_path / ".student.keras.partial-killed"  # its writer died: lock not held
    with lock.hold(killed):
        (killed / "new").mkdir()
    unknown = tmp_path / ".student.keras.partial-nolock"  # no lock file: not provably stale
    unknown.mkdir()
    other = tmp_path / ".other.keras.partial-killed"  # another output's: not ours to judge
    with lock.hold(other):
        pass
    live = tmp_path / ".student.keras.partial-live"
    with lock.hold(live):  # a live export to the same path (this process stands in for it)
        export.export_student(make_student(), output, "keras")
        assert live.is_dir()
    assert sorted(os.listdir(tmp_path)) == sorted(
        [output.name, unknown.name, other.name, live.name]
    )


def test_an_export_killed_between_its_renames_gets_the_old_artifact_back(tmp_path):
    from fitnets_tf.run import lock

    output = tmp_path / "student.keras"
    killed = tmp_path / ".student.keras.partial-killed"
    with lock.hold(killed):  # the old artifact was moved aside, the new one not yet in
        make_student(name="old").save(tmp_path / "old.keras")
        os.replace(tmp_path / "old.keras", killed / "previous")
    with pytest.raises(export.OutputExistsError):  # it is back before the new one is published
        export.export_student(make_student(), output, "keras")
    assert keras.saving.load_model(output).name == "old" and not killed.exists()


def test_sigterm_mid_export_leaves_no_staging_directory(tmp_path):
    """Python's default SIGTERM skips `finally`; the CLI turns it into an exit that runs it."""
    import signal
    import time

    make_run(tmp_path / "run")
    script = (
        "import sys, time\n"
        "from fitnets_tf.cli import export as cli\n"
        "from fitnets_tf import export\n"
        "def slow(model, path):\n"
        "    path.write_text('half'); print('writing', flush=True); time.sleep(60)\n"
        "export.WRITERS['keras'] = slow\n"
        f"sys.argv = ['fitnets-export', '--workdir={tmp_path / 'run'}', '--format=keras',"
        " '--nolatency']\n"
        "cli.entry_point()\n"
    )
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lines = iter(proc.stdout.readline, "")  # the CLI may print notes first
        assert "writing" in (line.strip() for line in lines), proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM
    assert not (tmp_path / "run" / "export").exists()  # made for the artifact, removed with it


def test_a_student_file_given_as_the_run_directory_names_the_directory(tmp_path):
    make_run(tmp_path / "run")
    student_file = tmp_path / "run" / export.STUDENT_FILE
    with pytest.raises(export.MissingStudentError, match="is a file, not a run directory") as info:
        export.export_student(student_file, None, "keras")
    assert f"--workdir={tmp_path / 'run'}," in str(info.value)
    mine = tmp_path / "mine.keras"  # a student outside any run: how to export it
    make_student().save(mine)
    with pytest.raises(export.MissingStudentError, match=r"keras.saving.load_model\(PATH\)"):
        export.export_student(mine, None, "keras")
    assert not (tmp_path / "run" / "export").exists()


def test_an_output_that_would_replace_the_run_is_refused_even_with_overwrite(tmp_path):
    run = tmp_path / "runs" / "mine"
    make_run(run)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for output, fmt in [(run, "saved_model"), (tmp_path / "runs", "saved_model"),
                        (run / export.STUDENT_FILE, "keras"), (run, "all")]:  # fmt: skip
        with pytest.raises(export.ExportConfigError, match="would replace what training wrote"):
            export.export_student(run, output, fmt, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    # Its export/ directory and new paths inside the run are the user's to write.
    export.export_student(run, run / "export" / "mine.keras", "keras")
    export.export_student(run, run / "deploy" / "student.keras", "keras")


def test_a_modes_student_is_exported_with_the_runs_preprocessing(tmp_path):
    run = tmp_path / "run"
    student, _ = make_run(run)
    (run / "flags.txt").write_text("--mode=fitnet,kd\n")
    (run / "kd").mkdir()
    make_student(filters=6, name="kd_student").save(run / "kd" / export.STUDENT_FILE)
    path = export.export_student(run / "kd", tmp_path / "kd.keras", "keras",
                                 include_preprocessing=True)  # fmt: skip
    served = keras.saving.load_model(path)
    assert served.get_layer("kd_student") is not None and served.get_layer("preprocessor")


def test_a_modes_export_guards_and_times_within_its_run(tmp_path):
    # RUN/kd was taken for the run: --output=RUN/student.keras --overwrite replaced the run's
    # own student, and the run's teacher (RUN/teacher/) was left out of the timing unsaid.
    run = tmp_path / "run"
    make_run(run)
    (run / "flags.txt").write_text("--mode=fitnet,kd\n")
    (run / "kd").mkdir()
    make_student(filters=6, name="kd_student").save(run / "kd" / export.STUDENT_FILE)
    (run / "teacher").mkdir()
    make_student(filters=8, name="own").save(run / "teacher" / "teacher.keras")
    before = (run / export.STUDENT_FILE).read_bytes()
    with pytest.raises(export.ExportConfigError, match="would replace what training wrote"):
        export.export_student(run / "kd", run / export.STUDENT_FILE, "keras", overwrite=True)
    assert (run / export.STUDENT_FILE).read_bytes() == before
    export.export_student(run / "kd", None, "keras")  # its own export/ stays writable
    export.export_student(run / "kd", None, "keras", overwrite=True)
    assert (run / "kd" / "export" / "student.keras").is_file()
    assert export.serving.load_runs_teacher(run / "kd").name == "own"


def test_an_open_size_teacher_is_timed_at_the_students_size(tmp_path):
    # A teacher saved with Input((None, None, C)), which runs may use, failed the export's
    # latency table after the artifacts were written ("input_shape must be fully known").
    run = tmp_path / "run"
    make_run(run)
    inputs = keras.Input((None, None, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(5)(h), name="open").save(tmp_path / "open.keras")
    (run / "flags.txt").write_text(f"--teacher_path={tmp_path / 'open.keras'}\n")
    models = export.serving.timed_models(run)
    assert models["teacher"].inputs[0].shape == (None, *SHAPE)
    assert models["teacher"].name == "open" and models["student"].name == "student"


def test_a_home_relative_path_is_the_users_home(tmp_path, monkeypatch):
    # `--output='~/x.keras'` (quoted, so the shell leaves ~) wrote into a folder named "~".
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "home" / "run")
    path = export.export_student("~/run", "~/exported/s.keras", "keras")
    assert path == tmp_path / "home" / "exported" / "s.keras" and path.is_file()
    assert not (tmp_path / "~").exists()


# -- class names ---------------------------------------------------------------------------------


def test_class_names_given_travel_in_every_format_but_keras(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    names = ("T-shirt", "trouser", "pullover", "dress", "coat")  # a tuple, as a DatasetSpec's
    paths = export.export_student(make_student(), tmp_path / "served", "all", class_names=names)
    assert {fmt: labels.read(path, fmt) for fmt, path in paths.items()} == {
        "saved_model": list(names), "onnx": list(names), "litert": list(names), "keras": None,
    }  # fmt: skip
    saved_names = paths["saved_model"] / "assets.extra" / "class_names.json"
    assert saved_names.read_text(encoding="utf-8") == (
        '["T-shirt", "trouser", "pullover", "dress", "coat"]'
    )
    assert sorted(os.listdir(tmp_path / "served")) == sorted(p.name for p in paths.values())


def test_none_and_a_model_without_a_run_write_no_class_names(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    make_run(tmp_path / "run", class_names=CLASS_NAMES)
    paths = export.export_student(tmp_path / "run", tmp_path / "none", "all", class_names=None)
    assert {fmt: labels.read(path, fmt) for fmt, path in paths.items()} == dict.fromkeys(
        export.FORMATS
    )
    assert not (paths["saved_model"] / "assets.extra").exists()
    # "auto", the default, with a model rather than a run directory: no run, no names.
    path = export.export_student(make_student(), tmp_path / "model_saved_model", "saved_model")
    assert labels.read(path, "saved_model") is None


def _bad_run(tmp_path, summary_text: str):
    make_run(tmp_path / "run")
    RunLayout(tmp_path / "run").summary.write_text(summary_text)
    return tmp_path / "run"


@pytest.mark.parametrize(
    "source, fmt, class_names, error, message",
    [
        ("model", "onnx", ["a", "b"], export.ExportConfigError,
         r"`class_names` has 2 names but the student has 5 outputs .*give exactly 5"),
        ("model", "saved_model", ["a", "b", "c", "d", 5], export.ExportConfigError,
         r"`class_names` must be strings; entries 4 \(int\) are not"),
        ("model", "litert", "a,b,c,d,e", export.ExportConfigError,
         r"must be 'auto', None or a list of 5 strings"),
        ("model", "keras", CLASS_NAMES, export.ExportConfigError,
         r"The keras format has no place for class names.*class_names=None"),
        ('{"class_names": ["a", "b", "c"]}', "onnx", "auto", export.ExportConfigError,
         r"summary.json's class_names has 3 names but the student has 5 outputs"),
        ("{damaged", "onnx", "auto", export.ExportError,
         r"Cannot read the class names in .*summary.json"),
    ],
    ids=["count", "not-strings", "a-string", "keras", "run-count", "run-damaged"],
)  # fmt: skip
def test_bad_class_names_are_refused_before_anything_is_written(
    tmp_path, source, fmt, class_names, error, message
):
    if source == "model":
        source, output = make_student(), tmp_path / "out" / export.default_output(".", fmt).name
    else:
        source, output = _bad_run(tmp_path, source), None
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(error, match=message):
        export.export_student(source, output, fmt, class_names=class_names)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("failure", ["wrong names", "crash"])
def test_class_names_that_do_not_read_back_leave_nothing(tmp_path, monkeypatch, failure):
    def write_wrong(path, names):
        labels.write_saved_model(path, names[::-1])

    def crash(path, names):
        labels.write_saved_model(path, names)  # the names file is written, then ...
        raise OSError("interrupted")

    broken = write_wrong if failure == "wrong names" else crash
    monkeypatch.setitem(labels.WRITERS, "saved_model", broken)
    output = tmp_path / "export" / "student_saved_model"
    error = export.ExportVerificationError if failure == "wrong names" else OSError
    with pytest.raises(error, match="read back as" if failure == "wrong names" else "interrupted"):
        export.export_student(make_student(), output, "saved_model", class_names=CLASS_NAMES)
    assert os.listdir(tmp_path) == [], "artifact, names file, staging or export/ folder left"


def test_a_modes_student_carries_the_runs_class_names(tmp_path):
    run = tmp_path / "run"
    make_run(run, class_names=CLASS_NAMES)
    (run / "flags.txt").write_text("--mode=fitnet,kd\n")
    (run / "kd").mkdir()
    make_student(filters=6, name="kd_student").save(run / "kd" / export.STUDENT_FILE)
    path = export.export_student(run / "kd", tmp_path / "kd_saved_model", "saved_model")
    assert labels.read(path, "saved_model") == CLASS_NAMES
