"""The paper's training modes as library functions (section 4 and its ablations).

===================  =====================================================================
mode                 stages
===================  =====================================================================
``fitnet``           ``hints`` (stage 1: guided layer ← hint) then ``kd`` (stage 2)
``kd``               ``kd`` only: knowledge distillation of the whole student (Hinton et al.)
``scratch``          ``scratch``: the student alone on the labels (plain back-propagation)
``stagewise_labels`` ``guided_labels`` (stage 1 on labels instead of hints: the student up to
                     its guided layer plus a temporary classifier head) then ``kd``
===================  =====================================================================

Each stage is a function over a model and ``tf.data`` datasets, so a caller (the CLI, a
notebook, the tuner) decides where logs and checkpoints go through ``callbacks``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras

from fitnets_tf.callbacks import LambdaAnnealing
from fitnets_tf.distiller import Distiller

MODES = ("fitnet", "kd", "scratch", "stagewise_labels")
STAGES_OF_MODE = {
    "fitnet": ("hints", "kd"),
    "kd": ("kd",),
    "scratch": ("scratch",),
    "stagewise_labels": ("guided_labels", "kd"),
}
# Each stage of a mode is the paper's stage 1 (up to the guided layer) or stage 2 (the whole
# student), whatever its loss; --stages (fitnets_tf.config.RUN_STAGES) selects by these.
PAPER_STAGE = {"hints": "stage1", "guided_labels": "stage1", "kd": "stage2", "scratch": "stage2"}


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """What the paper fixes for both stages (defaults: the paper's CIFAR-10 values).

    Attributes:
        learning_rate: RMSProp learning rate (paper: 0.005; MNIST 0.0005).
        rho: RMSProp decay (paper's code: 0.9).
        temperature: τ (paper: 3).
        lambda_start: λ at the start of stage 2 (paper: 4).
        lambda_end: λ at the end of its decay (paper: 1).
        lambda_hold: epochs at ``lambda_start`` before the decay (paper's code: 5).
        lambda_epochs: length of the decay in epochs; ``None``: the rest of stage 2, so that
            its last epoch runs at ``lambda_end``.
        tau_squared: multiply the soft term by τ² (not in the paper).
        regressor: ``"auto"`` (paper) or ``"linear"``.
    """

    learning_rate: float = 5e-3
    rho: float = 0.9
    temperature: float = 3.0
    lambda_start: float = 4.0
    lambda_end: float = 1.0
    lambda_hold: int = 0
    lambda_epochs: int | None = None
    tau_squared: bool = False
    regressor: str = "auto"

    def optimizer(self) -> keras.optimizers.Optimizer:
        """A fresh RMSProp: every stage starts with new optimizer state, as in the paper."""
        return keras.optimizers.RMSprop(self.learning_rate, rho=self.rho)

    def annealing(self, kd_epochs: int) -> LambdaAnnealing:
        decay = self.lambda_epochs or max(kd_epochs - 1 - self.lambda_hold, 1)
        return LambdaAnnealing(
            self.lambda_start, self.lambda_end, epochs=decay, hold=self.lambda_hold
        )


def make_distiller(
    teacher: keras.Model,
    student: keras.Model,
    hparams: Hyperparameters,
    hint_layer: str | None = None,
    guided_layer: str | None = None,
    seed: int | None = None,
) -> Distiller:
    """The Distiller of ``hparams``; ``seed`` seeds its regressor's initial weights."""
    return Distiller(
        teacher,
        student,
        hint_layer=hint_layer,
        guided_layer=guided_layer,
        temperature=hparams.temperature,
        kd_lambda=hparams.lambda_start,
        tau_squared=hparams.tau_squared,
        regressor=hparams.regressor,
        regressor_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed),
    )


def _fit(model, train, validation, epochs, initial_epoch, callbacks, verbose):
    return model.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=list(callbacks),
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles (seeded); Keras cannot
    )


def fit_labels(
    model: keras.Model,
    train,
    validation=None,
    *,
    epochs: int,
    hparams: Hyperparameters,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    verbose="auto",
    **compile_kwargs,
) -> keras.callbacks.History:
    """Trains ``model`` (logits) on the labels alone: the teacher and the ``scratch`` baseline."""
    model.compile(
        optimizer=hparams.optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    return _fit(model, train, validation, epochs, initial_epoch, callbacks, verbose)


def fit_hints(
    distiller: Distiller,
    train,
    validation=None,
    *,
    epochs: int,
    hparams: Hyperparameters,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    verbose="auto",
    **compile_kwargs,
) -> keras.callbacks.History:
    """Stage 1: the guided part of the student and the regressor learn the hint."""
    distiller.compile(optimizer=hparams.optimizer(), phase="hints", **compile_kwargs)
    return _fit(distiller, train, validation, epochs, initial_epoch, callbacks, verbose)


def fit_kd(
    distiller: Distiller,
    train,
    validation=None,
    *,
    epochs: int,
    hparams: Hyperparameters,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    verbose="auto",
    **compile_kwargs,
) -> keras.callbacks.History:
    """Stage 2: the whole student on ``H(y, P_S) + λ·H(P_T^τ, P_S^τ)`` with λ annealed."""
    distiller.compile(
        optimizer=hparams.optimizer(), phase="kd", metrics=["accuracy"], **compile_kwargs
    )
    return _fit(
        distiller,
        train,
        validation,
        epochs,
        initial_epoch,
        [hparams.annealing(epochs), *callbacks],
        verbose,
    )


def guided_classifier(
    student: keras.Model, guided_layer: str, num_classes: int, seed: int | None = None
) -> keras.Model:
    """The student up to ``guided_layer`` with a fresh softmax head (weights shared).

    The ``stagewise_labels`` ablation trains this on the labels in place of hint training.
    ``seed`` seeds the head's initial weights.
    """
    features = student.get_layer(guided_layer).output
    if len(features.shape) > 2:
        features = keras.layers.GlobalAveragePooling2D(name="guided_labels_pool")(features)
    init = keras.initializers.GlorotUniform(seed=seed)
    logits = keras.layers.Dense(num_classes, kernel_initializer=init,
                                name="guided_labels_logits")(features)  # fmt: skip
    return keras.Model(student.inputs, logits, name=f"{student.name}_guided_labels")


def train_student(
    mode: str,
    teacher: keras.Model | None,
    student: keras.Model,
    train,
    validation=None,
    *,
    hparams: Hyperparameters = Hyperparameters(),
    hint_layer: str | None = None,
    guided_layer: str | None = None,
    hints_epochs: int = 0,
    kd_epochs: int = 0,
    callbacks_for: Callable[[str], Sequence[keras.callbacks.Callback]] = lambda stage: (),
    stages: Sequence[str] | None = None,
    initial_epochs: dict[str, int] | None = None,
    distiller_data: tuple | None = None,
    seed: int | None = None,
    verbose="auto",
    **compile_kwargs,
) -> dict[str, keras.callbacks.History]:
    """Runs every stage of ``mode`` in order and returns each stage's History.

    ``kd_epochs`` is the length of the labels-only training in ``scratch`` mode (the same
    budget as stage 2), and ``hints_epochs`` of stage 1 in ``fitnet`` and
    ``stagewise_labels``. ``callbacks_for(stage)`` supplies per-stage callbacks (loggers,
    checkpoints). ``stages`` runs a subset of the mode's stages (default: all); a skipped
    first stage must have left its weights in ``student`` already. ``initial_epochs[stage]``
    resumes a stage at that epoch (its checkpoint callback restores the state).
    ``distiller_data`` is ``(train, validation)`` carrying precomputed teacher outputs
    (:func:`fitnets_tf.teacher_cache.cache_datasets`) for the stages the Distiller trains
    (``hints``, ``kd``); the stages on labels alone keep ``train`` and ``validation``.
    ``seed`` seeds what this function creates (the regressor, the guided head): a resumed run
    must create them as the interrupted one did, whatever the process drew before.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    needs_hint_layers = mode in ("fitnet", "stagewise_labels")
    if needs_hint_layers and (hint_layer is None or guided_layer is None):
        raise ValueError(f"mode={mode!r} needs `hint_layer` and `guided_layer`.")
    if mode != "scratch" and teacher is None:
        raise ValueError(f"mode={mode!r} needs a trained `teacher`.")
    common = dict(hparams=hparams, verbose=verbose, **compile_kwargs)
    histories = {}
    distiller = None
    if mode != "scratch":
        distiller = make_distiller(
            teacher,
            student,
            hparams,
            hint_layer=hint_layer if mode == "fitnet" else None,
            guided_layer=guided_layer if mode == "fitnet" else None,
            seed=seed,
        )
    distill_train, distill_validation = distiller_data or (train, validation)
    for stage in STAGES_OF_MODE[mode]:
        if stages is not None and stage not in stages:
            continue
        cbs = callbacks_for(stage)
        common["initial_epoch"] = (initial_epochs or {}).get(stage, 0)
        if stage == "hints":
            histories[stage] = fit_hints(
                distiller, distill_train, distill_validation, epochs=hints_epochs, callbacks=cbs,
                **common,
            )  # fmt: skip
        elif stage == "guided_labels":
            head = guided_classifier(student, guided_layer, int(student.output.shape[-1]), seed)
            histories[stage] = fit_labels(
                head, train, validation, epochs=hints_epochs, callbacks=cbs, **common
            )
        elif stage == "kd":
            histories[stage] = fit_kd(
                distiller, distill_train, distill_validation, epochs=kd_epochs, callbacks=cbs,
                **common,
            )  # fmt: skip
        else:  # scratch
            histories[stage] = fit_labels(
                student, train, validation, epochs=kd_epochs, callbacks=cbs, **common
            )
    return histories
