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

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from fitnets_tf import fit_checks, losses, replica_gradients
from fitnets_tf.distiller import Distiller
from fitnets_tf.hint_path import deepest_guided_layer, resolve_pairs
from fitnets_tf.hyperparameters import Hyperparameters  # noqa: F401  (re-exported)
from fitnets_tf.layers import DATA_FORMAT
from fitnets_tf.models.logits import ends_in_softmax
from fitnets_tf.models.nesting import layer_output
from fitnets_tf.run import mid_epoch

MODES = ("fitnet", "kd", "scratch", "stagewise_labels")
HINT_MODES = ("fitnet", "stagewise_labels")  # the modes that use a hint/guided pair
STAGES_OF_MODE = {
    "fitnet": ("hints", "kd"),
    "kd": ("kd",),
    "scratch": ("scratch",),
    "stagewise_labels": ("guided_labels", "kd"),
}
# Each stage of a mode is the paper's stage 1 (up to the guided layer) or stage 2 (the whole
# student), whatever its loss; --stages (fitnets_tf.config.RUN_STAGES) selects by these.
PAPER_STAGE = {"hints": "stage1", "guided_labels": "stage1", "kd": "stage2", "scratch": "stage2"}


def make_distiller(
    teacher: keras.Model,
    student: keras.Model,
    hparams: Hyperparameters,
    hint_layer: str | None = None,
    guided_layer: str | None = None,
    seed: int | None = None,
    hints=None,
    hint_weights=None,
    check_teacher: bool = True,
) -> Distiller:
    """The Distiller of ``hparams``; ``seed`` seeds its regressors' initial weights.

    ``hints`` and ``hint_weights`` (several pairs, or ``"auto"``) replace ``hint_layer`` and
    ``guided_layer`` (one pair), and ``check_teacher`` is, as in :class:`~fitnets_tf.Distiller`.
    """
    return Distiller(
        teacher,
        student,
        hint_layer=hint_layer,
        guided_layer=guided_layer,
        hints=hints,
        hint_weights=hint_weights,
        temperature=hparams.temperature,
        kd_lambda=hparams.lambda_start,
        tau_squared=hparams.tau_squared,
        regressor=hparams.regressor,
        label_smoothing=hparams.label_smoothing,
        regressor_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed),
        regressor_max_norm=hparams.regressor_max_norm,
        check_teacher=check_teacher,
    )


def _fit(model, train, validation, epochs, initial_epoch, callbacks, verbose, initial_step=0):
    kwargs = dict(
        validation_data=validation,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=list(callbacks),
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles (seeded); Keras cannot
    )
    if initial_step:  # resumed from a mid-epoch checkpoint
        return mid_epoch.fit_from_step(model, train, initial_step=initial_step, **kwargs)
    return model.fit(train, **kwargs)


