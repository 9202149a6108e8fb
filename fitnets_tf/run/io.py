"""The one way fitnets_tf writes a file, and the one way it loads a ``.keras`` file.

Every file is written to a temporary sibling and renamed into place (``os.replace`` is atomic
on POSIX filesystems), so a kill, a crash or a full disk leaves either the previous complete
file or the new complete file under the final name, never a truncated one, and no temporary
litter. A model file gets its sha256 beside it (``student.keras.sha256``, in ``sha256sum``'s
format), so a file damaged later (a bad disk, a truncating copy) is refused by name when it is
loaded instead of giving wrong numbers.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import uuid
import zipfile
from collections.abc import Iterable, Sequence

from fitnets_tf.errors import DiskFullError, ModelFileError
from fitnets_tf.run import swap

# errno values that mean "no room", by the words of their strerror: TensorFlow's file writers
# raise their own error classes, whose messages carry these words.
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EFBIG: "the file size limit is exceeded"}  # fmt: skip


def disk_full_reason(error: BaseException) -> str | None:
    """Why ``error`` is a write that found no room ("the disk is full"...), or None."""
    if isinstance(error, OSError) and error.errno in _NO_ROOM:
        return _NO_ROOM[error.errno]
    text = str(error)
    return next((why for code, why in _NO_ROOM.items() if os.strerror(code) in text), None)


@contextlib.contextmanager
def disk_full_as_user_error(message: str):
    """Re-raises a write that found no room as :class:`DiskFullError`: ``message``, its
    ``{reason}`` filled in ("the disk is full"...). Other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        reason = disk_full_reason(e)
        if reason is None:
            raise
        raise DiskFullError(message.format(reason=reason)) from e


# What a writer killed mid-write leaves behind: this module's temporaries, and TensorFlow's
# while it saves a checkpoint (a ``ckpt-N_temp/`` directory of shards, a ``checkpoint.tmp<hex>``
# state file). A resumed run writes new ones, so these would stay, each as large as a model.
_LITTER = re.compile(r"\.tmp-[0-9a-f]{8}-.+|ckpt-\d+_temp|checkpoint\.tmp[0-9a-f]{32}")


def remove_litter(root: str | os.PathLike) -> list[pathlib.Path]:
    """Removes under ``root`` what writers killed mid-write left; returns what it removed.

    Only while holding ``root``'s lock (:mod:`fitnets_tf.run.lock`): a live writer's temporary
    files look the same.
    """
    found = []
    for directory, dirs, files in os.walk(root):
        found += [pathlib.Path(directory, n) for n in (*dirs, *files) if _LITTER.fullmatch(n)]
        dirs[:] = [d for d in dirs if not _LITTER.fullmatch(d)]
    for path in found:
        _remove(path)
    return found


@contextlib.contextmanager
def run_writes(root: str | os.PathLike):
    """The writes of a training run in ``root``, whose lock the caller holds.

    First removes what a killed run left half-written (:func:`remove_litter`). Then a write
    that finds no room is a :class:`DiskFullError` naming the run directory: a checkpoint's is
    TensorFlow's error, whose traceback says nothing of what was kept or what to do. What
    the full disk cut short is removed before the error leaves.
    """
    remove_litter(root)
    where = repr(str(root)).replace("{", "{{").replace("}", "}}")
    try:
        with disk_full_as_user_error(
            f"The run directory {where} has no room left ({{reason}}): the run stopped, and its "
            "last checkpoint and the files written before it are intact. Free space there, then "
            "run the same command again: it resumes from that checkpoint."
        ):
            yield
    except DiskFullError:
        # A checkpoint cut short leaves TensorFlow's ``ckpt-N_temp/``, as large as what it had
        # written, on the very disk the user is asked to free. The caller still holds the lock.
        remove_litter(root)
        raise


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
        if not (final.is_dir() and tmp.is_dir()):
            os.replace(tmp, final)
        elif not swap.exchange(tmp, final):  # exchanged: the old one, at ``tmp``, goes below
            # os.replace cannot put a directory over a non-empty one, and this filesystem
            # cannot exchange them: move the old one aside first (a kill in between leaves it
            # there, under a temporary name).
            old = _temporary_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
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


CHECKSUM_SUFFIX = ".sha256"
# What to do about a damaged or unreadable model file, unless the caller knows better.
_REPAIR = "Restore it from a backup, or write it again by re-running the command that made it."


