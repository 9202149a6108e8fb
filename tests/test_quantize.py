"""Tests of fitnets_tf.export.quantize and `fitnets-export --quantize` on a tiny student."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from fitnets_tf import data, export
from fitnets_tf.errors import DiskFullError, ExportConfigError, OutputExistsError
from fitnets_tf.export import labels, quantize
from fitnets_tf.layers import CeilMaxPooling2D, MaxoutConv2D
from fitnets_tf.preprocessing import Preprocessor

SHAPE = (8, 8, 1)


def tiny_student(shape=SHAPE) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    x = MaxoutConv2D(4, 3, pieces=2, kernel_initializer="he_uniform")(inputs)
    x = CeilMaxPooling2D(2, 2)(x)  # tiles the 6x6 map: no -3e38 overhang to calibrate
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="student")


def images(n: int = 64) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, *SHAPE)).astype("float32")


@pytest.mark.parametrize(
    "quantization, fmt, suffix",
    [("dynamic", "litert", ".tflite"), ("int8", "litert", ".tflite"), ("int8", "onnx", ".onnx")],
)
def test_quantized_model_is_written_loads_and_predicts_as_float32(
    tmp_path, quantization, fmt, suffix
):
    serving = export.build_serving_model(tiny_student())
    path = quantize.export_quantized(
        serving, tmp_path / f"student{suffix}", quantization, fmt, calibration=images(),
        class_names=["zero", "one", "two"],
    )  # fmt: skip
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no staging
    assert labels.read(path, fmt) == ["zero", "one", "two"]  # as the float exports carry them
    probe = images()[:6]
    got = quantize.run_quantized(path, fmt, probe)
    expected = keras.ops.convert_to_numpy(serving(probe)["probabilities"])
    assert got.shape == (6, 3)
    np.testing.assert_allclose(got, expected, atol=0.05)
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize(
    "quantization, fmt, kwargs, message",
    [
        ("float16", "litert", {}, "must be one of dynamic, int8"),
        ("dynamic", "onnx", {}, "applies to the litert format(s), not 'onnx'"),
        ("int8", "keras", {}, "not 'keras'"),
        ("int8", "litert", {"raw": True}, "include_preprocessing"),
    ],
)
def test_unsupported_combinations_are_refused(quantization, fmt, kwargs, message):
    with pytest.raises(ExportConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        quantize.check(quantization, fmt, **kwargs)


def test_int8_without_calibration_images_is_refused_before_converting(tmp_path):
    serving = export.build_serving_model(tiny_student())
    with pytest.raises(ExportConfigError, match="needs calibration images"):
        quantize.export_quantized(serving, tmp_path / "student.tflite", "int8")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_before_converting(tmp_path):
    (tmp_path / "student.tflite").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        quantize.export_quantized(tiny_student(), tmp_path / "student.tflite", "dynamic")
    assert (tmp_path / "student.tflite").read_bytes() == b"old"
    (tmp_path / "notes.tflite").mkdir()  # not an earlier artifact: --overwrite does not apply
    (tmp_path / "notes.tflite" / "mine.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.tflite is a directory, not a .tflite file"):
        quantize.export_quantized(tiny_student(), tmp_path / "notes.tflite", "dynamic",
                                  overwrite=True)  # fmt: skip
    assert os.listdir(tmp_path / "notes.tflite") == ["mine.txt"]


def _writer_finding_no_room(*_):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_an_overwrite_keeps_the_old_artifact_until_the_new_one_is_in(tmp_path, monkeypatch):
    # The old file was deleted before the new one was renamed into place: a kill in between
    # left no artifact at all.
    output = tmp_path / "student.tflite"
    old = b"\x1c\x00\x00\x00TFL3 old"  # LiteRT's identifier: an earlier artifact, replaceable
    output.write_bytes(old)
    serving = export.build_serving_model(tiny_student())
    real_replace = os.replace

    def killed_at_the_final_rename(src, dst):
        if pathlib.Path(dst) == output and pathlib.Path(src).name == output.name:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed_at_the_final_rename)
        with pytest.raises(KeyboardInterrupt):
            quantize.export_quantized(serving, output, "dynamic", "litert", overwrite=True)
    assert output.read_bytes() == old and os.listdir(tmp_path) == [output.name]
    with monkeypatch.context() as patch:  # a full disk is the user's to fix, and says so
        patch.setitem(quantize.WRITERS, ("dynamic", "litert"), _writer_finding_no_room)
        with pytest.raises(DiskFullError, match="artifact already there is unchanged"):
            quantize.export_quantized(serving, output, "dynamic", "litert", overwrite=True)
    assert output.read_bytes() == old and os.listdir(tmp_path) == [output.name]
    quantize.export_quantized(serving, output, "dynamic", "litert", overwrite=True)
    assert output.read_bytes()[4:8] == b"TFL3"  # the new one, a LiteRT flatbuffer


def test_cli_quantize(tmp_path):
    tiny_student().save(tmp_path / "student.keras")
    (tmp_path / "summary.json").write_text('{"class_names": ["zero", "one", "two"]}')
    base = [sys.executable, "-m", "fitnets_tf.export", f"--workdir={tmp_path}", "--nolatency"]
    refused = subprocess.run([*base, "--format=onnx", "--quantize=dynamic"], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "not 'onnx'" in refused.stderr
    assert not (tmp_path / "export").exists()  # refused before any work
    done = subprocess.run([*base, "--format=litert", "--quantize=dynamic"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    quantized = tmp_path / "export" / "student_dynamic.tflite"
    assert labels.read(quantized, "litert") == ["zero", "one", "two"]  # the run's
    named = tmp_path / "elsewhere" / "q.tflite"
    done = subprocess.run([*base, "--format=litert", "--quantize=dynamic", f"--output={named}",
                           "--class_names=none"], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert named.is_file() and labels.read(named, "litert") is None


def synthetic_run(
    tmp_path, flags="--dataset=synthetic\n--validation_size=16\n--noretrain_on_all\n"
):
    """A finished run's files as export reads them: flags.txt, student, fitted preprocessing."""
    tiny_student((28, 28, 1)).save(tmp_path / "student.keras")
    raw = keras.Input((28, 28, 1))
    keras.Model(raw, Preprocessor(mode="scale")(raw)).save(tmp_path / "preprocessor.keras")
    (tmp_path / "flags.txt").write_text(flags)
    return tmp_path


