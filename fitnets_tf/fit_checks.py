"""What :meth:`fitnets_tf.Distiller.fit` checks and keeps around Keras' ``fit``.

Each check refuses, with the fix, a combination that Keras would run without a word or fail
on deep inside TensorFlow: a callback that cannot work on a Distiller, a batch that leaves a
replica without an example, a teacher whose outputs are probabilities where the Distiller
needs logits, a teacher that cannot teach the images as fed (another class order, another
scaling), a ``steps_per_epoch`` that Keras' ``steps_per_execution`` would round up (and
``evaluate``'s and ``predict``'s ``steps``: :class:`CheckedRuns`). A stage
too short for its optimizer's moving average is told so (a note, not a refusal). The
curriculum (λ, τ) is kept where training left it when a callback restores weights at the end
of ``fit``.
"""

from __future__ import annotations

import contextlib
import inspect
import math

import keras
import tensorflow as tf
from keras import ops

from fitnets_tf.callbacks import check_checkpoints
from fitnets_tf.errors import ConfigError
from fitnets_tf.fit_inputs import FitInputs, array_examples
from fitnets_tf.notes import note

_FIT = inspect.signature(keras.Model.fit)
_STEPS = {name: inspect.signature(getattr(keras.Model, name)) for name in ("evaluate", "predict")}


class CheckedRuns:
    """Mixed into :class:`~fitnets_tf.Distiller` before ``keras.Model``: its ``fit``,
    ``evaluate`` and ``predict`` are Keras', after this module's checks."""

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``, after this module's checks; λ and τ stay where training left
        them, whatever a callback restores at its end."""
        return checked_fit(self, super().fit, args, kwargs)

    def evaluate(self, *args, **kwargs):
        """``keras.Model.evaluate``; ``steps`` must be a multiple of ``steps_per_execution``
        (:func:`check_whole_executions`)."""
        _check_steps(self, "evaluate", args, kwargs)
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        """``keras.Model.predict``; ``steps`` as for :meth:`evaluate`."""
        _check_steps(self, "predict", args, kwargs)
        return super().predict(*args, **kwargs)


def _check_steps(model, method: str, args, kwargs) -> None:
    steps = _STEPS[method].bind(model, *args, **kwargs).arguments.get("steps")
    check_whole_executions(model, "steps", steps)


def checked_fit(distiller, fit, args, kwargs):
    """Calls Keras' ``fit`` (``fit``, with ``args`` and ``kwargs`` as ``keras.Model.fit``
    takes them) after this module's checks, λ and τ kept (:func:`curriculum_kept`)."""
    if not distiller.compiled:  # Keras' own check comes after ours, which read the optimizer
        raise ValueError(
            "Call compile() before fit, with the phase to train: distiller.compile(optimizer, "
            "phase='hints') for stage 1 (hint training), or phase='kd' for stage 2 (knowledge "
            "distillation)."
        )
    bound = _FIT.bind(distiller, *args, **kwargs)
    arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
    check_callbacks(distiller, arguments.get("callbacks"))
    check_strategy(distiller)
    for name in ("steps_per_epoch", "validation_steps"):
        check_whole_executions(distiller, name, arguments.get(name))
    check_average_steps(distiller.optimizer, arguments)
    arguments = for_replicas(arguments, distiller.distribute_strategy)
    # Its first build reads the training data (Distiller), whose checks word fixes in its form.
    distiller._fit_inputs = FitInputs.of(arguments)
    try:
        with curriculum_kept(distiller, arguments):
            return fit(**arguments)
    except tf.errors.InvalidArgumentError as e:
        if (short := short_batch_error(e)) is None:
            raise
        raise short from None
    finally:
        distiller._fit_inputs = None


def _callback_list(callbacks) -> list:
    return list(getattr(callbacks, "callbacks", callbacks) or ())


