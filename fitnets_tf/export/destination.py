"""Where an export writes: by one export at a time.

Two exports to one path (two ``--overwrite`` runs, a CI retry beside the first) used to both
convert and both rename: the last rename won, and between the two renames of a SavedModel the
other could fail with ENOTEMPTY. :func:`output_lock` refuses the second at once, naming the
first.
"""

from __future__ import annotations

import contextlib
import pathlib

from fitnets_tf.errors import OutputBusyError
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

    Nested holds in one process are no-ops, so the caller may take it before the expensive
    work and :func:`.publish.staging_directory` still holds it for any other caller. The lock
    file is removed after; one left by a killed export is taken over and removed by the next.

    Raises:
        OutputBusyError: another live process holds it (checked at once, never waited for).
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