def test_calibration_source_is_read_from_the_runs_flags(tmp_path):
    (tmp_path / "x").mkdir()
    run = synthetic_run(tmp_path, f"--dataset=folder:{tmp_path / 'x'}\n--image_size=20,24\n"
                                  "--retrain_on_all\n--data_dir=/d\n--validation_size=7\n"
                                  "--batch_size=64\n--resize_mode=crop\n")  # fmt: skip
    # A run without data.json was started before runs recorded their data: its draw was random
    # (tests/test_holdout.py follows the draw to the calibration images).
    assert quantize.calibration_source(run) == {
        "name": f"folder:{tmp_path / 'x'}", "image_size": (20, 24), "resize_mode": "crop",
        "retrain_on_all": True, "data_dir": "/d", "validation_size": 7, "holdout": "random",
    }  # fmt: skip
    # A mode's directory (RUN/fitnet) holds its own student but not flags.txt: its run's.
    (run / "fitnet").mkdir()
    assert quantize.calibration_source(run / "fitnet") == quantize.calibration_source(run)
    (run / "flags.txt").unlink()
    with pytest.raises(ExportConfigError, match="names no --dataset"):
        quantize.calibration_source(run)


def test_calibration_images_are_the_training_split_through_the_runs_preprocessor(tmp_path):
    source = quantize.calibration_source(synthetic_run(tmp_path))
    got = quantize.calibration_images(source, Preprocessor(mode="scale"), count=5)
    raw = data.load("synthetic", validation_size=16, preprocessing="none", limit=5)
    assert got.shape == (5, 28, 28, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, raw.train_examples[0].numpy() / 255.0, rtol=1e-6)
    assert got.max() > 0.5  # scaled once, not twice


def test_calibration_without_the_runs_preprocessor_is_refused(tmp_path):
    # Refitting here would fit on the calibration images alone, in the dataset's default mode,
    # which need not be the run's: refused, naming the missing file and the alternatives.
    source = quantize.calibration_source(synthetic_run(tmp_path))
    with pytest.raises(ExportConfigError, match="preprocessor.keras.*missing.*quantize='dynamic'"):
        quantize.calibration_images(source, None, count=5)


