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


def _junk_jpeg(path) -> str:
    """A decodable JPEG on which libjpeg prints a warning; returns the warning."""
    jpeg = _jpeg()
    marker = jpeg.index(b"\xff\xc4")
    path.write_bytes(jpeg[:marker] + bytes(8) + jpeg[marker:])
    return "Corrupt JPEG data: 8 extraneous bytes before marker 0xc4"


def test_a_folder_decodes_each_image_once(tmp_path, capfd):
    # libjpeg warns each time the file is decoded: a format pass decoding every image, then the
    # read decoding it again, printed the warning twice.
    root = _folder(tmp_path / "images")
    warning = _junk_jpeg(root / "cat" / "junk.jpg")
    capfd.readouterr()
    loaded = data.load(f"folder:{root}", validation_size=0)
    assert capfd.readouterr().err.count(warning) == 1
    assert loaded.input_shape == (8, 8, 1) and loaded.spec.formatting["resized"] == 0


def test_reading_a_folder_drops_the_decoders_lines_on_files_it_cannot_decode(tmp_path, capfd):
    # Some files fail only once their pixels are decoded (a JPEG or PNG cut after its header):
    # they are named with the others, and the decoder's lines on them are not printed.
    root = _folder(tmp_path / "images")
    bad = _bad_files(root)
    warning = _junk_jpeg(root / "cat" / "junk.jpg")
    capfd.readouterr()
    with pytest.raises(DataError, match="Cannot decode 4 of the 11 image files") as error:
        data.load(f"folder:{root}")
    assert all(str(path) in str(error.value) for path in bad)
    printed = capfd.readouterr().err
    assert "Premature end" not in printed and "Improper call" not in printed, printed
    assert printed.count(warning) == 1, printed


@pytest.mark.parametrize("cut", ["png", "jpeg"])
def test_a_file_cut_after_its_header_is_named(tmp_path, cut):
    root = _folder(tmp_path / "images")
    png, jpeg = (root / "cat" / "0.png").read_bytes(), _jpeg()
    content = png[:60] if cut == "png" else jpeg[: jpeg.index(b"\xff\xda") + 20]
    bad = root / "dog" / f"cut.{cut}"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=f"Cannot decode the image file {re.escape(str(bad))} "):
        data.load(f"folder:{root}")


def test_the_headers_give_the_format_decoding_gives(tmp_path):
    # PNG and JPEG sizes and channels come from their headers, BMP and GIF from decoding them:
    # the counts that choose a folder's size and channels are those of decoding every file.
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    rgb = rng.integers(0, 256, (12, 9, 3), np.uint8)
    Image.fromarray(rgb).quantize(4).save(tmp_path / "a" / "palette.png", transparency=0)
    Image.fromarray(rgb[:8, :8, 0]).save(tmp_path / "a" / "gray.bmp")
    Image.fromarray(rgb[:5]).save(tmp_path / "a" / "small.gif")
    (tmp_path / "a" / "gray.jpg").write_bytes(_jpeg())
    (tmp_path / "a" / "rgba.png").write_bytes(
        tf.io.encode_png(np.dstack([rgb, rgb[..., :1]])).numpy()
    )
    paths = image_folder.image_files(tmp_path)
    headers, decoded = image_folder.stored_format(paths), image_folder.image_format(paths)
    assert list(headers.sizes.items()) == list(decoded.sizes.items())
    assert headers.channels == decoded.channels == {4: 2, 1: 2, 3: 1}
    assert list(headers.sizes.items()) == [((8, 8), 2), ((12, 9), 2), ((5, 9), 1)]
