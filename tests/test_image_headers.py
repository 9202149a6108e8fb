"""fitnets_tf.data.image_headers: an image's shape read from its header is the decoder's."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, PngImagePlugin

from fitnets_tf.data.image_headers import stored_shape

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 10, 3), np.uint8)  # height 6, width 10: the sides are not swapped


def _saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_with_text_first() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a chunk between IHDR and PLTE")
    return _saved(Image.fromarray(RGB).quantize(8), "PNG", pnginfo=info, transparency=0)


def _exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "an APP1 segment before the frame header"
    return _saved(Image.fromarray(RGB), "JPEG", exif=exif, comment=b"and a COM one")


FILES = {
    "png gray": lambda: _saved(Image.fromarray(RGB[..., 0]), "PNG"),
    "png gray alpha": lambda: _saved(Image.fromarray(RGB[..., :2], "LA"), "PNG"),
    "png gray tRNS": lambda: _saved(Image.fromarray(RGB[..., 0]), "PNG", transparency=7),
    "png 16-bit gray": lambda: _saved(Image.fromarray(RGB[..., 0].astype(np.uint16) * 257), "PNG"),
    "png bilevel": lambda: _saved(Image.fromarray(RGB[..., 0] > 127), "PNG"),
    "png rgb": lambda: tf.io.encode_png(RGB).numpy(),
    "png rgb tRNS": lambda: _saved(Image.fromarray(RGB), "PNG", transparency=(1, 2, 3)),
    "png rgba": lambda: _saved(Image.fromarray(np.dstack([RGB, RGB[..., :1]])), "PNG"),
    "png palette": lambda: _saved(Image.fromarray(RGB).quantize(8), "PNG"),
    "png palette tRNS": _png_with_text_first,
    "png interlaced": lambda: _saved(Image.fromarray(RGB), "PNG", interlace=1),
    "jpeg gray": lambda: tf.io.encode_jpeg(RGB[..., :1]).numpy(),
    "jpeg rgb": lambda: tf.io.encode_jpeg(RGB).numpy(),
    "jpeg progressive": lambda: _saved(Image.fromarray(RGB), "JPEG", progressive=True),
    "jpeg exif": _exif_jpeg,
    "jpeg cmyk": lambda: _saved(Image.fromarray(RGB).convert("CMYK"), "JPEG"),
}


@pytest.mark.parametrize("kind", FILES)
def test_the_header_gives_the_decoders_shape(tmp_path, kind):
    content = FILES[kind]()
    # The content decides, not the name: decode_image reads a PNG named .jpg as a PNG.
    path = tmp_path / "image.jpg"
    path.write_bytes(content)
    decoded = tf.io.decode_image(content, expand_animations=False).shape
    assert stored_shape(path) == tuple(decoded)


def test_the_channels_are_those_decoded(tmp_path):
    # Pinned, beside the decoder's own: what the folder's grayscale and alpha counts rest on.
    shapes = {}
    for kind in ("png gray tRNS", "png gray alpha", "png palette", "png palette tRNS",
                 "jpeg cmyk"):  # fmt: skip
        (tmp_path / kind).write_bytes(FILES[kind]())
        shapes[kind] = stored_shape(tmp_path / kind)
    assert shapes == {"png gray tRNS": (6, 10, 1), "png gray alpha": (6, 10, 2),
                      "png palette": (6, 10, 3), "png palette tRNS": (6, 10, 4),
                      "jpeg cmyk": (6, 10, 3)}  # fmt: skip


def _cut(content: bytes, end: bytes) -> bytes:
    return content[: content.index(end)]


UNREAD = {
    "gif": lambda: _saved(Image.fromarray(RGB), "GIF"),
    "bmp": lambda: _saved(Image.fromarray(RGB), "BMP"),
    "empty": lambda: b"",
    "text": lambda: b"not an image",
    "macOS metadata": lambda: b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X",
    "png cut in IHDR": lambda: tf.io.encode_png(RGB).numpy()[:20],
    "png signature alone": lambda: tf.io.encode_png(RGB).numpy()[:8],
    "png palette cut before IDAT": lambda: _cut(FILES["png palette"](), b"IDAT"),
    "jpeg cut before its frame": lambda: _cut(tf.io.encode_jpeg(RGB).numpy(), b"\xff\xc0"),
}


@pytest.mark.parametrize("kind", UNREAD)
def test_what_the_header_does_not_say_is_left_to_the_decoder(tmp_path, kind):
    path = tmp_path / "image.png"
    path.write_bytes(UNREAD[kind]())
    assert stored_shape(path) is None


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        stored_shape(tmp_path / "missing.png")
