"""What ``Distiller.fit`` reads of its first batches, and the teacher's checks made there.

Keras starts the input pipeline once to build the model and starts it again to train (a
dataset, arrays): the first batches read from that first start cost no training example. On
them the teacher is checked before any step: its outputs are logits, not probabilities
(:func:`check_teacher_logits`), and it can teach the images as fed
(:func:`fitnets_tf.fed_teacher.check_fed_teacher`).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from fitnets_tf.errors import ConfigError
from fitnets_tf.fit_inputs import FitInputs
from fitnets_tf.models.logits import are_probabilities
from fitnets_tf.step_inputs import CACHED_LOGITS, images_of


def first_batch(iterator, strategy):
    """The first batch of Keras' epoch iterator, this host's first replica's part of it when
    distributed (its shapes are the model's; Keras resets the iterator after)."""
    return first_batches(iterator, strategy)[0]


def first_batches(iterator, strategy, examples: int = 1, every_replica: bool = False) -> list:
    """The first batches of Keras' epoch iterator that hold ``examples`` (all of an epoch
    holding fewer), this host's first replica's part of each when distributed
    (``every_replica``: this host's replicas' parts together, the images a check counts).

    Read from the one start of the input pipeline that Keras makes to build the model and
    resets after: a dataset or arrays start again for training, so the batches read here are
    not taken from it. A Python generator does not start again: of it, the first batch alone
    (Keras keeps that one for training). A first batch without labels is read alone too: no
    more images make such a stream checkable.
    """
    _, _, batches = next(iter(iterator))

    def local(value):
        parts = strategy.experimental_local_results(value)
        return tf.concat(parts, 0) if every_replica and len(parts) > 1 else parts[0]

    if type(getattr(iterator, "data_adapter", None)).__name__ == "GeneratorDataAdapter":
        examples = 1
    found, count = [], 0
    while not found or count < examples:
        try:
            batch = keras.tree.map_structure(local, next(batches))
        except (StopIteration, tf.errors.OutOfRangeError):
            break
        found.append(batch)
        count += int(keras.tree.flatten(batch)[0].shape[0])
        if keras.utils.unpack_x_y_sample_weight(batch)[1] is None:
            break
    return found


def check_teacher_logits(distiller, batch) -> None:
    """Refuses a Distiller's teacher whose outputs on ``batch`` (:func:`first_batch`) are
    probabilities: a softmax it applies in
    a subclassed ``call`` or at the end of a Sequential built without an input, which the
    Distiller cannot see in its graph to leave out (:func:`fitnets_tf.models.logits.
    final_softmax`).

    Probabilities taken as logits give soft targets near uniform: distillation would run and
    teach nothing. Every row in [0, 1] and summing to 1 (to float16's precision) is not what
    logits do: a teacher's logits that happen to are refused as well, and the message says why.
    """
    teacher, strategy = distiller.teacher, distiller.distribute_strategy
    x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
    if isinstance(x, dict) and CACHED_LOGITS in x:
        outputs = x[CACHED_LOGITS]
    else:
        with strategy.scope():  # an unbuilt teacher makes its variables here
            # A replica's share at most: the batch holds every replica's part (first_batches).
            outputs = teacher(images_of(x)[:64], training=False)
    if not are_probabilities(ops.convert_to_numpy(ops.cast(outputs, "float32"))):
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


def check_first_batch(distiller, iterator, fit_inputs: FitInputs | None = None) -> None:
    """The checks of the teacher on the first batches of Keras' epoch ``iterator``, each made
    once per Distiller: its outputs are logits (:func:`check_teacher_logits`, KD only, on the
    first batch) and it can teach the images as fed (:func:`fitnets_tf.fed_teacher.
    check_fed_teacher`, on the first labelled ones: enough batches for its sign test; only
    ``fit``'s training data, the form it was given in ``fit_inputs``: not ``evaluate``'s nor
    ``fit``'s validation data's, whose iterators Keras starts the same way, and which pass
    None). The batches are read once for both (:func:`first_batches`)."""
    logits = distiller._teacher_unchecked and distiller.phase == "kd"
    answers = distiller._answers_unchecked and fit_inputs is not None
    if not (logits or answers):
        return
    from fitnets_tf import fed_teacher, teacher_scaling  # scipy's tests: imported when checked

    wanted = teacher_scaling.MAX_IMAGES if answers else 1
    # Every replica's part: the first replica's alone left the sign test half the images read
    # on 2 replicas, an eighth on 8.
    batches = first_batches(iterator, distiller.distribute_strategy, wanted, every_replica=True)
    if not batches:  # no data: Keras' fit says so
        return
    if logits:
        check_teacher_logits(distiller, batches[0])
        distiller._teacher_unchecked = False
    if answers:
        distiller._answers_unchecked = not fed_teacher.check_fed_teacher(distiller, batches,
                                                                         fit_inputs)
