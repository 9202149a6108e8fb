"""Where the datasets live on disk: TFDS's data dir and, inside it, its manual dir."""

from __future__ import annotations

import os
import pathlib


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (TFDS's order)."""
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return pathlib.Path(data_dir).expanduser()


def manual_dir(data_dir: pathlib.Path) -> pathlib.Path:
    """TFDS's manual dir: source files placed there are read instead of downloaded."""
    return data_dir / "downloads" / "manual"
