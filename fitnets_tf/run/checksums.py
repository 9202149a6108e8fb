"""The sha256 checksums that vouch for checkpoint files and the run state.

A checkpoint is counted only once its files' digests are in the run state, written after
them; a resume checks the files against the digests before trusting them (see
:mod:`fitnets_tf.run.resume`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib


def file_sha256(path: pathlib.Path) -> str:
    """The sha256 of the file ``path``, which is synced to disk on the way."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        # On disk before the run state that vouches for it (TensorFlow does not sync).
        os.fsync(f.fileno())
    return digest.hexdigest()


def content_sha256(data: dict) -> str:
    """The sha256 of ``data`` as canonical JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prefix_digests(prefix: pathlib.Path) -> dict:
    """sha256 of every file named ``prefix.*``: a checkpoint's index, data shards, extras."""
    return {p.name: file_sha256(p) for p in sorted(prefix.parent.glob(f"{prefix.name}.*"))}


def damaged_file(directory: pathlib.Path, digests: dict) -> str | None:
    """The first file of ``digests`` that is missing or differs from its sha256, or None."""
    for name, digest in sorted(digests.items()):
        path = directory / name
        if not path.is_file() or file_sha256(path) != digest:
            return name
    return None
