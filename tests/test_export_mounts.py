"""Exports to a real full disk and a real read-only filesystem: small tmpfs mounts.

Mounting needs root (or CAP_SYS_ADMIN): where ``mount`` is refused, each test is skipped and
says so. tests/full_disk_export_check.py simulates a full disk everywhere (a file-size limit,
EFBIG); these see the kernel's own ENOSPC and EROFS, on every write the export makes (its
lock file, its staging folder, the converters' files).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess

import keras
import pytest

from fitnets_tf import export
from fitnets_tf.export import quantize
from fitnets_tf.run import io


@contextlib.contextmanager
def tmpfs(folder: pathlib.Path, options: str):
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def student(width: int) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(width, name="hidden")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden), name="student")


def listing(folder: pathlib.Path) -> dict[str, str]:
    """Every path under ``folder``, hidden ones included, with each file's sha256."""
    return {str(p.relative_to(folder)): io.file_sha256(p) if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}  # fmt: skip


def fill(folder: pathlib.Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as e:
        assert e.errno == 28  # ENOSPC
    finally:
        os.close(fd)


NAMES = {"saved_model": "sm", "keras": "s.keras", "onnx": "s.onnx", "litert": "s.tflite"}


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_a_disk_that_fills_keeps_the_earlier_export_and_leaves_nothing(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx", reason="tf2onnx writes ONNX", exc_type=ImportError)
    with tmpfs(tmp_path / "disk", "size=2M") as disk:
        output = export.export_student(student(4), disk / NAMES[fmt], fmt)
        before = listing(disk)
        with pytest.raises(export.DiskFullError) as info:  # ~5 MB of weights
            export.export_student(student(20_000), output, fmt, overwrite=True)
        assert str(info.value).startswith(f"Cannot write the {fmt} export {output}: the disk "
                                          "is full. The partial files were removed, and the "
                                          "artifact already there is unchanged. Free space on "
                                          f"{disk}")  # fmt: skip
        assert listing(disk) == before


@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_a_disk_already_full_is_named_and_left_as_it_was(tmp_path, fmt):
    with tmpfs(tmp_path / "disk", "size=1M") as disk:
        old = export.export_student(student(4), disk / NAMES[fmt], fmt)
        fill(disk)
        before = listing(disk)
        # A bare "OSError: [Errno 28] No space left on device" from the lock file, which then
        # stayed (with the folders made for it): the first write an export makes.
        for output in (old, disk / "new" / "deeper" / NAMES[fmt]):
            with pytest.raises(export.DiskFullError) as info:
                export.export_student(student(4), output, fmt, overwrite=True)
            kept = " and the artifact already there is unchanged" if output == old else ""
            assert str(info.value) == (
                f"Cannot export to {output}: the disk is full ({disk}), with no room even for the "
                f"export's lock file; nothing was written{kept}. Free space on {disk} (or choose "
                "another --output), then export again."
            )
            assert listing(disk) == before


def test_a_read_only_filesystem_is_refused_before_any_work(tmp_path, monkeypatch):
    started = []
    monkeypatch.setitem(export.WRITERS, "keras", lambda m, p: started.append(p))
    with tmpfs(tmp_path / "ro", "ro,size=1M") as ro:
        for output in (ro / "s.keras", ro / "new" / "s.keras"):
            with pytest.raises(export.OutputNotWritableError) as info:
                export.export_student(student(4), output, "keras")
            assert str(info.value) == (
                f"Cannot export to {output}: {ro} is on a read-only filesystem; nothing was "
                "written. Choose an --output on a writable one."
            )
            assert isinstance(info.value, PermissionError)
        assert started == [] and listing(ro) == {}


def test_a_quantized_export_on_a_disk_that_fills_keeps_the_earlier_one(tmp_path):
    with tmpfs(tmp_path / "disk", "size=2M") as disk:
        output = quantize.export_quantized(export.build_serving_model(student(4)),
                                           disk / "s.tflite", "dynamic")  # fmt: skip
        before = listing(disk)
        with pytest.raises(export.DiskFullError, match=f"^Cannot write the litert export "
                           f"{output}: the disk is full. The partial files were removed, and "
                           "the artifact already there is unchanged"):  # fmt: skip
            quantize.export_quantized(export.build_serving_model(student(40_000)), output,
                                      "dynamic", overwrite=True)  # ~2.6 MB of int8 weights
        assert listing(disk) == before
