"""The one way fitnets_tf writes a file, and the one way it loads a ``.keras`` file.

Every file is written to a temporary sibling and renamed into place (``os.replace`` is atomic
on POSIX filesystems), so a kill, a crash or a full disk leaves either the previous complete
file or the new complete file under the final name, never a truncated one, and no temporary
litter.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterable, Sequence

from fitnets_tf.errors import ModelFileError


def _temporary_sibling(path: pathlib.Path) -> pathlib.Path:
    # Same directory, hence same filesystem: the final rename is atomic. The suffix is kept
    # because Keras picks the format from it (.keras, .weights.h5).
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path to write a file or directory to; renamed to ``path`` on success.

    On an exception the temporary is removed and ``path`` keeps its previous content.
    """
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(final)
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            # Directories cannot be replaced atomically: move the old one aside first, so that
            # at every moment one complete version exists.
            old = _temporary_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        _remove(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, out.getvalue())


def save_model(model, path: str | os.PathLike) -> None:
    """``model.save`` to a ``.keras`` file, atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_model(path: str | os.PathLike, what: str = "model", error=ModelFileError, advice: str = ""):
    """Loads a ``.keras`` file with ``safe_mode=True``: the file cannot run code.

    Args:
        path: the ``.keras`` file.
        what: how the message names it ("teacher", "student"...).
        error: the :class:`~fitnets_tf.errors.UserError` subclass to raise.
        advice: a sentence added to a "missing" message: how to provide the file.

    Raises:
        ``error``: the file does not exist or Keras cannot load it; the message names the file.
    """
    import keras

    import fitnets_tf  # noqa: F401  (registers every class a run's .keras files refer to)

    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise error(f"No {what} at {str(path)!r}. {advice}".rstrip())
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # noqa: BLE001  (Keras raises many types for a bad file)
        raise error(
            f"Cannot load the {what} {str(path)!r}: {type(e).__name__}: {e}. Is it a .keras "
            "file saved by Keras 3 (model.save), complete and undamaged?"
        ) from e
