"""A folder's images that cannot be decoded: every one named in one message, before any
training, and without the JPEG decoder's own lines on stderr (they name no file)."""

import re

import numpy as np
import pytest
import tensorflow as tf

from fitnets_tf import data
from fitnets_tf.data import image_folder
from fitnets_tf.errors import DataError


def _folder(root, per_class: int = 3):
    """``root/cat`` and ``root/dog``, ``per_class`` decodable 8x8 grayscale PNGs in each."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def _jpeg() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


def _bad_files(root) -> dict:
    """``{file: the decoder's reason}``: the audit's three, in the two class folders."""
    png = (root / "cat" / "0.png").read_bytes()
    jpeg = _jpeg()
    bad = {
        root / "cat" / "empty.jpg": (b"", "Input is empty"),
        # Cut inside the scan: libjpeg's "Premature end of JPEG data" (jpeg_mem.cc, E level).
        root / "dog" / "cut_scan.jpg": (jpeg[: jpeg.index(b"\xff\xda") + 20], "jpeg::Uncompress"),
        # Cut in the tables: libjpeg's "Improper call to JPEG library in state 201".
        root / "dog" / "cut_tables.jpg": (jpeg[: len(jpeg) // 2], "jpeg::Uncompress"),
        root / "dog" / "zz_corrupt.png": (png[:60], "Invalid PNG data"),
    }
    for path, (content, _) in bad.items():
        path.write_bytes(content)
    return {path: reason for path, (_, reason) in bad.items()}


def test_every_undecodable_file_is_named_in_one_message(tmp_path):
    bad = _bad_files(_folder(tmp_path / "images"))
    with pytest.raises(DataError, match="Cannot decode 4 of the 10 image files under") as error:
        data.load(f"folder:{tmp_path / 'images'}")
    message = str(error.value)
    for path, reason in bad.items():
        assert re.search(f"{re.escape(str(path))} \\({reason}", message), message
    assert "replace or delete them, then re-run" in message
    assert "more" not in message


def test_a_single_undecodable_file_keeps_its_message(tmp_path):
    _folder(tmp_path / "images")
    bad = tmp_path / "images" / "dog" / "zz_corrupt.png"
    bad.write_bytes(b"not an image")
    one = "Cannot decode the image file .*replace or delete this one"
    with pytest.raises(DataError, match=one):
        data.load(f"folder:{tmp_path / 'images'}")


def test_past_ten_files_the_rest_are_counted(tmp_path):
    root = _folder(tmp_path / "images")
    for i in range(13):
        (root / "cat" / f"bad{i:02d}.png").write_text("not an image")
    with pytest.raises(DataError, match="Cannot decode 13 of the 19 image files") as error:
        image_folder.image_format(sorted(root.rglob("*.png")), root)
    message = str(error.value)
    assert [f"bad{i:02d}.png" in message for i in range(13)] == [True] * 10 + [False] * 3
    assert "and 3 more" in message


def test_the_decoders_lines_on_a_file_it_cannot_decode_are_not_printed(tmp_path, capfd):
    root = _folder(tmp_path / "images")
    _bad_files(root)
    # Decodable, with libjpeg's warning: a line about a file the run reads, so it stays.
    jpeg = _jpeg()
    marker = jpeg.index(b"\xff\xc4")
    (root / "cat" / "junk.jpg").write_bytes(jpeg[:marker] + bytes(8) + jpeg[marker:])
    capfd.readouterr()
    with pytest.raises(DataError, match="Cannot decode 4 of"):
        image_folder.image_format(sorted(p for p in root.rglob("*") if p.is_file()), root)
    printed = capfd.readouterr().err
    assert "Premature end" not in printed and "Improper call" not in printed, printed
    assert "Corrupt JPEG data: 8 extraneous bytes before marker 0xc4" in printed


def test_the_users_log_level_brings_the_decoders_lines_back(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    root = _folder(tmp_path / "images")
    _bad_files(root)
    capfd.readouterr()
    with pytest.raises(DataError):
        image_folder.image_format(sorted(p for p in root.rglob("*") if p.is_file()), root)
    assert "Improper call to JPEG library" in capfd.readouterr().err
