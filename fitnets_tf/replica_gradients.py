"""Gradient clipping of the whole batch's gradient when a strategy splits the batch.

Keras 3's optimizers clip (``clipnorm``, ``global_clipnorm``, ``clipvalue``) in ``apply``,
before their TensorFlow update sums the replicas' gradients: under a ``MirroredStrategy`` each
replica clips its own part (the gradient of its share of the batch, already scaled to its share
of the step, see :func:`fitnets_tf.losses.per_replica_mean`), and the sum of clipped
parts is not the clipped gradient one device computes. On 2 replicas a ``global_clipnorm`` of
0.5 let through steps of norm up to 1, and trained other weights than one device did.

Here the replicas' gradients are summed first and clipped as the optimizer would clip one
device's, then divided by the number of replicas again: the optimizer's own clipping then finds
them within its bounds (a norm at most ``clip / replicas``), and its sum of the replicas'
identical parts is the clipped gradient. The Distiller's step calls
:func:`clipped_across_replicas` itself; a step Keras runs (``Model.train_step``: the teacher's
and ``scratch``'s stages) gets it through its optimizer (:func:`clip_batch_gradient`).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _clips(optimizer) -> bool:
    return bool(optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue)


def clipped_across_replicas(optimizer, grads: list) -> list:
    """``grads`` (this replica's, of a loss scaled per replica) as ``optimizer.apply`` should
    take them so that it clips the batch's gradient, not each replica's part of it.

    Unchanged outside a multi-replica step, for an optimizer that does not clip, and under
    gradient accumulation (Keras clips the accumulated gradients there). A
    ``LossScaleOptimizer``'s inner optimizer clips unscaled gradients: the bounds are scaled
    by its loss scale here.
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if replicas < 2 or not _clips(inner) or inner.gradient_accumulation_steps:
        return grads
    scale = 1.0
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        scale = tf.cast(optimizer.dynamic_scale, "float32")
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    if inner.clipnorm:
        summed = [tf.clip_by_norm(g, inner.clipnorm * tf.cast(scale, g.dtype)) for g in summed]
    elif inner.global_clipnorm:
        summed, _ = tf.clip_by_global_norm(summed, inner.global_clipnorm * scale)
    else:
        bound = [inner.clipvalue * tf.cast(scale, g.dtype) for g in summed]
        summed = [tf.clip_by_value(g, -b, b) for g, b in zip(summed, bound, strict=True)]
    out = list(grads)
    for i, g in zip(present, summed, strict=True):
        out[i] = g / replicas
    return out


def clip_batch_gradient(optimizer) -> None:
    """Makes ``optimizer`` (a compiled model's: a ``LossScaleOptimizer`` if Keras made one)
    clip the batch's gradient in a train step Keras runs, as :func:`clipped_across_replicas`
    does in the Distiller's.

    Keras' ``train_step`` hands the replica's gradients to ``optimizer.apply_gradients``,
    which calls ``apply``: this instance's ``apply`` passes them through
    :func:`clipped_across_replicas` first. Every replica gets there at the same point of its
    step, so its all-reduce is matched. Idempotent.
    """
    if getattr(optimizer, "_fitnets_batch_clipping", False):
        return
    apply = optimizer.apply

    def apply_clipped(grads, trainable_variables=None):
        return apply(clipped_across_replicas(optimizer, list(grads)), trainable_variables)

    optimizer.apply = apply_clipped
    optimizer._fitnets_batch_clipping = True