def check_callbacks(model, callbacks) -> None:
    """Refuses, before ``fit`` trains, callbacks that cannot do what they say on a Distiller:
    a ``ModelCheckpoint`` saving the whole model (:func:`~fitnets_tf.callbacks.
    check_checkpoints`), and an ``EarlyStopping`` restoring the best weights under an
    optimizer with ``use_ema=True``.

    Keras' ``fit`` puts the average in place of the trained weights at its end, then calls the
    callbacks' ``on_train_end``, where early stopping restores the trained weights of its best
    epoch: the average is thrown away (the command line refuses ``--ema_momentum`` with
    ``--early_stopping_patience`` for this reason).
    """
    check_checkpoints(callbacks)
    if not getattr(model.optimizer, "use_ema", False):
        return
    for callback in _callback_list(callbacks):
        if isinstance(callback, keras.callbacks.EarlyStopping) and _restores(callback):
            raise ConfigError(
                f"EarlyStopping(monitor={callback.monitor!r}, restore_best_weights=True) with an "
                "optimizer of use_ema=True: early stopping watches and restores the trained "
                "weights, not their average, which it would discard (fit puts the average in "
                "place first). Drop one: restore_best_weights=False keeps the average, or "
                "compile without use_ema."
            )


def _restores(callback) -> bool:
    # fitnets_tf's EarlyStopping restores itself (keep_best) instead of through Keras' flag.
    return bool(callback.restore_best_weights or getattr(callback, "keep_best", False))


class _CurriculumRecorder(keras.callbacks.Callback):
    """Reads λ and τ when training ends, before any later callback's ``on_train_end``."""

    def __init__(self, distiller):
        super().__init__()
        self.distiller, self.values = distiller, None

    def on_train_end(self, logs=None):
        self.values = [v.numpy() for v in _curriculum(self.distiller)]


def _curriculum(distiller) -> list:
    return [distiller.kd_lambda, distiller.temperature]


@contextlib.contextmanager
def curriculum_kept(distiller, arguments: dict):
    """Keeps λ and τ where training left them when a callback restores weights at the end.

    ``EarlyStopping(restore_best_weights=True)`` sets every model weight to its best epoch's,
    λ and τ among them: the student's best weights are what it should restore, but a rewound λ
    would be where a later ``fit`` without ``LambdaAnnealing`` starts. A recorder placed first
    reads them when training ends; they are set back once ``fit`` returns.
    """
    recorder = _CurriculumRecorder(distiller)
    callbacks = arguments.get("callbacks")
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks.callbacks.insert(0, recorder)  # the caller's list: taken out again below
        recorder.set_model(distiller)
    else:
        arguments["callbacks"] = [recorder, *(callbacks or ())]
    try:
        yield
    finally:
        if isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks.callbacks.remove(recorder)
    if recorder.values is not None:
        for variable, value in zip(_curriculum(distiller), recorder.values, strict=True):
            variable.assign(value)


def check_strategy(distiller) -> None:
    """Refuses, before any step, what Keras fails on under a strategy without saying why:
    trained variables made outside the scope of the strategy the Distiller trains under (a
    bare ``AssertionError`` in ``apply_gradients``), and ``steps_per_execution`` > 1 on
    several replicas (Keras 3.15's multi-step loop: "You must feed a value for placeholder
    tensor", keras-team/keras#19246). The teacher is only read: it may live anywhere."""
    strategy = distiller.distribute_strategy
    trained = [("student", v) for v in distiller.student.weights]
    trained += [("regressor", v) for r in distiller.regressors for v in r.weights]
    trained += [("optimizer", v) for v in distiller.optimizer.variables]
    outside = [(owner, v) for owner, v in trained
               if not strategy.extended.variable_created_in_scope(v.value)]  # fmt: skip
    if outside:
        owners = sorted({owner for owner, _ in outside}, key=["student", "regressor",
                                                               "optimizer"].index)  # fmt: skip
        names = ", ".join(v.path for _, v in outside[:3])
        raise ConfigError(
            f"The {' and '.join(owners)} variables ({names}{', ...' if len(outside) > 3 else ''})"
            f" were made outside the scope of the strategy the Distiller trains under "
            f"({type(strategy).__name__.lstrip('_')}: the one whose scope was open when the "
            "Distiller was made, the default one if none was). Make the student (the teacher "
            "too, best), the Distiller, and compile it, all inside `with strategy.scope():`."
        )
    executions = int(getattr(distiller, "steps_per_execution", 1) or 1)
    replicas = strategy.num_replicas_in_sync
    if executions > 1 and replicas > 1:
        raise ConfigError(
            f"steps_per_execution={executions} on the strategy's {replicas} replicas: Keras' "
            "multi-step loop fails there (\"You must feed a value for placeholder tensor\", "
            "keras-team/keras#19246), its own models too. Compile with steps_per_execution=1."
        )


