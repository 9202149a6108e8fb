"""The user's student file a run starts its students from, bound to the run by its sha256.

A student given as a ``.keras`` file (``--student=FILE``) is rebuilt from that file at every
call, and its stages' checkpoints are then restored into it. Edited between two calls (a wider
layer, a layer added), the checkpoints no longer fit it: the restore failed deep in TensorFlow
(``weight shape ... is not compatible``, ``RestoreV2 ... expected dtype``); had it fitted, the
run's stages would have trained two different students. The run state records the file's
sha256 (``student_sha256``) and a resume refuses a file that no longer matches, before any
model is built. The record binds once a student's stage has started: a run that has only
trained its teacher may still take an edited student.

A registered architecture or ``keras.applications.NAME`` needs no record: the flags, in the
run's configuration, name it fully. Runs recorded before this take the file as it is now.
"""

from __future__ import annotations

import os
import pathlib

from fitnets_tf.models import sources
from fitnets_tf.run import bound_file

KEY = "student_sha256"


def given_file(config) -> pathlib.Path | None:
    """The user's student file the run of ``config`` builds its students from (None: it builds
    a registered architecture, or the file is missing and the loader says so)."""
    given = config.models.student
    if not sources.is_keras_file(given):
        return None
    path = pathlib.Path(given).expanduser()
    return path if path.is_file() else None


def check_same(state, path: str | os.PathLike | None) -> None:
    """Records the sha256 of the student file ``path`` in ``state``, or checks it against the
    record of a run that has started a student's stage.

    Raises:
        WorkdirError: the file changed since the run's students were built from it, naming
            both sha256 and what to do.
    """
    started = any(key != "teacher" for key in state.data["stages"])
    bound_file.check_same(state, KEY, "student", path, "its checkpoints hold the weights of "
                          "the student built from the file as it was", bound=started)  # fmt: skip
