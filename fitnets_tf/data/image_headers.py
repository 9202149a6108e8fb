"""An image file's size and channels read from its header, as TensorFlow's decoder gives them.

A folder's format (:mod:`~fitnets_tf.data.folder_format`) needs the shape of every image before
any is read, and decoding each file for it decoded every image twice: once for its shape, once
for its pixels. A PNG file says its shape in its first chunk (IHDR), a JPEG file in its frame
header (SOF), both before any pixel: read there, each image is decoded once, by the read.

Only what a header says without doubt is taken: a shape :func:`stored_shape` cannot read
(another format, a damaged or unusual header) is None, and the caller decodes that file. The
channels are those ``tf.io.decode_image`` gives without a ``channels`` request (TensorFlow's
``png_io.cc`` and ``jpeg_mem.cc``), which ``tests/test_image_headers.py`` checks file by file:

* PNG: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; a palette gives 3, or 4 with a transparency
  (``tRNS``) chunk, which comes before the pixels (``IDAT``);
* JPEG: its components, 1 gray or 3 colour; 4 (CMYK, YCCK) are converted to RGB, 3.
"""

from __future__ import annotations

import os
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: What ``tf.io.decode_image`` takes for JPEG: the start-of-image marker and another marker.
JPEG_SIGNATURE = b"\xff\xd8\xff"
#: PNG colour type -> channels decoded (a palette's, 3, depends on its tRNS chunk).
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
#: JPEG components -> channels decoded.
JPEG_CHANNELS = {1: 1, 3: 3, 4: 3}
# The start-of-frame markers, SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC), which share the range.
_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length: TEM, RST0-7 (SOI and EOI are handled apart).
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def stored_shape(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """``(height, width, channels)`` of the PNG or JPEG file ``path`` as decoded, from its
    header; None for another format or a header this does not read (decode the file then).

    Raises:
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as file:
        start = file.read(8)
        if start == PNG_SIGNATURE:
            return _png_shape(file)
        if start.startswith(JPEG_SIGNATURE):
            file.seek(2)
            return _jpeg_shape(file)
    return None


def _png_shape(file) -> tuple[int, int, int] | None:
    header = file.read(8 + 10)  # IHDR's length and type, width, height, depth, colour type
    if len(header) < 18 or header[:8] != b"\x00\x00\x00\x0dIHDR":
        return None
    width, height, _, colour = struct.unpack(">IIBB", header[8:])
    if colour not in PNG_CHANNELS or not (width and height):
        return None
    if colour != 3:
        return height, width, PNG_CHANNELS[colour]
    file.seek(3 + 4, os.SEEK_CUR)  # IHDR's last three fields, its CRC
    while (chunk := _chunk_start(file)) is not None:
        length, kind = chunk
        if kind == b"tRNS":
            return height, width, 4
        if kind in (b"IDAT", b"IEND"):
            return height, width, 3
        file.seek(length + 4, os.SEEK_CUR)  # the chunk's data and CRC
    return None


def _chunk_start(file) -> tuple[int, bytes] | None:
    """A PNG chunk's length and type; None at the end of the file."""
    start = file.read(8)
    return struct.unpack(">I4s", start) if len(start) == 8 else None


def _jpeg_shape(file) -> tuple[int, int, int] | None:
    """From after the start-of-image marker: the segments up to the frame header."""
    while True:
        if file.read(1) != b"\xff":
            return None  # a marker was due: not a header this reads
        marker = file.read(1)
        while marker == b"\xff":  # fill bytes may precede a marker
            marker = file.read(1)
        if not marker:
            return None
        if marker[0] in _STANDALONE_MARKERS:
            continue
        if marker[0] in (0xD8, 0xD9, 0xDA):  # SOI again, EOI, or the scan: no frame header
            return None
        size = file.read(2)
        if len(size) < 2:
            return None
        if marker[0] in _FRAME_MARKERS:
            frame = file.read(6)
            if len(frame) < 6:
                return None
            _, height, width, components = struct.unpack(">BHHB", frame)
            if components not in JPEG_CHANNELS or not (width and height):
                return None  # a height of 0 is given later (DNL), which libjpeg refuses
            return height, width, JPEG_CHANNELS[components]
        file.seek(struct.unpack(">H", size)[0] - 2, os.SEEK_CUR)
