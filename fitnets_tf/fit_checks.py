"""What :meth:`fitnets_tf.Distiller.fit` checks and keeps around Keras' ``fit``.

Each check refuses, with the fix, a combination that Keras would run without a word: a
callback that cannot work on a Distiller, a teacher whose outputs are probabilities where the
Distiller needs logits. The curriculum (λ, τ) is kept where training left it when a callback
restores weights at the end of ``fit``.
"""

from __future__ import annotations

import contextlib
import inspect

import keras
import numpy as np
from keras import ops

from fitnets_tf.callbacks import check_checkpoints
from fitnets_tf.errors import ConfigError
from fitnets_tf.step_inputs import CACHED_LOGITS, images_of

_FIT = inspect.signature(keras.Model.fit)


def checked_fit(distiller, fit, args, kwargs):
    """Calls Keras' ``fit`` (``fit``, with ``args`` and ``kwargs`` as ``keras.Model.fit``
    takes them) after this module's checks, λ and τ kept (:func:`curriculum_kept`)."""
    bound = _FIT.bind(distiller, *args, **kwargs)
    arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
    check_callbacks(distiller, arguments.get("callbacks"))
    with curriculum_kept(distiller, arguments):
        return fit(**arguments)


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


def first_batch(iterator, strategy):
    """The first batch of Keras' epoch iterator, this host's first replica's part of it when
    distributed (its shapes are the model's; Keras resets the iterator after)."""
    _, _, batches = next(iter(iterator))
    local = strategy.experimental_local_results
    return keras.tree.map_structure(lambda v: local(v)[0], next(batches))


def check_teacher_logits(distiller, iterator) -> None:
    """Refuses a Distiller's teacher whose outputs on the first batch of Keras' epoch
    ``iterator`` are probabilities: a softmax it applies in
    a subclassed ``call`` or at the end of a Sequential built without an input, which the
    Distiller cannot see in its graph to leave out (:func:`fitnets_tf.models.logits.
    final_softmax`).

    Probabilities taken as logits give soft targets near uniform: distillation would run and
    teach nothing. Every row in [0, 1] and summing to 1 (to float16's precision) is not what
    logits do: a teacher's logits that happen to are refused as well, and the message says why.
    """
    teacher, strategy = distiller.teacher, distiller.distribute_strategy
    x, _, _ = keras.utils.unpack_x_y_sample_weight(first_batch(iterator, strategy))
    if isinstance(x, dict) and CACHED_LOGITS in x:
        outputs = x[CACHED_LOGITS]
    else:
        with strategy.scope():  # an unbuilt teacher makes its variables here
            outputs = teacher(images_of(x), training=False)
    p = ops.convert_to_numpy(ops.cast(outputs, "float32"))
    if p.ndim != 2 or p.shape[0] == 0:
        return
    if not (np.all(p >= -1e-3) and np.all(p <= 1 + 1e-3)
            and np.allclose(p.sum(axis=-1), 1.0, atol=1e-2)):  # fmt: skip
        return
    fix = ("start it with keras.Input(shape): a built Sequential's final softmax is left out"
           if isinstance(teacher, keras.Sequential) else
           "return the logits from its call (drop the softmax), or give a Functional model, "
           "whose final softmax is left out")  # fmt: skip
    raise ConfigError(
        f"The teacher {teacher.name!r} outputs probabilities: every row of its outputs on the "
        f"first batch is in [0, 1] and sums to 1, as a softmax's do. The Distiller needs its "
        f"logits (it applies the softmax at temperature τ itself; probabilities taken as logits "
        f"give soft targets near uniform). Give the teacher's logits: {fix}."
    )
