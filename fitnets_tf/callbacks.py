"""Callbacks that drive the FitNets curriculum during ``fit``."""

from __future__ import annotations

import math

import keras

from fitnets_tf.errors import NonFiniteLossError

_RUN_ADVICE = (
    "The run stopped; the last checkpoint (end of the previous epoch) is intact. Lower "
    "--learning_rate, or check the inputs and the teacher."
)


class LambdaAnnealing(keras.callbacks.Callback):
    """Linear annealing of the KD weight λ: the paper's curriculum (section 3.3).

    λ holds at ``start`` for ``hold`` epochs (steps), then moves linearly to ``end`` over the
    next ``epochs`` epochs (or ``steps`` steps) and stays there::

        λ(t) = start + (end − start) · clip((t − hold) / duration, 0, 1)

    with ``t`` the 0-based index of the epoch (step) about to run. The paper decays 4 → 1 over
    500 epochs; its code holds λ = 4 until epoch 5 and reaches 1 at epoch 400
    (``LambdaAnnealing(4.0, 1.0, epochs=395, hold=5)``). Resumed fits (``initial_epoch``) get
    the value of the epoch they resume at. With ``steps``, ``t`` is the optimizer's step count
    (``optimizer.iterations``): a fit continues the schedule where the optimizer's state does
    (a run's checkpoint restores it, :mod:`fitnets_tf.run.resume`); a new optimizer starts it
    at step 0, whatever ``initial_epoch`` is.

    Per-step values are assigned before each batch callback, which Keras calls once per
    execution of ``steps_per_execution`` steps: a model compiled with more than one is
    refused when ``fit`` begins, before any step (λ would hold for a whole execution).

    The Distiller's ``kd_lambda`` is a non-trainable variable, so the new value reaches the
    compiled train step; it is logged by the Distiller as the metric ``kd_lambda``.

    Args:
        start: λ at the start (paper: 4).
        end: λ at the end (paper: 1).
        epochs: length of the linear decay in epochs. Give this or ``steps``.
        steps: length of the linear decay in optimizer steps (updates every batch).
        hold: epochs (or steps, with ``steps``) at ``start`` before the decay begins.
    """

    def __init__(
        self,
        start: float = 4.0,
        end: float = 1.0,
        epochs: int | None = None,
        steps: int | None = None,
        hold: int = 0,
    ):
        super().__init__()
        if (epochs is None) == (steps is None):
            raise ValueError(
                f"Give exactly one of `epochs` or `steps`. Received: epochs={epochs}, steps={steps}"
            )
        duration = epochs if steps is None else steps
        if not isinstance(duration, int) or duration < 1:
            raise ValueError(f"The decay length must be a positive int. Received: {duration!r}")
        if not isinstance(hold, int) or hold < 0:
            raise ValueError(f"`hold` must be an int >= 0. Received: hold={hold!r}")
        for name, value in (("start", start), ("end", end)):
            if value < 0:
                raise ValueError(f"λ must be >= 0. Received: {name}={value}")
        self.start, self.end, self.hold, self.duration = float(start), float(end), hold, duration
        self.per_step = steps is not None

    def value(self, t: int) -> float:
        """λ for epoch (or step) index ``t``."""
        progress = min(max((t - self.hold) / self.duration, 0.0), 1.0)
        return self.start + (self.end - self.start) * progress

    def _assign(self, t: int):
        target = getattr(self.model, "kd_lambda", None)
        if not isinstance(target, keras.Variable):
            raise TypeError(
                "LambdaAnnealing needs a model with a `kd_lambda` variable (a fitnets_tf."
                f"Distiller). Received: {type(self.model).__name__}"
            )
        target.assign(self.value(t))

    def on_train_begin(self, logs=None):
        executions = getattr(self.model, "steps_per_execution", 1)
        if self.per_step and executions > 1:
            raise ValueError(
                f"LambdaAnnealing(steps={self.duration}) sets λ before each batch callback, and "
                f"Keras calls them once per execution of steps_per_execution={executions} steps: "
                f"λ would hold for {executions} steps at a time. Compile with "
                "steps_per_execution=1, or anneal per epoch: LambdaAnnealing(..., epochs=...)."
            )

    def on_epoch_begin(self, epoch, logs=None):
        if not self.per_step:
            self._assign(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step:
            self._assign(int(self.model.optimizer.iterations.numpy()))


def check_checkpoints(callbacks) -> None:
    """Refuses, before ``fit`` trains, a ``ModelCheckpoint`` that would save the whole model.

    A :class:`~fitnets_tf.Distiller` is not saved as a model (its teacher and student are
    models given to it): Keras' checkpoint would call its ``save`` at the first epoch's end,
    after that epoch's training, and fail there. ``callbacks``: a list, a ``CallbackList`` or
    None, as ``fit`` takes them.
    """
    for callback in getattr(callbacks, "callbacks", callbacks) or ():
        if isinstance(callback, keras.callbacks.ModelCheckpoint) and not callback.save_weights_only:
            raise ValueError(
                f"ModelCheckpoint({callback.filepath!r}) saves the whole model, and a Distiller "
                "is not saved as a model. Give it save_weights_only=True and a "
                "'.weights.h5' path: it keeps the student, regressors, λ, τ and the "
                "optimizer's state, reloaded with distiller.load_weights(path) into a "
                "Distiller built as this one; save distiller.student itself once fit ends."
            )


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` to the epoch logs (CSV, history): the rate of the epoch's first step.

    Under a schedule the optimizer's ``learning_rate`` is the schedule's value at its current
    step (``iterations``), the rate of the *next* update. Read when the epoch begins (after a
    resumed stage's checkpoint is restored), it is the rate the epoch trained with: under
    ``step:150`` epoch 150's row shows the decayed rate, epoch 149's the initial one. (Keras'
    TensorBoard callback logs its own ``epoch_learning_rate``, read at the epoch's end.)

    An epoch resumed from a mid-epoch checkpoint begins ``steps_into_epoch`` steps in (set by
    :func:`fitnets_tf.run.mid_epoch.fit_from_step`): its row still shows the rate of its first
    step, the schedule's value ``steps_into_epoch`` steps back.

    Place it before the loggers: callbacks share one ``logs`` dict, in list order.
    """

    def __init__(self):
        super().__init__()
        self._rate = None
        self.steps_into_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        self._rate = None if optimizer is None else float(
            keras.ops.convert_to_numpy(optimizer.learning_rate)
        )  # fmt: skip
        rate = None if optimizer is None else optimizer.get_config()["learning_rate"]
        if self.steps_into_epoch and isinstance(rate, dict):  # a schedule, serialised
            schedule = keras.optimizers.schedules.deserialize(rate)
            first = int(keras.ops.convert_to_numpy(optimizer.iterations)) - self.steps_into_epoch
            self._rate = float(keras.ops.convert_to_numpy(schedule(first)))
        self.steps_into_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._rate is not None:
            logs["learning_rate"] = self._rate


# Loss terms whose non-finite value stops training (every phase logs some of them); the
# components come first: they name the culprit.
LOSS_TERMS = ("hint_loss", "ce_loss", "kd_loss", "loss")


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


class NonFiniteGuard(keras.callbacks.Callback):
    """Raises at the first step whose loss term is NaN or infinite, before any checkpoint.

    Keras' ``TerminateOnNaN`` lets the epoch end, so checkpoints taken then hold NaN weights
    (and a NaN student predicts class 0 everywhere: its accuracy is a number that can look
    good); raising here leaves the last good checkpoint the latest one.

    Args:
        stage: names the stage in the message.
        error: the exception type raised (a run's :class:`~fitnets_tf.errors.NonFiniteLossError`;
            a tuner trial's ``keras_tuner.errors.FailedTrialError``).
        advice: the message's last sentence: what to do.
        check_validation: also check the validation losses at each epoch end.
    """

    def __init__(self, stage: str, error: type[Exception] = NonFiniteLossError,
                 advice: str = _RUN_ADVICE, check_validation: bool = False):  # fmt: skip
        super().__init__()
        self.stage, self.error, self.advice = stage, error, advice
        self.check_validation = check_validation
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, "", f"epoch {self._epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if self.check_validation:
            self._check(logs, "val_", f"validation after epoch {epoch + 1}")

    def _check(self, logs, prefix: str, where: str) -> None:
        for term in LOSS_TERMS:
            value = (logs or {}).get(prefix + term)
            if value is not None and not _finite(value):
                raise self.error(
                    f"Non-finite loss term {prefix}{term} ({float(value)}) in stage "
                    f"'{self.stage}', {where}. {self.advice}"
                )


# The stages trained at stage 1's learning rate (``Hyperparameters.stage_one``): the paper's
# stage 1 of each mode (fitnets_tf.stages.PAPER_STAGE).
_STAGE_ONE = ("/hints", "/guided_labels")


def learning_rate_flag(stage: str) -> str:
    """The flag of the learning rate ``stage`` (``"teacher"``, ``"<mode>/hints"``, ...) trains at."""
    if stage == "teacher":
        return "--teacher_learning_rate"
    return "--hints_learning_rate" if stage.endswith(_STAGE_ONE) else "--learning_rate"


class DivergenceWarning(keras.callbacks.Callback):
    """Says once when a stage's loss has grown ``factor``-fold since the first epoch it ran.

    A diverging stage can run its whole budget without a NaN, which :class:`NonFiniteGuard`
    would stop: a stage 1 whose learning rate was too large for its pair reached a hint loss of
    1.8e9 and left a student that every later stage trained from (all of a search's trials sat
    at chance). A stage's training loss (its hint loss in stage 1) does not grow tenfold by
    noise: λ's annealing only lowers a KD loss.

    Args:
        stage: the stage's key (``"teacher"``, ``"<mode>/hints"``, ...), named in the message.
        log: where the message goes.
        factor: how many times the first epoch's loss counts as diverging.
    """

    def __init__(self, stage: str, log=print, factor: float = 10.0):
        super().__init__()
        self.stage, self.log, self.factor = stage, log, factor
        self._first: float | None = None
        self._said = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        term = "hint_loss" if "hint_loss" in logs else "loss"
        value = logs.get(term)
        if value is None or not _finite(value) or self._said:
            return
        if self._first is None:
            self._first = float(value)
        elif float(value) > self.factor * self._first > 0:
            self._said = True
            self.log(f"warning: stage '{self.stage}' is diverging: its {term} grew from "
                     f"{self._first:.4g} in its first epoch to {float(value):.4g} after epoch "
                     f"{epoch + 1}. Lower {learning_rate_flag(self.stage)}, or check the "
                     "inputs and the teacher.")  # fmt: skip


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' ``EarlyStopping``, whose best weights leave out a frozen teacher.

    Keras keeps ``model.get_weights()``: for a :class:`~fitnets_tf.distiller.Distiller` the
    teacher's too, copied at every improvement and written into every checkpoint's
    ``best_weights.npz``, to restore values it never changes. Here ``best_weights`` holds the
    values of the model's weights that are not its ``teacher``'s (all of them for another
    model); a list of all of them, as an older run's checkpoint holds, is restored as well.
    """

    def __init__(self, *args, restore_best_weights: bool = False, **kwargs):
        super().__init__(*args, restore_best_weights=False, **kwargs)  # ours do it
        self.keep_best = restore_best_weights

    @classmethod
    def for_stage(cls, stage: str, patience: int) -> EarlyStopping:
        """The paper's: stop after ``patience`` epochs without validation improvement, keep
        the best model. Stages with labels are judged by accuracy: their val_loss is not
        comparable across epochs in stage 2, where λ (its weight on the KD term) is annealed;
        hint training (``"<mode>/hints"``) by its loss."""
        hints = stage.endswith("/hints")
        return cls(monitor="val_loss" if hints else "val_accuracy",
                   mode="min" if hints else "max", patience=patience,
                   restore_best_weights=True)  # fmt: skip

    def on_epoch_end(self, epoch, logs=None):
        best = self.best
        super().on_epoch_end(epoch, logs)
        if self.keep_best and self.best is not best:  # an improvement: Keras kept the weights
            self.best_weights = [v.numpy() for v in _kept_variables(self.model)]

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if not self.keep_best or self.best_weights is None:
            return
        kept = _kept_variables(self.model)
        if len(self.best_weights) == len(self.model.weights) != len(kept):
            kept = self.model.weights  # an older run's checkpoint: every weight
        for variable, value in zip(kept, self.best_weights, strict=True):
            variable.assign(value)


def _kept_variables(model) -> list:
    teacher = getattr(model, "teacher", None)
    frozen = {id(v) for v in teacher.weights} if isinstance(teacher, keras.Model) else set()
    return [v for v in model.weights if id(v) not in frozen]
