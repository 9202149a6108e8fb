"""The run's final student, as training writes it: ``student.keras`` and its SavedModel.

The SavedModel is written by the export (:func:`fitnets_tf.export.export_student`), whose full
disk message is an export's: choose another ``--output`` and export again. In a training run
the fix is another: the run directory is full, and the same training command, run again once
there is room, writes the SavedModel from the trained student without training anything again
(every stage is done, so it only evaluates and reports).
"""

from __future__ import annotations

import keras

from fitnets_tf import export
from fitnets_tf.errors import DiskFullError
from fitnets_tf.run import io
from fitnets_tf.run.layout import RunLayout


def save_final_student(
    student: keras.Model, files: RunLayout, class_names: list[str] | None
) -> None:
    """Writes ``student`` to ``files.student`` and ``files.student_saved_model``.

    Raises:
        DiskFullError: no room for the SavedModel; the message names the run directory, says
            what is intact and that the same training command writes it. (No room for
            ``student.keras`` is the ``OSError``, which :func:`io.run_writes` names.)
    """
    io.save_model(student, files.student)
    try:
        export.export_student(student, files.student_saved_model, "saved_model",
                              overwrite=True, class_names=class_names)  # fmt: skip
    except DiskFullError as e:
        raise DiskFullError(saved_model_no_room(files, e)) from e


def saved_model_no_room(files: RunLayout, error: DiskFullError) -> str:
    """What a training run says when its final SavedModel found no room (``error``, the
    export's)."""
    reason = io.disk_full_reason(error.__cause__ or error) or "the disk is full"
    return (
        f"The run directory {str(files.root)!r} has no room left ({reason}) for the student's "
        f"SavedModel {files.student_saved_model.name}/: training is finished, and the trained "
        f"student ({files.student.name}), the checkpoints and the files written before are "
        "intact. Free space there, then run the same training command again: it writes the "
        "SavedModel without training anything again."
    )
