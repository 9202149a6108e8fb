"""Stage 2 of FitNets as a keras-tuner ``HyperModel``: one trial is one stage-2 training."""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
import keras_tuner

from fitnets_tf import stages
from fitnets_tf.callbacks import NonFiniteGuard
from fitnets_tf.data import EpochSync
from fitnets_tf.distiller import Distiller
from fitnets_tf.errors import ModelFileError, TeacherLoadError
from fitnets_tf.run import io
from fitnets_tf.search.space import SearchSpace
from fitnets_tf.search.tuners import OBJECTIVE


class TrialDistiller(Distiller):
    """A Distiller whose weight files are the student's alone.

    keras-tuner checkpoints every trial with ``model.save_weights`` and restores it with
    ``load_weights`` (best model, Hyperband's next round). The teacher is frozen and on disk
    once, and stage 2 does not use the regressor, so a trial keeps only what it trained.
    """

    def save_weights(self, filepath, *args, **kwargs):
        with io.atomic_path(filepath) as tmp:
            self.student.save_weights(tmp, *args, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        self.student.load_weights(filepath, *args, **kwargs)


# How to give the files, in this class's argument names (the CLI words the same in its flags).
_TEACHER_ADVICE = ("Give `teacher_path` a trained teacher: a .keras file, a run directory whose "
                   "teacher stage finished, a SavedModel folder, an ONNX file or pretrained:NAME.")
_STUDENT_ADVICE = ("Give `student_weights` the hint-trained student (a .keras or .weights.h5 "
                   "file), or None to start from `build_student`'s initialisation.")  # fmt: skip


def _check_teacher(teacher_path) -> None:
    """Refuses a missing teacher now, not when the first trial builds its model."""
    from fitnets_tf.builders import teacher_location
    from fitnets_tf.pretrained import resolve

    teacher = teacher_location(resolve(str(teacher_path)))
    if not teacher.exists():
        raise TeacherLoadError(f"No teacher at {str(teacher)!r} (teacher_path="
                               f"{str(teacher_path)!r}). {_TEACHER_ADVICE}")  # fmt: skip


def _check_student(student_weights) -> None:
    if student_weights is not None and not os.path.isfile(student_weights):
        raise ModelFileError(f"No stage-1 student at {str(student_weights)!r} (student_weights)."
                             f" {_STUDENT_ADVICE}")  # fmt: skip


def _trial_guard() -> NonFiniteGuard:
    # keras-tuner records a FailedTrialError as a FAILED trial. Stopping alone would still
    # validate the broken student, and NaN logits predict class 0: the accuracy is a number
    # and could look like the best one.
    return NonFiniteGuard("trial", error=keras_tuner.errors.FailedTrialError,
                          advice="The student diverged at this trial's values: the trial "
                          "is recorded as FAILED and the search goes on (3 failures in a row "
                          "stop it).", check_validation=True)  # fmt: skip


class FitNetsHyperModel(keras_tuner.HyperModel):
    """Stage 2 of FitNets as a keras-tuner HyperModel over λ0, τ and friends.

    ``build(hp)`` loads the teacher from ``teacher_path`` (keras-tuner clears the Keras session
    before every trial, so nothing is kept across trials), builds a fresh student with
    ``build_student`` and gives it the weights of ``student_weights`` (stage 1's result), and
    returns the Distiller with the trial's τ and λ0. ``fit`` runs
    :func:`fitnets_tf.stages.fit_kd` (λ annealed from λ0 to λ's end over the trial's
    epochs) and returns its History: keras-tuner scores the best epoch's ``val_accuracy``.

    ``clear_session`` also resets the dtype policy and the random state, so ``build`` applies
    ``dtype_policy`` and ``seed`` again: every trial starts from the same state and differs
    from the others by its hyperparameters only.

    Args:
        teacher_path: the trained teacher, a ``.keras`` file or a run directory (or an ONNX
            file, loaded with the hint tensors of the pairs when a trial trains hints).
        build_student: makes the student architecture (untrained) under the current policy.
        student_weights: a ``.keras`` or ``.weights.h5`` file of the hint-trained student;
            ``None`` starts from ``build_student``'s initialisation.
        hparams: everything not searched (and the defaults of what is).
        space: the :class:`~fitnets_tf.search.SearchSpace`.
        hints_epochs: with ``hints_epochs > 0`` each trial first runs stage 1 itself (with
            its own learning rate) instead of loading ``student_weights``, on the pairs of
            ``hints`` (a list of ``(hint_layer, guided_layer)`` or ``"auto"``; ``hint_weights``
            their weights) or of ``hint_layer`` and ``guided_layer`` (one pair), as
            :class:`~fitnets_tf.distiller.Distiller` takes them.
        seed: seeds every trial identically.
        dtype_policy: e.g. ``"mixed_float16"``.
        compile_kwargs: for ``Distiller.compile`` (``jit_compile``...).
    """

    def __init__(
        self,
        teacher_path: str | os.PathLike,
        build_student: Callable[[], keras.Model],
        student_weights: str | os.PathLike | None = None,
        *,
        hparams: stages.Hyperparameters | None = None,
        space: SearchSpace | None = None,
        hint_layer: str | None = None,
        guided_layer: str | None = None,
        hints_epochs: int = 0,
        hints=None,
        hint_weights=None,
        seed: int = 0,
        dtype_policy: str = "float32",
        compile_kwargs: dict | None = None,
        name: str = "fitnets",
    ):
        super().__init__(name=name)
        if hints_epochs and not hints and (hint_layer is None or guided_layer is None):
            raise ValueError("`hints_epochs` > 0 needs `hints` or `hint_layer` and "
                             "`guided_layer`.")  # fmt: skip
        self.hparams = hparams or stages.Hyperparameters()
        self.space = space or SearchSpace()
        self.space.describe(self.hparams)  # fails now if a default lies outside its range
        _check_teacher(teacher_path)
        _check_student(student_weights)
        self.teacher_path, self.build_student = teacher_path, build_student
        self.student_weights = student_weights
        # Stage 1's pairs, in the Distiller's arguments (one form or the other, as given).
        self._hint_arguments = {"hint_layer": hint_layer, "guided_layer": guided_layer,
                                "hints": hints or None, "hint_weights": hint_weights}  # fmt: skip
        self.hints_epochs = hints_epochs
        self.seed, self.dtype_policy = seed, dtype_policy
        self.compile_kwargs = dict(compile_kwargs or {})
        self._student_values = None  # numpy: survives clear_session, read from disk once

    def declare_hyperparameters(self, hp):
        self.space.hyperparameters(hp, self.hparams)

    def build(self, hp) -> Distiller:
        from fitnets_tf.experiment import load_teacher

        keras.config.set_dtype_policy(self.dtype_policy)
        keras.utils.set_random_seed(self.seed)
        hparams = self.space.hyperparameters(hp, self.hparams)
        pairs = self._hint_arguments if self.hints_epochs > 0 else {}
        teacher = load_teacher(self.teacher_path, _TEACHER_ADVICE, hints=self._pairs(pairs))
        student = self.build_student()
        if self.student_weights is not None and not self.hints_epochs:
            student.set_weights(self._stage_one_weights(student))
        # check_teacher: the search checked the teacher on its validation images, not on fit's.
        return TrialDistiller(
            teacher, student, temperature=hparams.temperature, kd_lambda=hparams.lambda_start,
            tau_squared=hparams.tau_squared, regressor=hparams.regressor,
            regressor_max_norm=hparams.regressor_max_norm,
            label_smoothing=hparams.label_smoothing, check_teacher=False, **pairs,
        )  # fmt: skip

    @staticmethod
    def _pairs(arguments: dict) -> list:
        """The pairs the Distiller's ``arguments`` name: an ONNX teacher loads their hints."""
        if arguments.get("hint_layer") is not None:
            return [(arguments["hint_layer"], arguments["guided_layer"])]
        hints = arguments.get("hints")
        return list(hints) if isinstance(hints, (list, tuple)) else []

    def _stage_one_weights(self, student: keras.Model) -> list:
        if self._student_values is None:
            path = str(self.student_weights)
            if path.endswith(".weights.h5"):
                _check_student(path)  # gone since __init__: h5py would say only "errno = 2"
                student.load_weights(path)
                self._student_values = student.get_weights()
            else:
                model = io.load_model(path, "stage-1 student", advice=_STUDENT_ADVICE)
                self._student_values = model.get_weights()
        return self._student_values

    def fit(self, hp, model, x, validation_data=None, *, epochs: int, callbacks=(),
            initial_epoch: int = 0, verbose="auto", data_epoch=None, **kwargs):  # fmt: skip
        """Stage 2 for one trial (after stage 1 when ``hints_epochs``); returns the History.

        Called by ``tuner.search(x, validation_data, epochs=...)`` as ``Model.fit`` would be.

        ``data_epoch`` is the training pipeline's epoch counter (``Datasets.epoch``): kept in
        step with Keras' epochs, every trial sees the same batches in the same order.
        """
        if validation_data is None and not kwargs.get("validation_split"):
            # keras-tuner would train the trial, fail it for want of its objective, run it
            # again and go on to the next: stop the search before any training instead.
            raise keras_tuner.errors.FatalError(
                f"The search needs validation_data: the objective, {OBJECTIVE}, is measured "
                "on it. Pass it to tuner.search(x, validation_data, epochs=...), as to fit "
                "(a held-out part of the training data, never the test split)."
            )
        hparams = self.space.hyperparameters(hp, self.hparams)
        common = [_trial_guard()]
        if data_epoch is not None:
            common.append(EpochSync(data_epoch))
        # keras-tuner builds the model under its distribution strategy but calls fit outside
        # it; each stage makes its optimizer here, and one made outside cannot update the
        # model's mirrored variables.
        with model.distribute_strategy.scope():
            if self.hints_epochs and initial_epoch == 0:
                stages.fit_hints(model, x, validation_data, epochs=self.hints_epochs,
                                 hparams=hparams, callbacks=common, verbose=verbose,
                                 **self.compile_kwargs)  # fmt: skip
            return stages.fit_kd(
                model, x, validation_data, epochs=epochs, initial_epoch=initial_epoch,
                hparams=hparams, callbacks=[*common, *callbacks], verbose=verbose,
                **self.compile_kwargs, **kwargs,
            )  # fmt: skip
