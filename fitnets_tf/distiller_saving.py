"""What of a Distiller can be saved, and Keras' ways to save a model whole, refused by name.

A Distiller's teacher and student are models given to it, not configuration: no ``.keras``
file, JSON config or exported artifact can rebuild one. Keras reaches the whole model from
several doors (``save``, ``keras.saving.save_model``, ``to_json``, ``get_config``,
``export``), and left to itself answers each with advice for a layer author ("implement
``get_config()``") or, for ``export``, says a fitted model was "never called". Each door here
says instead what a user can keep: the student, or the Distiller's weights.
"""

from __future__ import annotations

WHAT_TO_SAVE = (
    "A Distiller is not saved as a model: save the student, distiller.student.save("
    "'student.keras'), or the student, regressors, λ, τ and the compiled phase's optimizer "
    "state, distiller.save_weights('distiller.weights.h5')."
)

WHAT_TO_EXPORT = (
    "A Distiller is not exported: export the student for serving, fitnets_tf.export."
    "export_student(distiller.student, 'student.onnx', 'onnx') (or 'saved_model', 'litert', "
    "'keras'; softmax probabilities out), or distiller.student.export(path) for Keras' own "
    "SavedModel of its logits."
)


class SavedInParts:
    """Mixed into :class:`~fitnets_tf.Distiller` before ``keras.Model``: every way to save the
    model whole is refused before any file is written, naming what to save instead."""

    def save(self, filepath, *args, **kwargs):
        """Refused: see :data:`WHAT_TO_SAVE`."""
        raise NotImplementedError(WHAT_TO_SAVE)

    def get_config(self):
        """Refused (``keras.saving.save_model`` and ``to_json`` call it): see
        :data:`WHAT_TO_SAVE`."""
        raise NotImplementedError(WHAT_TO_SAVE)

    def export(self, filepath, *args, **kwargs):
        """Refused: see :data:`WHAT_TO_EXPORT`."""
        raise NotImplementedError(WHAT_TO_EXPORT)
