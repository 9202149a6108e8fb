"""The FitNets losses, per example.

Every loss returns one value per example (shape ``(batch,)``) in float32, whatever the
compute dtype of its inputs; :func:`per_replica_mean` averages it over the batch and scales it
for ``tf.distribute``, and :func:`with_regularization` adds the models' own losses, as the
:class:`~fitnets_tf.Distiller`'s steps do. Keeping the reduction apart lets one definition
serve training, evaluation, sample weights and several replicas.

The references disagree on exactly the constants below (½, sum vs mean over features, τ²),
so each docstring states the choice and ``tests/test_losses.py`` pins it with hand-computed
numbers.
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf
from keras import ops

from fitnets_tf.errors import ConfigError


def _flat_float32(x):
    x = ops.cast(x, "float32")
    return ops.reshape(x, (ops.shape(x)[0], -1))


def hint_loss(hint, regressed):
    """Stage-1 hint loss of one example: ``L_HT = ½ ‖u_h(x) − r(v_g(x))‖²``.

    ½ × the squared error **summed over all features** (height × width × channels) of the
    example, the paper's formula; the mean over the batch is taken by the caller. The paper's
    code sums over the map's rows only and averages the rest (``T.sum(cost, axis=1)`` of
    pylearn2's ``(channels, rows, columns, batch)`` layout), 1 / (channels × columns) of this:
    under RMSProp, whose steps do not grow with the loss's scale, the two train alike.
    Toolkits that use an MSE (mean over features) get values smaller by a factor
    ``2 / features``, which is why they multiply it by 100 or more.

    Args:
        hint: teacher hint-layer output ``u_h(x)``, shape ``(batch, ...)``.
        regressed: regressor output ``r(v_g(x))``, same shape as ``hint``.

    Returns:
        ``(batch,)`` float32 tensor.
    """
    diff = _flat_float32(hint) - _flat_float32(regressed)
    return 0.5 * ops.sum(ops.square(diff), axis=-1)


def cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Hard-label term ``H(y_true, P_S)`` of one example, at temperature 1.

    With ``label_smoothing`` ε the target is ``(1 − ε)·y + ε/K`` over the ``K`` classes, as
    Keras' ``CategoricalCrossentropy(label_smoothing=ε)`` (Szegedy et al. 2016); 0 computes
    exactly the unsmoothed term.

    Args:
        labels: integer class ids ``(batch,)`` (or ``(batch, 1)``), or one-hot / soft
            targets ``(batch, classes)``.
        logits: student logits ``(batch, classes)``.
        label_smoothing: ε in [0, 1).

    Returns:
        ``(batch,)`` float32 tensor ``−Σ_c y_c log softmax(logits)_c``.
    """
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    if len(labels.shape) == len(logits.shape) and labels.shape[-1] == logits.shape[-1] != 1:
        targets = ops.cast(labels, "float32")
    else:
        labels = _class_ids(ops.reshape(ops.cast(labels, "int32"), (-1,)),
                            ops.shape(log_probs)[-1])  # fmt: skip
        targets = ops.one_hot(labels, ops.shape(log_probs)[-1], dtype="float32")
    if label_smoothing:
        classes = ops.cast(ops.shape(log_probs)[-1], "float32")
        targets = targets * (1.0 - label_smoothing) + label_smoothing / classes
    return -ops.sum(targets * log_probs, axis=-1)


def checked_weight(name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a float, if it is a real number > 0 (``allow_zero``: >= 0); else a
    ConfigError naming it. For a loss's weights and temperature given in Python."""
    # numbers.Real: NumPy scalars too (np.float32 from np.linspace or a results table).
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"`{name}` must be a number {bound}. Received: {name}={value!r}")
    return float(value)


def label_smoothing_problem(label_smoothing) -> str | None:
    """ε = 1 would make every target uniform: nothing left of the labels."""
    ok = isinstance(label_smoothing, numbers.Real) and 0 <= label_smoothing < 1
    return None if ok else f"label_smoothing must be in [0, 1), got {label_smoothing!r}"


def _class_ids(labels, num_classes):
    """``labels``, checked to be in ``[0, num_classes)`` when the step runs.

    ``one_hot`` gives an out-of-range id a row of zeros, i.e. no loss at all: a dataset whose
    labels are off by one would train silently on the others (Keras' sparse cross-entropy
    fails on it instead). XLA drops the check.
    """
    hint = (" The student gives one logit per class, and labels are class ids from 0: are they "
            "numbered from 1, or do they include an 'ignore' value?")  # fmt: skip
    checks = [
        tf.debugging.assert_non_negative(labels, message="A label is negative." + hint),
        tf.debugging.assert_less(labels, tf.cast(num_classes, labels.dtype),
                                 message="A label is not below the number of classes." + hint),
    ]  # fmt: skip
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def kd_loss(teacher_logits, student_logits, temperature, tau_squared: bool = False):
    """Soft-target term ``H(P_T^τ, P_S^τ)`` of one example, with ``P^τ = softmax(logits / τ)``.

    A cross-entropy, not a KL divergence: it is the paper's formula, and the two differ by the
    teacher's entropy, a constant with no gradient. The paper and its code have **no τ²
    factor**; ``tau_squared=True`` multiplies by τ² as Hinton et al. and later toolkits do, to
    keep the soft gradients' scale independent of τ.

    Args:
        teacher_logits: ``(batch, classes)``.
        student_logits: ``(batch, classes)``.
        temperature: τ > 0, a float or a scalar tensor (the Distiller passes a variable).
        tau_squared: multiply by τ².

    Returns:
        ``(batch,)`` float32 tensor.
    """
    tau = ops.cast(temperature, "float32")
    soft_targets = ops.softmax(ops.cast(teacher_logits, "float32") / tau, axis=-1)
    log_probs = ops.log_softmax(ops.cast(student_logits, "float32") / tau, axis=-1)
    loss = -ops.sum(soft_targets * log_probs, axis=-1)
    if tau_squared:
        loss = loss * ops.square(tau)
    return loss


