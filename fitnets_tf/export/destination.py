"""Where an export writes: checked writable before any conversion, written by one export at once.

Two exports to one path (two ``--overwrite`` runs, a CI retry beside the first) used to both
convert and both rename: the last rename won, and between the two renames of a SavedModel the
other could fail with ENOTEMPTY. :func:`output_lock` refuses the second at once, naming the
first. An unwritable destination used to fail only at the staging folder, named by that folder:
:func:`refuse_unwritable` names the destination and the fix before any conversion or folder.
A disk already full failed at the lock file, as a bare ``OSError`` leaving it behind: it is a
:class:`~fitnets_tf.errors.DiskFullError` naming the output, and the lock file and the folders
made for the export are removed with any export that fails.
"""

from __future__ import annotations

import contextlib
import os
import pathlib

from fitnets_tf.errors import OutputBusyError, OutputNotWritableError
from fitnets_tf.run import io, lock

# Beside the output while an export writes it (``.NAME.export-lock``), removed after. Not the
# staging folders' ``.partial-`` mark: their sweep must never take it for one of them.
LOCK_MARK = ".export-lock"


def lock_path(output: pathlib.Path) -> pathlib.Path:
    """The lock file of ``output``: hidden, beside it."""
    return output.parent / f".{output.name}{LOCK_MARK}"


@contextlib.contextmanager
def output_lock(output: str | pathlib.Path):
    """Holds ``output``'s lock for the ``with`` block, creating its missing parent folders.

    Nested holds in one thread are no-ops, so the caller may take it before the expensive
    work and :func:`.publish.staging_directory` still holds it for any other caller. The lock
    file is removed after; one left by a killed export is taken over and removed by the next.

    Raises:
        OutputBusyError: another live process, or another thread of this one, holds it
            (checked at once, never waited for).
    """
    output = pathlib.Path(output).expanduser()

    def refusal(holder: str) -> OutputBusyError:
        return OutputBusyError(
            f"{output} is being exported by {holder}; nothing was written. Two exports to one "
            "path would replace each other's artifact: wait for that one to finish (or stop "
            "it), or choose another --output."
        )

    made = []
    try:
        with contextlib.ExitStack() as held:
            with _no_room_to_start(output):
                made = _make_folders(output.parent)
                held.enter_context(lock.hold_file(lock_path(output.parent.resolve() /
                                                            output.name), refusal))  # fmt: skip
            yield
    except BaseException:
        # A failed export leaves no trace, not even the folders it made for its artifact (a
        # typo in --output, a full disk); one that succeeded keeps them, the artifact in them.
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: another export may have written there
        raise


def _make_folders(folder: pathlib.Path) -> list[pathlib.Path]:
    """Makes ``folder`` and its missing parents; returns those it made, outermost first."""
    missing = [f for f in (folder, *folder.parents) if not (f.exists() or f.is_symlink())][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _no_room_to_start(output: pathlib.Path):
    # On a full disk the first write an export makes is its folders' or its lock file's: a
    # bare OSError named the lock file, and left it.
    folder, where = (str(p).replace("{", "{{").replace("}", "}}")
                     for p in (existing_folder(output), output))  # fmt: skip
    kept = " and the artifact already there is unchanged" if output.exists() else ""
    return io.disk_full_as_user_error(
        f"Cannot export to {where}: {{reason}} ({folder}), with no room even for the export's "
        f"lock file; nothing was written{kept}. Free space on {folder} (or choose another "
        "--output), then export again."
    )


def existing_folder(output: str | pathlib.Path) -> pathlib.Path:
    """The nearest folder on the way to ``output`` that exists (or what stands in its place)."""
    folder = pathlib.Path(output).expanduser().parent
    while not (folder.exists() or folder.is_symlink()) and folder != folder.parent:
        folder = folder.parent
    return folder


def refuse_unwritable(output: str | pathlib.Path) -> None:
    """Raises :class:`OutputNotWritableError` if an export could not write ``output``.

    Checks the nearest existing folder on its way (the export creates the missing ones in it)
    and, for an existing folder at ``output`` (a SavedModel ``--overwrite`` moves aside), that
    folder too: Linux renames a folder only if it may write the folder's ``..`` entry.
    """
    output = pathlib.Path(output).expanduser()
    folder = existing_folder(output)
    if not folder.is_dir():
        raise OutputNotWritableError(
            f"Cannot export to {output}: {folder} is a file, not a folder; nothing was written. "
            f"Choose another --output, or move {folder.name} away."
        )
    checked = [folder] + ([output] if output.is_dir() and not output.is_symlink() else [])
    for path in checked:
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputNotWritableError(_unwritable(output, path))


def _unwritable(output: pathlib.Path, folder: pathlib.Path) -> str:
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        why, fix = "is on a read-only filesystem", "an --output on a writable one"
    else:
        why, fix = "is not writable by you", f"another --output, or make {folder} writable"
    return f"Cannot export to {output}: {folder} {why}; nothing was written. Choose {fix}."
