"""Tests of fitnets_tf.export.destination.

One export per output path: a second refused at once, naming the first, leaving nothing in the
user's folder.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import keras
import pytest

from fitnets_tf import export
from fitnets_tf.export import destination

REPO = pathlib.Path(__file__).resolve().parents[1]
_HOLD = (
    "import sys, time\nfrom fitnets_tf.export.destination import output_lock\n"
    "with output_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)"
)


def make_student(name: str = "student") -> keras.Model:
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name=name)


def _holder(output: pathlib.Path) -> subprocess.Popen:
    """Another process exporting to ``output``: it holds the path's lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(output)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def _recording_writers(monkeypatch) -> list[str]:
    """The formats a conversion was started for."""
    started = []
    for fmt, write in list(export.WRITERS.items()):
        monkeypatch.setitem(export.WRITERS, fmt,
                            lambda m, p, fmt=fmt, w=write: (started.append(fmt), w(m, p)))  # fmt: skip
    return started


@pytest.mark.parametrize("fmt, name", [("keras", "student.keras"), ("saved_model", "sm")])
def test_a_second_export_to_one_path_is_refused_at_once_naming_the_first(
    tmp_path, monkeypatch, fmt, name
):
    # Both exports converted and renamed: the last rename won, and between the renames of a
    # SavedModel one of them failed with ENOTEMPTY.
    output = tmp_path / name
    export.export_student(make_student("old"), output, fmt)
    before = sorted(os.listdir(tmp_path))
    started = _recording_writers(monkeypatch)
    holder = _holder(output)
    try:
        with pytest.raises(export.OutputBusyError, match=f"by PID {holder.pid} on ") as info:
            export.export_student(make_student(), output, fmt, overwrite=True)
        assert "nothing was written" in str(info.value) and "--output" in str(info.value)
        assert started == [], "converted before it was refused"
        lock_file = destination.lock_path(output).name  # the holder's, removed as it ends
        assert sorted(os.listdir(tmp_path)) == sorted([*before, lock_file])
    finally:
        holder.kill()  # SIGKILL: its lock file stays, unlocked
        holder.wait()
    export.export_student(make_student(), output, fmt, overwrite=True)  # a dead holder's is free
    assert started == [fmt] and sorted(os.listdir(tmp_path)) == before, "lock file left"


def test_a_second_quantized_export_is_refused_before_its_calibration(tmp_path):
    output = tmp_path / "out" / "student.tflite"
    make_student().save(tmp_path / "student.keras")
    holder = _holder(output)
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "fitnets_tf.export", f"--workdir={tmp_path}", "--nolatency",
             "--quantize=dynamic", "--format=litert", f"--output={output}"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode != 0
    assert f"by PID {holder.pid} on " in refused.stderr, refused.stderr[-3000:]
    assert "nothing was written" in refused.stderr
    assert os.listdir(output.parent) == [destination.lock_path(output).name]  # the holder's


def test_the_lock_is_nested_in_one_process_and_removed_after(tmp_path):
    output = tmp_path / "new" / "student.onnx"
    with destination.output_lock(output):
        assert destination.lock_path(output).is_file()
        with destination.output_lock(tmp_path / "new" / ".." / "new" / "student.onnx"):
            pass  # the caller's own lock, as publish takes it again inside export_student
        assert destination.lock_path(output).is_file()
    assert os.listdir(output.parent) == []