def labels_loss(from_logits: bool = True, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The Keras loss of a model trained on class ids alone (the teacher, ``scratch``, and
    ``stagewise_labels``' stage 1), weighing examples as one device would
    (:func:`one_device_weights`).

    Without smoothing, Keras' ``SparseCategoricalCrossentropy`` (:class:`LabelsCrossentropy`).
    With it, :class:`SmoothedLabelsCrossentropy`: Keras' sparse loss has no
    ``label_smoothing``.
    """
    if not label_smoothing:
        return LabelsCrossentropy(from_logits=from_logits)
    return SmoothedLabelsCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)


def one_device_weights(per_example):
    """A replica's per-example losses, their values unchanged, their gradient scaled so that
    Keras' reduction weighs each example as one device does: 1 / the step's examples.

    Keras' step takes this replica's mean and divides it by the replica count, which weighs an
    example by 1 / (replicas · its replica's examples): under a batch split unevenly (a last
    batch of 3 split 2 + 1) the lone example got 1/2 of the step's gradient, not 1/3. The
    :class:`~fitnets_tf.Distiller` divides each replica's sum by the step's examples
    (:func:`per_replica_mean`); here the gradient is scaled by ``replicas · local / step``
    (1 when the batch splits evenly, and nothing changes) while the value Keras logs stays its
    own, whose per-replica means it weighs by their examples already. Unchanged outside a
    multi-replica step.
    """
    examples = step_examples(per_example)
    if examples is None:
        return per_example
    local = ops.cast(ops.shape(per_example)[0], "float32")
    share = ops.cast(local * float(_replicas()) / examples, per_example.dtype)
    return per_example * share + ops.stop_gradient(per_example * (1 - share))


@keras.saving.register_keras_serializable(package="fitnets_tf")
class LabelsCrossentropy(keras.losses.SparseCategoricalCrossentropy):
    """Keras' ``SparseCategoricalCrossentropy``, weighing examples as one device would under
    several replicas (:func:`one_device_weights`)."""

    def call(self, y_true, y_pred):
        return one_device_weights(super().call(y_true, y_pred))


@keras.saving.register_keras_serializable(package="fitnets_tf")
class SmoothedLabelsCrossentropy(keras.losses.CategoricalCrossentropy):
    """Keras' ``CategoricalCrossentropy(label_smoothing=ε)`` of class ids ``(batch,)``.

    The ids become one-hot rows first, checked to be in range as :func:`cross_entropy`'s are
    (a one-hot row of an id out of range would be zeros: no loss at all). Keras' own logic
    then takes the logits from under a model's final softmax, as the sparse loss does. Examples
    are weighed as one device would under several replicas (:func:`one_device_weights`).
    """

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        ids = _class_ids(ops.reshape(ops.cast(y_true, "int32"), (-1,)), classes)
        return one_device_weights(super().call(ops.one_hot(ids, classes, dtype=y_pred.dtype),
                                               y_pred))  # fmt: skip


def per_replica_mean(per_example, sample_weight=None, step_examples=None):
    """Batch mean of a per-example loss, and this replica's share of the step's mean.

    Gradients of replicas are summed by ``tf.distribute``, so the value we differentiate is
    this replica's sum over the examples of the whole step's batch (``step_examples``, from
    :func:`step_examples`); the logged value stays the local mean (metrics weigh replicas by
    their examples). Without ``step_examples`` the share is the local mean / replicas, the same
    when every replica holds as many examples, which a batch split unevenly (a last batch of 3
    over 2 replicas) does not: there its one example would weigh 1/2 of the step, not 1/3.
    """
    if sample_weight is not None:
        per_example = per_example * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
    mean = ops.mean(per_example)
    if step_examples is None:
        return mean, mean / float(_replicas())
    return mean, ops.sum(per_example) / step_examples


def step_examples(images):
    """The examples of the step's batch over all replicas (a float32 scalar), read in a
    replica of a multi-replica strategy from its part of the batch, ``images``; else None
    (one replica: the local mean is the step's). One scalar all-reduce."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return None
    local = ops.cast(ops.shape(images)[0], "float32")
    return context.all_reduce(tf.distribute.ReduceOp.SUM, local)


def with_regularization(scaled, terms: dict, models) -> tuple:
    """``(scaled, terms)``, a step's loss to differentiate (:func:`per_replica_mean`'s scaled
    values) and its logged terms, with the models' own losses (weight and activity
    regularizers, ``add_loss``) added to both (to ``terms["loss"]``, the total), summed and
    scaled as Keras' ``compute_loss`` adds them to a model's loss. Unchanged when the models
    have none, so that the step is then exactly what it is without them. A frozen layer's
    weight regularizer is not among them (Keras counts trainable weights').
    """
    found = [loss for model in models for loss in model.losses]
    if not found:
        return scaled, terms
    total = ops.sum(ops.stack([ops.sum(ops.cast(loss, "float32")) for loss in found]))
    return scaled + total / float(_replicas()), {**terms, "loss": terms["loss"] + total}


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync
