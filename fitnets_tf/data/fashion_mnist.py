"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, restored to upstream's bytes.

Debian ships the original IDX archives under a different gzip header, so their checksums do
not match the ones TFDS registers. :func:`stage_fashion_mnist` restores upstream's header and
places the archives where the stock TFDS builder reads them instead of downloading.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import struct

import tensorflow_datasets as tfds

from fitnets_tf.data.locations import manual_dir, resolve_data_dir
from fitnets_tf.errors import DataError, DatasetNotFoundError
from fitnets_tf.run.io import write_bytes

#: Where the Debian package ``dataset-fashion-mnist`` installs the original IDX gz files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Debian's .gz files hold upstream's deflate stream and trailer byte for byte, under a bare
# 10-byte header (FLG = 0, mtime 2020-06-05). Upstream's header, found by matching the sha256
# that TFDS registers (url_checksums/fashion_mnist.txt): FLG = FNAME, these mtimes, XFL = 0,
# OS = 3 (Unix), then the file name without ".gz" and a NUL (23 bytes more than Debian's).
_FASHION_MNIST_MTIMES = {"train": 1504176606, "t10k": 1504176627}  # 2017-08-31 10:50 UTC


def stage_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
) -> pathlib.Path:
    """Writes upstream-identical Fashion-MNIST archives into TFDS's manual dir.

    Rebuilds each Debian ``.gz`` with upstream's gzip header, checks the result against the
    sha256 TFDS registers for the upstream URL, and writes it atomically (temporary file, then
    rename) to ``<data_dir>/downloads/manual/``, where the stock ``fashion_mnist`` builder picks
    it up instead of downloading (and verifies the checksum again).

    Returns:
        The manual dir.

    Raises:
        DatasetNotFoundError: a source file is missing.
        DataError: a rebuilt file does not match the registered checksum.
    """
    source_dir, data_dir = pathlib.Path(source_dir), resolve_data_dir(data_dir)
    target_dir = manual_dir(data_dir)
    url_infos = tfds.builder("fashion_mnist", data_dir=data_dir).url_infos
    for url, info in url_infos.items():
        target = target_dir / info.filename
        if target.exists():
            continue
        source = source_dir / info.filename
        if not source.exists():
            raise DatasetNotFoundError(f"Fashion-MNIST source file not found: {source}")
        data = with_upstream_header(source.read_bytes(), info.filename)
        if hashlib.sha256(data).hexdigest() != info.checksum or len(data) != info.size:
            raise DataError(
                f"{source} does not match the checksum TFDS registers for {url} once its gzip "
                f"header is restored (expected sha256 {info.checksum}, {info.size} bytes); the "
                "file is corrupt or not the original Fashion-MNIST."
            )
        write_bytes(target, data)
    return target_dir


def with_upstream_header(data: bytes, filename: str) -> bytes:
    """Replaces the gzip header (RFC 1952) of ``data`` by upstream Fashion-MNIST's."""
    if data[:3] != b"\x1f\x8b\x08":
        raise DataError(f"{filename} is not a gzip file.")
    flags, offset = data[3], 10
    if flags & 4:  # FEXTRA: 2-byte length, then the field
        offset += 2 + struct.unpack("<H", data[offset : offset + 2])[0]
    for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            offset = data.index(b"\0", offset) + 1
    if flags & 2:  # FHCRC
        offset += 2
    mtime = _FASHION_MNIST_MTIMES[filename.split("-")[0]]
    stem = filename.removesuffix(".gz").encode()
    header = b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + stem + b"\0"
    return header + data[offset:]
