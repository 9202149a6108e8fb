"""Where an export writes: checked writable before any conversion, written by one export at once.

Two exports to one path (two ``--overwrite`` runs, a CI retry beside the first) used to both
convert and both rename: the last rename won, and between the two renames of a SavedModel the
other could fail with ENOTEMPTY. :func:`output_lock` refuses the second at once, naming the
first. An unwritable destination used to fail only at the staging folder, named by that folder:
:func:`refuse_unwritable` names the destination and the fix before any conversion or folder.
"""

from __future__ import annotations

import contextlib
import os
import pathlib

from fitnets_tf.errors import OutputBusyError, OutputNotWritableError
from fitnets_tf.run import lock

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
    output.parent.mkdir(parents=True, exist_ok=True)

    def refusal(holder: str) -> OutputBusyError:
        return OutputBusyError(
            f"{output} is being exported by {holder}; nothing was written. Two exports to one "
            "path would replace each other's artifact: wait for that one to finish (or stop "
            "it), or choose another --output."
        )

    with lock.hold_file(lock_path(output.parent.resolve() / output.name), refusal):
        yield


def refuse_unwritable(output: str | pathlib.Path) -> None:
    """Raises :class:`OutputNotWritableError` if an export could not write ``output``.

    Checks the nearest existing folder on its way (the export creates the missing ones in it)
    and, for an existing folder at ``output`` (a SavedModel ``--overwrite`` moves aside), that
    folder too: Linux renames a folder only if it may write the folder's ``..`` entry.
    """
    output = pathlib.Path(output).expanduser()
    folder = output.parent
    while not (folder.exists() or folder.is_symlink()) and folder != folder.parent:
        folder = folder.parent
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
