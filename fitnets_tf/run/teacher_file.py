"""The user's teacher file a run learns from, bound to the run by its sha256.

A teacher given as a ``.keras`` file (``--teacher_path=FILE``, ``--teacher=FILE``) or a
SavedModel folder (``--teacher_path=FOLDER``; its sha256 is that of its files) is the user's:
retrained and saved over in place between two calls, it would teach a run's later stages while
its earlier ones learned from the file as it was, and the flags, which name a path, would not
tell. The run state records the file's sha256 (``teacher_sha256``) when the run
first uses it and keeps it from the run state's first commit on (a run is bound to its teacher,
as to its data, once a stage has started); a resume refuses a file that no longer matches.

An ONNX file's weights may be in other files beside it (external data: PyTorch's exporter writes
``NAME.onnx.data``); their sha256 is recorded too (``teacher_data_sha256``: a run recorded
before it was kept takes them as they are now).

The other teachers need no record: a shipped one (``pretrained:NAME``) is checked against its
manifest's sha256, and a run's own (``RUN/teacher/teacher.keras``, trained in this run or given
as ``RUN``) is that run's result, checked against the sha256 saved beside it.
"""

from __future__ import annotations

import os
import pathlib

from fitnets_tf.models import onnx_model, saved_model
from fitnets_tf.pretrained import is_pretrained
from fitnets_tf.run import bound_file

KEY = "teacher_sha256"
DATA_KEY = "teacher_data_sha256"


def given_file(config, plan, state) -> pathlib.Path | None:
    """The user's teacher file the run of ``config`` loads (None: it trains its teacher, or
    loads a run directory's or a shipped one)."""
    if plan.train_teacher or state.done("teacher"):
        return None  # the run's own teacher/teacher.keras
    given = config.models.trained_teacher()
    if not given or is_pretrained(given):
        return None
    path = pathlib.Path(given).expanduser()
    if path.is_file() or saved_model.is_saved_model(path):
        return path
    return None  # a run directory; or missing: the loader says so


def check_same(state, path: str | os.PathLike | None) -> None:
    """Records the sha256 of the teacher file ``path`` in ``state`` (and of an ONNX file's
    external data files), or checks it against the record of a run that has started a stage
    (:func:`fitnets_tf.run.bound_file.check_same`).

    Raises:
        WorkdirError: the file changed since the run's stages learned from it, naming both
            sha256 and what to do.
    """
    why = "its stages must all learn from one teacher"
    bound_file.check_same(state, KEY, "teacher", path, why)
    if path is not None and onnx_model.is_onnx_file(path):
        # Missing ones are left to the loader, which names them and the fix.
        data = [file for file in onnx_model.data_files(path) if file.is_file()]
        bound_file.check_same(state, DATA_KEY, "teacher", data, why)
