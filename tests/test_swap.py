"""Tests of fitnets_tf.run.swap (two paths exchanged in one step) and of the folder
replacements that use it (fitnets_tf.run.io.atomic_path)."""

from __future__ import annotations

import errno
import os

import pytest

from fitnets_tf.run import io, swap


def _folder(path, text):
    path.mkdir()
    (path / "content").write_text(text)
    return path


def test_two_folders_are_exchanged_in_one_step(tmp_path):
    a, b = _folder(tmp_path / "a", "A"), _folder(tmp_path / "b", "B")
    assert swap.exchange(a, b)  # ext4 and tmpfs, where the tests run, can
    assert (a / "content").read_text() == "B" and (b / "content").read_text() == "A"


def test_a_missing_path_is_an_error_not_a_silent_fallback(tmp_path):
    with pytest.raises(OSError) as raised:
        swap.exchange(_folder(tmp_path / "a", "A"), tmp_path / "missing")
    assert raised.value.errno == errno.ENOENT
    assert (tmp_path / "a" / "content").read_text() == "A"


def test_a_system_without_renameat2_falls_back_with_nothing_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(swap, "_RENAMEAT2", None)
    a, b = _folder(tmp_path / "a", "A"), _folder(tmp_path / "b", "B")
    assert not swap.exchange(a, b)
    assert (a / "content").read_text() == "A" and (b / "content").read_text() == "B"


def _no_folder_renames(monkeypatch):
    real = os.replace

    def files_only(src, dst):
        assert not os.path.isdir(src), "a folder was renamed: there was a moment without it"
        return real(src, dst)

    monkeypatch.setattr(os, "replace", files_only)


def test_an_atomic_folder_replaces_the_old_one_by_exchange(tmp_path, monkeypatch):
    final = _folder(tmp_path / "saved", "old")
    _no_folder_renames(monkeypatch)
    with io.atomic_path(final) as tmp:
        _folder(tmp, "new")
    assert (final / "content").read_text() == "new"
    assert os.listdir(tmp_path) == ["saved"]  # the old folder was removed


def test_where_exchange_is_unsupported_an_atomic_folder_still_replaces_the_old_one(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(swap, "_RENAMEAT2", None)
    final = _folder(tmp_path / "saved", "old")
    with io.atomic_path(final) as tmp:
        _folder(tmp, "new")
    assert (final / "content").read_text() == "new"
    assert os.listdir(tmp_path) == ["saved"]
