"""Tests of fitnets_tf.export.accuracy: a quantized export measures and keeps its test accuracy."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from fitnets_tf import data, export
from fitnets_tf.errors import DiskFullError
from fitnets_tf.export import accuracy, quantize
from fitnets_tf.preprocessing import Preprocessor


def synthetic_run(workdir):
    """A finished run's files as the export reads them, on the generated data (offline)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Dense(10, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, x, name="student").save(workdir / "student.keras")
    keras.Model(inputs, Preprocessor(mode="scale")(inputs)).save(workdir / "preprocessor.keras")
    (workdir / "flags.txt").write_text("--dataset=synthetic\n--validation_size=16\n")
    return workdir


def _export(run, *flags: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "fitnets_tf.export", f"--workdir={run}", "--nolatency", *flags],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_a_quantized_export_prints_and_keeps_both_accuracies(tmp_path):
    run = synthetic_run(tmp_path)
    done = _export(run, "--format=litert", "--quantize=int8", "--accuracy_images=100")
    artifact = run / "export" / "student_int8.tflite"
    kept = json.loads(accuracy.record_path(artifact).read_text())
    # The same numbers, measured here: the first 100 test images of the run's data.
    test = data.load("synthetic", validation_size=16, preprocessing="none", limit=100).test
    batches = list(test.as_numpy_iterator())
    pixels, labels = (np.concatenate(parts) for parts in zip(*batches, strict=True))
    student, preprocessor = export.load_run(run)
    x = keras.ops.convert_to_numpy(preprocessor(pixels))
    served = keras.ops.convert_to_numpy(export.build_serving_model(student)(x)["probabilities"])
    quantized = quantize.run_quantized(artifact, "litert", x)
    expected = np.mean(quantized.argmax(-1) == labels), np.mean(served.argmax(-1) == labels)
    assert kept == {
        "quantization": "int8", "format": "litert", "test_images": 100,
        "accuracy": expected[0], "float32_accuracy": expected[1],
        "difference_points": round(100 * (expected[0] - expected[1]), 2),
        "artifact_sha256": accuracy.io.file_sha256(artifact),
    }  # fmt: skip
    assert (f"Test accuracy on 100 images: quantized (int8, litert) {100 * expected[0]:.2f}%, "
            f"float32 student {100 * expected[1]:.2f}%, difference "
            f"{kept['difference_points']:+.2f} points (kept in "
            f"{accuracy.record_path(artifact)}).") in done.stdout  # fmt: skip


@pytest.mark.slow  # four exports in subprocesses, ~30 s
def test_an_unmeasured_export_succeeds_says_why_and_keeps_no_stale_record(tmp_path):
    run = synthetic_run(tmp_path)
    artifact = run / "export" / "student_dynamic.tflite"
    _export(run, "--format=litert", "--quantize=dynamic", "--accuracy_images=50")
    assert accuracy.record_path(artifact).is_file()
    # Replaced by an export that measures nothing: the earlier artifact's record goes with it.
    done = _export(run, "--format=litert", "--quantize=dynamic", "--accuracy_images=0",
                   "--overwrite")  # fmt: skip
    assert "Accuracy not measured (--accuracy_images=0)." in done.stdout
    assert sorted(p.name for p in (run / "export").iterdir()) == [artifact.name]
    # A dataset that is not prepared offline: exported all the same, one line saying why.
    (run / "flags.txt").write_text(f"--dataset=cifar10\n--data_dir={tmp_path / 'tfds'}\n")
    done = _export(run, "--format=litert", "--quantize=dynamic", "--overwrite")
    (line,) = [line for line in done.stdout.splitlines() if "Accuracy" in line]
    assert line.startswith("Accuracy not measured: the run's test images cannot be loaded here (")
    assert "cifar10" in line and artifact.is_file()
    assert not accuracy.record_path(artifact).exists()
    (run / "flags.txt").write_text(f"--dataset=folder:{tmp_path / 'moved'}\n")
    done = _export(run, "--format=litert", "--quantize=dynamic", "--overwrite")
    assert (f"cannot be loaded here (its data, {tmp_path / 'moved'}, no longer exists)."
            in done.stdout)  # fmt: skip


def test_measuring_never_fails_the_export_nor_leaves_an_earlier_record(tmp_path, monkeypatch):
    artifact = tmp_path / "student_int8.tflite"
    artifact.write_bytes(b"the new artifact")
    record = accuracy.record_path(artifact)
    result = {"test_images": 4, "accuracy": 0.5, "float32_accuracy": 0.75,
              "difference_points": -25.0}  # fmt: skip

    def killed(*_, **__):
        raise KeyboardInterrupt

    for measure, line in [
        (killed, None),
        (lambda *_, **__: 1 / 0, "Accuracy not measured: ZeroDivisionError: division by zero."),
    ]:
        record.write_text('{"accuracy": 0.9}')  # the earlier artifact's
        monkeypatch.setattr(accuracy, "measure", measure)
        if line is None:
            with pytest.raises(KeyboardInterrupt):
                accuracy.keep_accuracy(tmp_path, artifact, "litert", "int8")
        else:
            assert accuracy.keep_accuracy(tmp_path, artifact, "litert", "int8") == line
        assert not record.exists()
    monkeypatch.setattr(accuracy, "measure", lambda *_, **__: result)

    def full(path, _):
        raise DiskFullError(f"No space left on the device holding {path}.")

    monkeypatch.setattr(accuracy.io, "write_json", full)
    assert accuracy.keep_accuracy(tmp_path, artifact, "litert", "int8") == (
        "Test accuracy on 4 images: quantized (int8, litert) 50.00%, float32 student 75.00%, "
        f"difference -25.00 points; not kept (No space left on the device holding {record}.)."
    )
    assert artifact.read_bytes() == b"the new artifact" and not record.exists()