def test_cli_int8_calibrates_on_the_runs_training_images(tmp_path):
    run = synthetic_run(tmp_path)
    base = [sys.executable, "-m", "fitnets_tf.export", f"--workdir={run}", "--nolatency"]
    done = subprocess.run([*base, "--format=onnx", "--quantize=int8"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "export" / "student_int8.onnx").is_file()
    (run / "flags.txt").unlink()  # no dataset to calibrate on: refused before any work
    refused = subprocess.run([*base, "--format=litert", "--quantize=int8"], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "names no --dataset" in refused.stderr
    assert not (run / "export" / "student_int8.tflite").exists()


def test_calibration_paths_are_relative_to_where_the_run_was_started(tmp_path, monkeypatch):
    started = tmp_path / "project"  # `fitnets-train --dataset=folder:images` ran here
    (started / "run").mkdir(parents=True)
    run = synthetic_run(started / "run", "--dataset=folder:images\n--data_dir=tfds\n")
    (run / "versions.json").write_text(f'{{"working_directory": "{started}"}}')
    (started / "images").mkdir()
    elsewhere = tmp_path / "elsewhere"  # the export runs from another directory
    (elsewhere / "images").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    source = quantize.calibration_source(run)
    assert source["name"] == f"folder:{started / 'images'}"
    assert source["data_dir"] == str(started / "tfds")
    (run / "versions.json").write_text("{}")  # a run from before this was recorded: as given
    assert quantize.calibration_source(run)["name"] == "folder:images"


def test_a_runs_moved_image_folder_is_named_with_a_fix_the_export_has(tmp_path):
    # The folder's own message said to "give --dataset=folder:PATH", a flag the export lacks.
    started = tmp_path / "project"
    (started / "run").mkdir(parents=True)
    run = synthetic_run(started / "run", "--dataset=folder:images\n")
    (run / "versions.json").write_text(f'{{"working_directory": "{started}"}}')
    with pytest.raises(ExportConfigError) as refused:
        quantize.calibration_source(run)
    message = str(refused.value)
    assert f"read from '{started / 'images'}' ('images' in {run / 'flags.txt'}, relative to the " \
           "directory the run was started from), which no longer exists. Put the images back " \
           "there" in message and "quantize='dynamic'" in message and "--dataset" not in message


@pytest.mark.parametrize("raw", [False, True])
def test_without_calibration_a_raw_model_is_checked_on_pixel_values(tmp_path, monkeypatch, raw):
    probes = []
    monkeypatch.setattr(quantize, "_verify", lambda path, fmt, serving, probe, *_: probes.append(probe))
    preprocessor = Preprocessor(mode="scale") if raw else None
    serving = export.build_serving_model(tiny_student(), preprocessor)
    quantize.export_quantized(serving, tmp_path / "student.tflite", "dynamic", raw=raw)
    (probe,) = probes
    assert probe.shape == (4, *SHAPE)
    assert (probe.min() >= 0 and probe.max() > 100) if raw else abs(probe).max() < 10


def _old_folder_run(tmp_path, recorded: bool):
    """A folder run started when its first image (32x32, sorting first) decided the size: the
    folder's default is now its most common size, 28x28."""
    rng = np.random.default_rng(0)
    for name, size in [("a/0000.png", 32)] + [(f"{c}/{i:04d}.png", 28) for c in "ab"
                                              for i in range(1, 7)]:  # fmt: skip
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 1), dtype=np.uint8)
        (tmp_path / "images" / name).write_bytes(tf.io.encode_png(pixels).numpy())
    run = tmp_path / "run"
    run.mkdir()
    (run / "flags.txt").write_text(f"--dataset=folder:{tmp_path / 'images'}\n"
                                   "--validation_size=2\n")  # fmt: skip
    if recorded:
        (run / "data.json").write_text('{"input_shape": [32, 32, 1]}')
    raw = keras.Input((32, 32, 1))
    return run, keras.Model(raw, Preprocessor(mode="scale")(raw))


@pytest.mark.parametrize("recorded", [True, False])
def test_an_old_folder_run_calibrates_at_the_size_it_trained_on(tmp_path, recorded):
    # It read the folder at today's default size, 28x28, and failed in Keras with a traceback.
    run, preprocessor = _old_folder_run(tmp_path, recorded)
    source = quantize.calibration_source(run)
    assert source.get("image_size") == ((32, 32) if recorded else None)  # data.json's
    images = quantize.calibration_images(source, preprocessor, count=5)
    assert images.shape == (5, 32, 32, 1)  # without a record: its preprocessor's input


def test_calibration_images_of_another_shape_than_the_run_trained_on_are_refused(tmp_path):
    source = quantize.calibration_source(synthetic_run(tmp_path))  # 28x28x1 images
    raw = keras.Input((32, 32, 1))
    with pytest.raises(ExportConfigError, match="read as 28x28x1 and the run trained on 32x32x1"):
        quantize.calibration_images(source, keras.Model(raw, Preprocessor("scale")(raw)), 5)
