"""What of a Distiller can be saved, and Keras' ways to save a model whole, refused by name.

Its weights file (``save_weights``) also holds the compiled phase's optimizer state, which
``load_weights`` restores only into an optimizer that exists: loaded before ``compile``, it is
dropped, and the user is told (:meth:`SavedInParts.load_weights`).

A Distiller's teacher and student are models given to it, not configuration: no ``.keras``
file, JSON config or exported artifact can rebuild one. Keras reaches the whole model from
several doors (``save``, ``keras.saving.save_model``, ``to_json``, ``get_config``,
``export``), and left to itself answers each with advice for a layer author ("implement
``get_config()``") or, for ``export``, says a fitted model was "never called". Each door here
says instead what a user can keep: the student, or the Distiller's weights.

``keras.saving.save_model`` (Keras 3.15's ``keras/src/saving/saving_lib.py``) opens its file
for writing, emptying one that was there, before it asks the model for anything but
``model.built``; it has no public hook before that. So :attr:`SavedInParts.built` refuses when
read by that function: Keras' module and function name are the private part this relies on,
pinned by ``tests/test_distiller.py``. (Its legacy ``.h5`` writer reads nothing of the model
before it opens the file.)
"""

from __future__ import annotations

import os
import sys

from fitnets_tf.notes import note

WHAT_TO_SAVE = (
    "A Distiller is not saved as a model: save the student, distiller.student.save("
    "'student.keras'), or the student, regressors, λ, τ and the compiled phase's optimizer "
    "state, distiller.save_weights('distiller.weights.h5')."
)

# The module of keras.saving.save_model's writer, whose first read of the model is ``built``.
_KERAS_SAVING = "keras.src.saving.saving_lib"

WHAT_TO_EXPORT = (
    "A Distiller is not exported: export the student for serving, fitnets_tf.export."
    "export_student(distiller.student, 'student.onnx', 'onnx') (or 'saved_model', 'litert', "
    "'keras'; softmax probabilities out), or distiller.student.export(path) for Keras' own "
    "SavedModel of its logits."
)


class SavedInParts:
    """Mixed into :class:`~fitnets_tf.Distiller` before ``keras.Model``: every way to save the
    model whole is refused before any file is written, naming what to save instead."""

    @property
    def built(self) -> bool:
        """Keras' ``built``; refused when ``keras.saving.save_model`` reads it, before it opens
        its file (see the module's docstring)."""
        caller = sys._getframe(1)
        if (caller.f_code.co_name == "save_model"
                and caller.f_globals.get("__name__") == _KERAS_SAVING):  # fmt: skip
            raise NotImplementedError(WHAT_TO_SAVE)
        return self.__dict__.get("_built_as_keras_sets_it", False)

    @built.setter
    def built(self, value) -> None:
        self.__dict__["_built_as_keras_sets_it"] = value

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

    def load_weights(self, filepath, *args, **kwargs):
        """``keras.Model.load_weights``; says so when the file's optimizer state is dropped
        because the Distiller is not compiled yet (Keras skips it without a word, and the next
        ``compile`` makes the optimizer afresh: a resumed phase would restart at step 0, its
        slots empty and its learning-rate schedule from the start)."""
        result = super().load_weights(filepath, *args, **kwargs)
        if not self.compiled and (steps := saved_optimizer_steps(filepath)):
            note(
                f"load_weights({os.fspath(filepath)!r}) restored the weights, not the optimizer "
                f"state of {steps} steps the file holds: the Distiller is not compiled, so it "
                "has no optimizer to restore it into. To resume that phase's training, "
                "compile(optimizer, phase=...) first, then load_weights. (A phase started "
                "afresh from these weights needs nothing more.)"
            )
        return result


def saved_optimizer_steps(filepath) -> int | None:
    """The step count of the optimizer state a ``.weights.h5`` file holds at its top level
    (the saved model's own optimizer), or None (no such state, another format)."""
    if not os.fspath(filepath).endswith(".weights.h5"):
        return None
    import h5py  # Keras' own weights format; imported where it is read

    with h5py.File(filepath, "r") as f:
        # A LossScaleOptimizer (mixed_float16) counts its steps in its inner optimizer.
        variables = f.get("optimizer/inner_optimizer/vars") or f.get("optimizer/vars")
        if variables is None or "0" not in variables:
            return None
        return int(variables["0"][()])  # Keras saves the step count (iterations) first
