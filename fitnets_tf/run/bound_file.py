"""A user's model file bound to the run that uses it, by its sha256 in the run state.

A ``.keras`` file (or a SavedModel folder) the user gives (a teacher, a student) may be saved
over in place between two calls on one run directory; the flags name a path and would not
tell. The run state records the file's sha256 under a key of its own when the run first uses
it; a resume refuses a file that no longer matches, naming it and the fix, before anything is
restored.
"""

from __future__ import annotations

import os

from fitnets_tf.errors import WorkdirError
from fitnets_tf.run import io


def check_same(state, key: str, role: str, path: str | os.PathLike | list | None, why: str,
               bound: bool | None = None) -> None:  # fmt: skip
    """Records the sha256 of the ``role`` file ``path`` under ``key`` in ``state`` (a
    :class:`~fitnets_tf.run.resume.RunState`; saved with its next commit), or checks it
    against the record once the run is ``bound`` to the file (default: once it has started a
    stage). A run recorded before the key was kept takes the file as it is now. ``path`` may
    be a list of files, one record for them all (an ONNX model's external data files).

    Raises:
        WorkdirError: the file changed since the run was bound to it, naming both sha256,
            ``why`` that matters, and what to do.
    """
    if not path:
        return
    digest = _sha256(path)
    recorded = state.data.get(key)
    if recorded is None or not (state.resuming if bound is None else bound):
        state.data[key] = digest
        return
    if recorded != digest:
        raise WorkdirError(
            f"The {role} {_named(path)} changed since the run in {str(state.files.root)!r} "
            f"started (sha256 {recorded} then, {digest} now): {why}. Restore the file it "
            "started with, or start a new --workdir with this one."
        )


def _sha256(path) -> str:
    if isinstance(path, list):  # one file: its own sha256, which sha256sum shows the user
        return _sha256(path[0]) if len(path) == 1 else io.files_sha256(path)
    return io.tree_sha256(path) if os.path.isdir(path) else io.file_sha256(path)


def _named(path) -> str:
    paths = path if isinstance(path, list) else [path]
    return f"file{'s' if len(paths) > 1 else ''} {', '.join(repr(str(p)) for p in paths)}"
