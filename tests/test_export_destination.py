"""Tests of fitnets_tf.export.destination and the renames of fitnets_tf.export.publish.

One export per output path (a second refused at once, naming the first, leaving nothing in the
user's folder); an unwritable destination refused before any work; what a real SIGKILL at the
final rename leaves, for a file and for a SavedModel folder.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import keras
import pytest

from fitnets_tf import export
from fitnets_tf.export import destination, quantize

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
        recording = lambda m, p, fmt=fmt, w=write: (started.append(fmt), w(m, p))  # noqa: E731
        monkeypatch.setitem(export.WRITERS, fmt, recording)
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


def test_an_output_in_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    started = _recording_writers(monkeypatch)
    (tmp_path / "notes").write_text("mine")
    for output in (tmp_path / "notes" / "s.keras", tmp_path / "notes" / "new" / "s.onnx"):
        with pytest.raises(export.OutputNotWritableError, match="notes is a file, not a folder"):
            export.export_student(make_student(), output, output.suffix.strip(".") or "keras")
    with pytest.raises(export.OutputNotWritableError, match="nothing was written"):
        quantize.export_quantized(export.build_serving_model(make_student()),
                                  tmp_path / "notes" / "s.tflite", "dynamic")  # fmt: skip
    assert started == [] and os.listdir(tmp_path) == ["notes"]


def test_an_unwritable_folder_is_named_before_any_work(tmp_path, monkeypatch):
    # It was found only when the staging folder was made, as a bare OSError naming that folder.
    shared, old = tmp_path / "shared", tmp_path / "old_sm"
    shared.mkdir()
    export.export_student(make_student(), old, "saved_model")
    started = _recording_writers(monkeypatch)
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: pathlib.Path(path) not in
                        (shared, old) and real(path, mode, **kw))  # fmt: skip
    with pytest.raises(export.OutputNotWritableError) as info:
        export.export_student(make_student(), shared / "new" / "s.keras", "keras")
    message = str(info.value)
    assert f"Cannot export to {shared / 'new' / 's.keras'}: {shared} is not writable" in message
    assert ".partial-" not in message and f"make {shared} writable" in message
    assert isinstance(info.value, PermissionError) and os.listdir(shared) == []
    # An --overwrite moves the old SavedModel folder aside: Linux needs to write its "..".
    with pytest.raises(export.OutputNotWritableError, match=f"{old} is not writable"):
        export.export_student(make_student(), old, "saved_model", overwrite=True)
    assert started == [] and sorted(os.listdir(tmp_path)) == ["old_sm", "shared"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a folder without write permission")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    try:
        with pytest.raises(export.OutputNotWritableError, match="ro is not writable by you"):
            export.export_student(make_student(), tmp_path / "ro" / "s.keras", "keras")
    finally:
        (tmp_path / "ro").chmod(0o755)


def _killed_at_the_rename(output: pathlib.Path, fmt: str, exchange: bool = True
                          ) -> subprocess.CompletedProcess:  # fmt: skip
    """An ``--overwrite`` of ``output`` SIGKILLed right after the first rename or exchange that
    moves it (the old artifact aside, or the new one in); with ``exchange=False``, on a system
    whose filesystem cannot exchange two paths."""
    script = (
        "import os, pathlib, signal, sys, keras\nfrom fitnets_tf import export\n"
        "from fitnets_tf.run import swap\n"
        "output = pathlib.Path(sys.argv[1])\n"
        "def killing(real):\n    def moved(src, dst):\n        done = real(src, dst)\n"
        "        if output in (pathlib.Path(src), pathlib.Path(dst)):\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return done\n    return moved\n"
        "os.replace = killing(os.replace)\n"
        "swap.exchange = killing(swap.exchange) if sys.argv[3] == '1' else lambda a, b: False\n"
        "x = keras.Input((4, 4, 1))\n"
        "new = keras.Model(x, keras.layers.Dense(3)(keras.layers.Flatten()(x)), name='new')\n"
        "export.export_student(new, output, sys.argv[2], overwrite=True)\n"
    )
    argv = [sys.executable, "-c", script, str(output), fmt, str(int(exchange))]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_file_artifact_killed_at_its_replacement_is_never_missing(tmp_path):
    # The old file was moved aside, then the new one in: killed between, there was none.
    output = tmp_path / "student.keras"
    export.export_student(make_student("old"), output, "keras")
    old = output.read_bytes()
    killed = _killed_at_the_rename(output, "keras")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert output.read_bytes() != old  # the new one, in in one rename, and complete:
    assert keras.saving.load_model(output).outputs[0].shape == (None, 3)
    export.export_student(make_student("next"), output, "keras", overwrite=True)
    assert os.listdir(tmp_path) == [output.name], "the killed export's files were not removed"


def test_a_saved_model_killed_between_two_renames_is_given_back_by_the_next_export(
    tmp_path, monkeypatch
):
    import tensorflow as tf

    output = tmp_path / "sm"
    export.export_student(make_student(), output, "saved_model")
    old = (output / "saved_model.pb").read_bytes()
    killed = _killed_at_the_rename(output, "saved_model", exchange=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # As documented: without an exchange, a folder cannot replace a folder in one rename; the
    # old one waits aside.
    assert not output.exists()
    (staging,) = tmp_path.glob(".sm.partial-*")
    assert (staging / "previous" / "saved_model.pb").read_bytes() == old
    started = _recording_writers(monkeypatch)
    with pytest.raises(export.OutputExistsError):  # it is back before anything is converted
        export.export_student(make_student(), output, "saved_model")
    assert started == []
    assert (output / "saved_model.pb").read_bytes() == old
    assert "serving_default" in tf.saved_model.load(str(output)).signatures
    assert os.listdir(tmp_path) == [output.name], "the killed export's files were not removed"


def test_a_saved_model_killed_at_its_exchange_is_the_new_one_and_complete(tmp_path):
    import tensorflow as tf

    output = tmp_path / "sm"
    export.export_student(make_student(), output, "saved_model")
    old = (output / "saved_model.pb").read_bytes()
    killed = _killed_at_the_rename(output, "saved_model")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (output / "saved_model.pb").read_bytes() != old  # no moment without a SavedModel
    assert "serving_default" in tf.saved_model.load(str(output)).signatures
    export.export_student(make_student("next"), output, "saved_model", overwrite=True)
    assert os.listdir(tmp_path) == [output.name], "the killed export's files were not removed"


@pytest.mark.parametrize("fmt, output, make", [
    ("keras", "s.keras", pathlib.Path.mkdir), ("onnx", "s.onnx", pathlib.Path.mkdir),
    ("saved_model", "sm", pathlib.Path.touch),
])  # fmt: skip
def test_an_empty_folder_where_a_file_goes_or_the_reverse_is_refused(tmp_path, monkeypatch, fmt,
                                                                     output, make):  # fmt: skip
    # Empty, it was taken for free: the file and the folder were exchanged, the folder deleted.
    make(tmp_path / output)
    kind = "a file" if make is pathlib.Path.touch else "a directory"
    started = _recording_writers(monkeypatch)
    with pytest.raises(export.OutputExistsError, match=f"{output} is {kind}, not ") as info:
        export.export_student(make_student(), tmp_path / output, fmt, overwrite=True)
    assert "nothing was written" in str(info.value) and "choose another --output" in str(info.value)
    assert started == [] and os.listdir(tmp_path) == [output]
    assert (tmp_path / output).is_dir() == (kind == "a directory")


def test_the_folders_a_failed_export_made_are_removed(tmp_path, monkeypatch):
    def fail(model, path):
        path.write_bytes(b"half")
        raise RuntimeError("converter crashed")

    monkeypatch.setitem(export.WRITERS, "onnx", fail)
    (tmp_path / "mine").mkdir()
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export_student(make_student(), tmp_path / "mine" / "a" / "b" / "s.onnx", "onnx")
    assert os.listdir(tmp_path) == ["mine"] and os.listdir(tmp_path / "mine") == []
    # The folders it makes for an export that succeeds stay, with the artifact in them.
    output = export.export_student(make_student(), tmp_path / "mine" / "a" / "s.keras", "keras")
    assert os.listdir(output.parent) == ["s.keras"]