def checksum_path(path: str | os.PathLike) -> pathlib.Path:
    """Where :func:`save_model` keeps the sha256 of ``path``: beside it, ``<name>.sha256``."""
    path = pathlib.Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a folder: of each file's path in it and sha256, in the paths' order (a
    file renamed, added, removed or changed changes it)."""
    root = pathlib.Path(path)
    return files_sha256(sorted(p for p in root.rglob("*") if p.is_file()), root)


def files_sha256(files, root: str | os.PathLike | None = None) -> str:
    """The sha256 of ``files``: of each one's path (relative to ``root``, default: its name)
    and sha256, in their order."""
    digest = hashlib.sha256()
    for file in map(pathlib.Path, files):
        name = file.relative_to(root).as_posix() if root is not None else file.name
        digest.update(f"{name}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def save_model(model, path: str | os.PathLike) -> None:
    """``model``'s architecture and weights to a ``.keras`` file, atomically, and its sha256
    beside it.

    Never an optimizer: the file holds ``model`` as Keras loads it with ``compile=False``.
    ``model.save`` alone would write a compiled model's optimizer variables and compile config
    too (Keras 3 has no ``include_optimizer`` for ``.keras``): the teacher's and ``scratch``'s
    student's, each trained by its own ``fit``, and not the students a Distiller trains. One
    student would then take more bytes in one mode than in another, and load compiled with a
    spent optimizer. A stage resumes from its checkpoint, which holds the optimizer
    (:mod:`fitnets_tf.run.contents`), not from this file.

    The old checksum is removed before the new model replaces the old one, and the new checksum
    written last: a kill in between leaves a model without a checksum (loaded unverified),
    never a model beside another file's checksum (refused as damaged although it is not).
    """
    path = pathlib.Path(path)
    checksum = checksum_path(path)
    with atomic_path(path) as tmp:
        _save_as_loaded(model, tmp)
        digest = file_sha256(tmp)
        if checksum.exists():
            checksum.unlink()
    write_text(checksum, f"{digest}  {path.name}\n")


def _save_as_loaded(model, path: pathlib.Path) -> None:
    import keras

    # Saved, loaded uncompiled and saved again, by Keras' own code: every layer's state goes as
    # a file holds it (maxout's column order, an adapted layer's), the model comes back of its
    # own class, and every model, compiled or not, is written the same way (a model built here
    # shares one dtype policy among its layers, which its file records and a loaded one's does
    # not: the bytes of one architecture would differ). The file is this model's, written just
    # now: safe mode would only refuse its Lambda layers, which the first save kept.
    full = _temporary_sibling(path)
    try:
        model.save(full)
        keras.saving.load_model(full, compile=False, safe_mode=False).save(path)
    finally:
        _remove(full)


def checksum_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with ``path`` by its recorded sha256, or None (it matches, or none was kept)."""
    path = pathlib.Path(path)
    checksum = checksum_path(path)
    if not checksum.is_file():
        return None
    recorded = checksum.read_text().split()
    if recorded and file_sha256(path) == recorded[0]:
        return None
    return (f"its content ({path.stat().st_size} bytes) does not match the sha256 recorded "
            f"in {checksum.name} when it was written, so it was truncated or altered since (if "
            f"you replaced it on purpose, delete {checksum.name})")  # fmt: skip


def _archive_problem(path: pathlib.Path) -> str | None:
    # A .keras file is a zip archive whose members carry CRC-32s: a file without a recorded
    # sha256 (older runs, files from elsewhere) is still checked before Keras, whose own
    # message for a truncated file is "File not found".
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        return f"it is not a complete zip archive, which a .keras file is ({e})"
    return f"its member {bad} fails its CRC check" if bad else None


def load_model(path: str | os.PathLike, what: str = "model", error=ModelFileError, advice: str = "",
               repair: str | None = None):  # fmt: skip
    """Loads a ``.keras`` file with ``safe_mode=True``: the file cannot run code.

    A file saved by :func:`save_model` is first checked against its sha256; any ``.keras``
    file against the CRCs of its zip archive.

    Args:
        path: the ``.keras`` file.
        what: how the message names it ("teacher", "student"...).
        error: the :class:`~fitnets_tf.errors.UserError` subclass to raise.
        advice: a sentence added to a "missing" message: how to provide the file.
        repair: a sentence added to a "damaged" or "cannot load" message: how to get a good
            one (default: restore it, or re-run the command that made it).

    Raises:
        ``error``: the file does not exist, does not match its sha256, or Keras cannot load it;
            the message names the file.
    """
    import keras

    import fitnets_tf  # noqa: F401  (registers every class a run's .keras files refer to)

    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise error(f"No {what} at {str(path)!r}. {advice}".rstrip())
    repair = repair or _REPAIR
    problem = checksum_problem(path)
    if problem is None and path.suffix == ".keras":
        problem = _archive_problem(path)
    if problem is not None:
        raise error(f"Cannot load the {what} {str(path)!r}, which is damaged: {problem}. {repair}")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # noqa: BLE001  (Keras raises many types for a bad file)
        refused = isinstance(e, ValueError) and _UNSAFE in str(e)  # code in it, not damaged
        raise error(_refused_code(what, path, e) if refused else
                    _cannot_load(what, path, e, repair)) from e  # fmt: skip


def _cannot_load(what: str, path: pathlib.Path, e: Exception, repair: str) -> str:
    from fitnets_tf import custom_code  # noqa: PLC0415

    unregistered = custom_code.unregistered_classes(path)
    if unregistered:
        return f"Cannot load the {what} {str(path)!r}: {custom_code.advice(unregistered)}"
    return (f"Cannot load the {what} {str(path)!r} ({type(e).__name__}: {e}): it is damaged, or "
            f"not a .keras file saved by Keras 3 (model.save). {repair}")  # fmt: skip


# In each message Keras' safe mode gives when it refuses to deserialize Python code (a Lambda
# layer's lambda, a lambda elsewhere in a config): Keras raises a plain ValueError for it.
_UNSAFE = "safe_mode=False"


def _refused_code(what: str, path: pathlib.Path, e: Exception) -> str:
    first = str(e).split(". ")[0]
    return (
        f"Cannot load the {what} {str(path)!r}: it is not damaged, but it holds Python code "
        f"({first}), and fitnets_tf loads every model file in Keras' safe mode, which runs no "
        "code from a file. Replace the Lambda layer (or lambda) by a built-in Keras layer doing "
        "the same (keras.layers.Rescaling for x * scale + offset, keras.layers.Activation for a "
        "named activation, keras.layers.Resizing...), save the model again (model.save) and give "
        "that file; or, from Python, load the file yourself if you trust it "
        "(keras.saving.load_model(path, safe_mode=False)) and pass the model to "
        "fitnets_tf.Distiller."
    )