def _stage_optimizer(hparams: Hyperparameters, train, epochs: int, steps_per_epoch: int | None,
                     model: keras.Model):  # fmt: skip
    """A stage's fresh optimizer for ``model`` (a student, or the model trained on the labels);
    its schedule spans the stage's ``epochs`` (not the ones left)."""
    if steps_per_epoch is None and isinstance(train, tf.data.Dataset):
        batches = int(train.cardinality())
        steps_per_epoch = batches if batches > 0 else None  # < 0: unknown or infinite
    return hparams.optimizer(epochs=epochs, steps_per_epoch=steps_per_epoch, model=model)


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
    steps_per_epoch: int | None = None,
    initial_step: int = 0,
    **compile_kwargs,
) -> keras.callbacks.History:
    """Trains ``model`` on the labels alone: the teacher and the ``scratch`` baseline.

    ``model`` outputs logits, or ends in a softmax (a teacher of your own may): the loss is
    told which, so Keras takes the logits from under the softmax without warning that
    ``from_logits=True`` met probabilities.

    Every ``fit_*`` builds a fresh optimizer from ``hparams`` whose learning-rate schedule
    spans ``epochs``: ``steps_per_epoch`` (default: the number of batches of ``train``, when
    tf.data knows it) turns its epochs into optimizer steps. A stage resumed at
    ``initial_epoch`` continues the schedule once its optimizer state (``iterations``) is
    restored, as :class:`~fitnets_tf.run.resume.StageCheckpoint` does; ``initial_step``
    resumes it after that many steps of its epoch ``initial_epoch`` (a mid-epoch checkpoint).
    """
    compile_kwargs.setdefault("metrics", ["accuracy"])
    model.compile(
        optimizer=_stage_optimizer(hparams, train, epochs, steps_per_epoch, model),
        loss=losses.labels_loss(not ends_in_softmax(model), hparams.label_smoothing),
        **compile_kwargs,
    )
    replica_gradients.clip_batch_gradient(model.optimizer)  # Keras clips each replica's part
    # The Distiller's fit checks its own stages (hints, kd); Keras' fit trains this one.
    fit_checks.check_average_steps(model.optimizer, dict(
        x=train, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch))
    return _fit(model, train, validation, epochs, initial_epoch, callbacks, verbose, initial_step)


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
    steps_per_epoch: int | None = None,
    initial_step: int = 0,
    **compile_kwargs,
) -> keras.callbacks.History:
    """Stage 1: the guided part of the student and the regressor learn the hint.

    Stage 1's learning rate and schedule (``hparams.stage_one()``) are used.
    """
    optimizer = _stage_optimizer(hparams.stage_one(), train, epochs, steps_per_epoch,
                                 distiller.student)  # fmt: skip
    compile_kwargs.pop("metrics", None)  # of the class outputs, which stage 1 does not train
    distiller.compile(optimizer=optimizer, phase="hints", **compile_kwargs)
    return _fit(distiller, train, validation, epochs, initial_epoch, callbacks, verbose,
                initial_step)


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
    steps_per_epoch: int | None = None,
    initial_step: int = 0,
    **compile_kwargs,
) -> keras.callbacks.History:
    """Stage 2: the whole student on ``H(y, P_S) + λ·H(P_T^τ, P_S^τ)`` with λ annealed."""
    optimizer = _stage_optimizer(hparams, train, epochs, steps_per_epoch, distiller.student)
    compile_kwargs.setdefault("metrics", ["accuracy"])
    distiller.compile(optimizer=optimizer, phase="kd", **compile_kwargs)
    return _fit(distiller, train, validation, epochs, initial_epoch,
                [hparams.annealing(epochs), *callbacks], verbose, initial_step)  # fmt: skip


def guided_classifier(
    student: keras.Model, guided_layer: str, num_classes: int, seed: int | None = None
) -> keras.Model:
    """The student up to ``guided_layer`` with a fresh softmax head (weights shared).

    The ``stagewise_labels`` ablation trains this on the labels in place of hint training.
    ``seed`` seeds the head's initial weights.
    """
    features = layer_output(student, guided_layer)
    if len(features.shape) > 2:
        features = keras.layers.GlobalAveragePooling2D(
            data_format=DATA_FORMAT, name="guided_labels_pool"
        )(features)
    init = keras.initializers.GlorotUniform(seed=seed)
    logits = keras.layers.Dense(num_classes, kernel_initializer=init,
                                name="guided_labels_logits")(features)  # fmt: skip
    return keras.Model(student.inputs, logits, name=f"{student.name}_guided_labels")


def stage_one_layer(teacher, student, hints=None, hint_layer=None, guided_layer=None) -> str:
    """The layer stage 1 trains the student up to: the guided layer (of several, the deepest)."""
    pairs, _ = resolve_pairs(teacher, student, hints, hint_layer, guided_layer)
    return deepest_guided_layer(student, pairs)