# Marks the error a short batch raises inside the input pipeline (see for_replicas).
_SHORT_BATCH = "fitnets_tf: a batch smaller than the replicas"


def check_whole_executions(distiller, name: str, steps) -> None:
    """Refuses ``steps_per_epoch`` or ``validation_steps`` of ``fit``, or ``steps`` of
    ``evaluate`` and ``predict`` (``name``, of value ``steps``) not a multiple of the compiled
    ``steps_per_execution``: Keras 3.15 runs whole executions, so a dataset that does not end
    first was trained, validated, evaluated or predicted up to the next multiple, silently (a
    learning-rate schedule, λ by steps and an average's count planned for fewer; a mean over
    more batches; more rows of predictions)."""
    executions = int(getattr(distiller, "steps_per_execution", 1) or 1)
    if executions > 1 and steps and steps % executions:
        more = -(-steps // executions) * executions
        each = " each epoch" if name != "steps" else ""
        raise ConfigError(
            f"{name}={steps} is not a multiple of steps_per_execution={executions}: Keras runs "
            f"whole executions, so {more} steps would run{each}. Give {name} a multiple of "
            f"{executions}, or compile with a steps_per_execution that divides it."
        )


def _replicas(strategy) -> int:
    # This host's replicas: each takes a part of every batch this host's pipeline gives.
    if strategy.num_replicas_in_sync < 2:
        return 1  # the default strategy has no worker_devices
    return len(strategy.extended.worker_devices)


def _short_batch_advice(replicas: int, dataset: bool = True) -> str:
    drop = ("Batch the dataset with drop_remainder=True (ds.batch(batch_size, drop_remainder="
            "True)), or choose a" if dataset else "Choose a")  # fmt: skip
    return (f"a replica would get no example and fail inside its kernels. {drop} batch size "
            f"whose last batch holds {replicas} or more examples.")  # fmt: skip


def for_replicas(arguments: dict, strategy) -> dict:
    """``fit``'s arguments, refused or guarded where a batch would leave a replica empty.

    A strategy splits each batch over its replicas; one left with no example fails inside a
    kernel with TensorFlow's message ("Matrix size-incompatible: In[0]: [0,1]"), at the end of
    the first epoch. Arrays are checked here, before training. A dataset whose batch size is
    not fixed (``drop_remainder=False``) cannot be, short of reading it all: each of its
    batches is checked as the pipeline gives it, and a short one stops ``fit`` there with
    this advice (:func:`short_batch_error`) instead of TensorFlow's message.
    """
    replicas = _replicas(strategy)
    if replicas < 2:
        return arguments
    for name, count, batch in _array_batches(arguments):
        if 0 < count % batch < replicas:
            raise ConfigError(
                f"The last {name} batch holds {count % batch} example(s) ({count} examples in "
                f"batches of {batch}), fewer than the strategy's {replicas} replicas: "
                + _short_batch_advice(replicas, dataset=False)
            )
    for key in ("x", "validation_data"):
        if isinstance(arguments.get(key), tf.data.Dataset):
            arguments = {**arguments, key: _guarded(arguments[key], replicas)}
    return arguments


def _array_batches(arguments: dict) -> list:
    """``(split, examples, batch size)`` of the arrays ``fit`` batches itself."""
    size = arguments.get("batch_size") or 32  # Keras' default
    validation_size = arguments.get("validation_batch_size") or size
    found = []
    count, split = array_examples(arguments.get("x")), arguments.get("validation_split") or 0
    if count is not None:
        train = math.floor(count * (1.0 - split))  # as Keras splits them
        found += [("training", train, size)] + [("validation", count - train, validation_size)]
    validation = arguments.get("validation_data")
    if isinstance(validation, (tuple, list)) and validation:
        validation = validation[0]
    if (count := array_examples(validation)) is not None:
        found.append(("validation", count, validation_size))
    return found


def _guarded(dataset: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    first = keras.tree.flatten(dataset.element_spec)[0]
    if not isinstance(first, tf.TensorSpec) or first.shape.rank is None or first.shape.rank < 1:
        return dataset
    if first.shape[0] is not None and first.shape[0] >= replicas:
        return dataset  # every batch holds this many: drop_remainder=True

    def check(element):
        size = tf.shape(keras.tree.flatten(element)[0])[0]
        with tf.control_dependencies([tf.debugging.assert_greater_equal(
            size, replicas, message=f"{_SHORT_BATCH} ({replicas})"
        )]):  # fmt: skip
            return keras.tree.map_structure(tf.identity, element)

    # A map keeps the cardinality (Keras' steps per epoch) and the order.
    if isinstance(dataset.element_spec, tuple):
        return dataset.map(lambda *element: check(element))
    return dataset.map(check)


def short_batch_error(error: Exception) -> ConfigError | None:
    """The ``ConfigError`` of a short batch that :func:`for_replicas` stopped, else None."""
    message = getattr(error, "message", str(error))
    if _SHORT_BATCH not in message:
        return None
    replicas = int(message.split(_SHORT_BATCH + " (", 1)[1].split(")", 1)[0])
    return ConfigError(
        f"A batch of the dataset holds fewer examples than the strategy's {replicas} "
        "replicas (a last batch of the examples left over): " + _short_batch_advice(replicas)
    )


# The share of a stage's first weights left in its average above which fit says so: 1%, a
# hundredth of an untrained (or earlier stage's) model mixed into the weights the stage ends with.
FIRST_WEIGHTS_SHARE = 0.01


def short_average(ema_momentum: float, steps: int) -> str | None:
    """Why ``steps`` are too few for an average of ``ema_momentum``, with the fix; else None.

    Keras' average starts as the weights after the first step (its momentum is 0 at step 0)
    and is then ``m·avg + (1 − m)·w`` each step: after ``n`` steps those first weights keep a
    share ``m^(n−1)`` of it. Above :data:`FIRST_WEIGHTS_SHARE`, the weights a stage ends with
    (``fit`` puts the average in their place) still lean on where it started.
    """
    share = ema_momentum ** max(steps - 1, 0) if ema_momentum else 0.0
    if share <= FIRST_WEIGHTS_SHARE:
        return None
    if ema_momentum >= 1:  # Keras takes it: the average is the first step's weights, for good
        return (f"ema_momentum={ema_momentum:g}: the average the stage ends with is its weights "
                "after the first step, however long it trains. Give a momentum below 1.")  # fmt: skip
    needed = 1 + math.ceil(math.log(FIRST_WEIGHTS_SHARE) / math.log(ema_momentum))
    at_most = FIRST_WEIGHTS_SHARE ** (1 / (steps - 1)) if steps > 1 else 0.0
    return (
        f"ema_momentum={ema_momentum:g} over a stage of {steps} steps: the average the stage "
        f"ends with keeps {share:.1%} of the weights after its first step (momentum^(steps - "
        f"1)), more than {FIRST_WEIGHTS_SHARE:.0%}. Train it at least {needed} steps, or lower "
        f"ema_momentum to at most {math.floor(at_most * 1e4) / 1e4:g} (0: no average)."
    )


def check_average_steps(optimizer, arguments: dict) -> None:
    """Notes :func:`short_average` for an optimizer of ``use_ema=True`` before a ``fit`` of
    ``arguments`` (as ``keras.Model.fit`` takes them) whose stage it can count: its steps by
    the end of this ``fit``, the optimizer's so far and this fit's, and at least all its
    epochs' (a stage resumed at ``initial_epoch`` restores its average later, in a callback).
    """
    if not getattr(optimizer, "use_ema", False):
        return
    per_epoch, x = arguments.get("steps_per_epoch"), arguments.get("x")
    if per_epoch is None and isinstance(x, tf.data.Dataset) and int(x.cardinality()) > 0:
        per_epoch = int(x.cardinality())
    elif per_epoch is None and (count := array_examples(x)) is not None:
        train = math.floor(count * (1.0 - (arguments.get("validation_split") or 0)))
        per_epoch = math.ceil(train / (arguments.get("batch_size") or 32))
    if not per_epoch:
        return
    epochs, initial = arguments.get("epochs", 1), arguments.get("initial_epoch") or 0
    done = int(ops.convert_to_numpy(optimizer.iterations))  # a MirroredVariable under a strategy
    steps = max(done + (epochs - initial) * per_epoch, epochs * per_epoch)
    if message := short_average(float(optimizer.ema_momentum), steps):
        note(message)