def train_student(
    mode: str,
    teacher: keras.Model | None,
    student: keras.Model,
    train,
    validation=None,
    *,
    hparams: Hyperparameters = Hyperparameters(),  # noqa: B008  (frozen: shared safely)
    hint_layer: str | None = None,
    guided_layer: str | None = None,
    hints=None,
    hint_weights=None,
    hints_epochs: int = 0,
    kd_epochs: int = 0,
    callbacks_for: Callable[[str], Sequence[keras.callbacks.Callback]] = lambda stage: (),
    stages: Sequence[str] | None = None,
    initial_epochs: dict[str, int] | None = None,
    initial_steps: dict[str, int] | None = None,
    distiller_data: tuple | None = None,
    seed: int | None = None,
    verbose="auto",
    steps_per_epoch: int | None = None,
    check_teacher: bool = True,
    **compile_kwargs,
) -> dict[str, keras.callbacks.History]:
    """Runs every stage of ``mode`` in order and returns each stage's History.

    ``kd_epochs`` is the length of the labels-only training in ``scratch`` mode (the same
    budget as stage 2), and ``hints_epochs`` of stage 1 in ``fitnet`` and
    ``stagewise_labels``. ``callbacks_for(stage)`` supplies per-stage callbacks (loggers,
    checkpoints). ``stages`` runs a subset of the mode's stages (default: all); a skipped
    first stage must have left its weights in ``student`` already. ``initial_epochs[stage]``
    resumes a stage at that epoch (its checkpoint callback restores the state), after
    ``initial_steps[stage]`` steps of it when it was checkpointed mid-epoch.
    ``distiller_data`` is ``(train, validation)`` carrying precomputed teacher outputs
    (:func:`fitnets_tf.teacher_cache.cache_datasets`) for the stages the Distiller trains
    (``hints``, ``kd``); the stages on labels alone keep ``train`` and ``validation``.
    ``seed`` seeds what this function creates (the regressor, the guided head): a resumed run
    must create them as the interrupted one did, whatever the process drew before.
    Stage 1 (``hints``, ``guided_labels``) trains with ``hparams.stage_one()``'s learning rate
    and schedule; ``steps_per_epoch`` is passed to every ``fit_*``. ``hints`` and
    ``hint_weights`` (several pairs, or ``"auto"``; see :class:`~fitnets_tf.Distiller`) replace
    ``hint_layer`` and ``guided_layer``; ``stagewise_labels`` trains up to the deepest guided
    layer. ``compile_kwargs`` go to every stage's ``compile``; ``metrics`` (default: accuracy)
    to the stages that train the class outputs. ``check_teacher`` False: the Distiller does not
    check the teacher on its first images (a caller that checked it on its validation images).
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    needs_hint_layers = mode in ("fitnet", "stagewise_labels")
    if needs_hint_layers and not hints and (hint_layer is None or guided_layer is None):
        raise ValueError(f"mode={mode!r} needs `hints`, or `hint_layer` and `guided_layer`.")
    if mode != "scratch" and teacher is None:
        raise ValueError(f"mode={mode!r} needs a trained `teacher`.")
    common = dict(hparams=hparams, verbose=verbose, steps_per_epoch=steps_per_epoch,
                  **compile_kwargs)  # fmt: skip
    histories = {}
    distiller = None
    if mode != "scratch":
        pairs = {"hint_layer": hint_layer, "guided_layer": guided_layer, "hints": hints,
                 "hint_weights": hint_weights} if mode == "fitnet" else {}  # fmt: skip
        distiller = make_distiller(teacher, student, hparams, seed=seed,
                                   check_teacher=check_teacher, **pairs)  # fmt: skip
    distill_train, distill_validation = distiller_data or (train, validation)
    for stage in STAGES_OF_MODE[mode]:
        if stages is not None and stage not in stages:
            continue
        cbs = callbacks_for(stage)
        common["initial_epoch"] = (initial_epochs or {}).get(stage, 0)
        common["initial_step"] = (initial_steps or {}).get(stage, 0)
        if stage == "hints":
            histories[stage] = fit_hints(
                distiller, distill_train, distill_validation, epochs=hints_epochs, callbacks=cbs,
                **common,
            )  # fmt: skip
        elif stage == "guided_labels":
            guided = stage_one_layer(teacher, student, hints, hint_layer, guided_layer)
            head = guided_classifier(student, guided, int(student.output.shape[-1]), seed)
            histories[stage] = fit_labels(
                head, train, validation, epochs=hints_epochs, callbacks=cbs,
                **(common | dict(hparams=hparams.stage_one())),
            )  # fmt: skip
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
