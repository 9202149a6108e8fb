"""Resuming inside an epoch: mid-epoch checkpoints, and the ``fit`` that skips the batches done.

An ImageNet-size epoch takes hours, so a stage can also checkpoint every N steps and every M
minutes (``--checkpoint_every``, ``--checkpoint_minutes``) and when it is preempted
(:mod:`fitnets_tf.run.preemption`). Such a checkpoint holds what an epoch checkpoint holds
(weights, optimizer slots and step count, dropout seed-generator states, λ, the regressors);
the run state that names it (``mid_epoch``: the commit, as for epoch checkpoints, with the
files' sha256) holds the epoch's metric totals so far, so that the epoch's logged values are
means over all its batches, as in an uninterrupted run. :data:`KEPT` of them are kept per stage, in
``checkpoints/steps/``; an epoch's end makes them obsolete (its own checkpoint counts).

A stage resumed at step ``k`` of epoch ``e`` restores that checkpoint and finishes the epoch
on its batches after the ``k`` done (:func:`fit_from_step`): the epoch's batches are a
function of (seed, epoch), so they are the batches an uninterrupted run trained on next. λ is
a function of the epoch (or of the optimizer's step), the learning-rate schedule of the
optimizer's step, and early stopping acts at epoch ends only: all continue exactly.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import time

import keras
import tensorflow as tf

from fitnets_tf.callbacks import LearningRateLogger
from fitnets_tf.run import preemption
from fitnets_tf.run.checksums import damaged_file, prefix_digests
from fitnets_tf.run.layout import StageLayout

# The latest mid-epoch checkpoint of a stage, and the one a damaged latest falls back to.
KEPT = 2


class StepCheckpoints:
    """The mid-epoch checkpoints of one stage: when one is due, writing and restoring one.

    Checkpoints are numbered by the stage's step (``epoch · steps_per_epoch + step``), so the
    ``every`` schedule falls on the same steps after a resume. Under ``steps_per_execution``
    > 1 Keras runs several steps per call, and a checkpoint can only follow a call: it is
    written after the call whose steps reach a multiple of ``every``, numbered by its last.

    Args:
        files: the stage's layout.
        model: the model the stage trains; ``trackables`` its variables by checkpoint key.
        every: checkpoint after every ``every``-th step of the stage (0: never).
        minutes: and once ``minutes`` have passed since the last checkpoint (0: never).
    """

    def __init__(self, files: StageLayout, model: keras.Model, trackables: dict,
                 every: int = 0, minutes: float = 0.0):  # fmt: skip
        self.files, self.model, self.every, self.minutes = files, model, every, minutes
        self.manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**trackables), str(files.step_checkpoints), max_to_keep=KEPT
        )
        self._last = time.monotonic()

    def decide(self, strategy, number: int, since: int | None = None) -> tuple[bool, bool]:
        """``(stop, checkpoint)`` after step ``number``, the steps after ``since`` (default:
        ``number - 1``) having run in one call: whether a signal stops the stage
        (:func:`~fitnets_tf.run.preemption.agreed`), and whether to checkpoint: stopping, a
        multiple of ``every`` among the steps, or the minutes passed. The minutes are by each
        worker's own clock: the workers of a multi-worker strategy agree on them first, at the
        steps they compare signals at, so that all checkpoint after the same steps (killed,
        they would otherwise resume from different ones)."""
        stop, late = preemption.agreed_flags(strategy, number, self._due_by_time())
        return stop, stop or late or self._due_by_steps(number, since)

    def _due_by_steps(self, number: int, since: int | None) -> bool:
        since = number - 1 if since is None else since
        return bool(self.every) and number // self.every > since // self.every

    def _due_by_time(self) -> bool:
        return bool(self.minutes) and time.monotonic() - self._last >= 60 * self.minutes

    def save(self, number: int) -> dict:
        """Writes checkpoint ``number``; returns its record: its files' sha256."""
        self.manager.save(checkpoint_number=number)
        self._last = time.monotonic()
        return {"files": prefix_digests(self.files.step_checkpoint(number))}

    def metric_totals(self) -> dict:
        """The epoch's metric variables so far (totals and counts), by path: per replica of
        this worker (see :meth:`_replica_parts`), as JSON lists."""
        return {
            v.path: [keras.ops.convert_to_numpy(part).tolist() for part in self._replica_parts(v)]
            for v in self.model.metrics_variables
        }

    def add_metric_totals(self, totals: dict) -> None:
        """Adds a resumed epoch's :meth:`metric_totals` to its first step's metrics.

        Keras resets the metrics at every epoch start and builds compiled ones in the first
        step, so they can only be set after it. Adding is exact: every logged metric is a
        ratio of sums (``Mean``, accuracy) and ``a + b == b + a`` in floating point.
        """
        variables = {v.path: v for v in self.model.metrics_variables}
        for path, values in totals.items():
            for part, value in zip(self._replica_parts(variables[path]), values, strict=True):
                part.assign_add(tf.convert_to_tensor(value, part.dtype))

    def _replica_parts(self, variable) -> tuple:
        """The per-replica parts of a metric variable on this worker (itself, undistributed).

        Under a strategy, Keras makes metric variables sync-on-read sums: reading one whole
        sums every replica of every worker, assigning one spreads the value over them; each
        replica's (and worker's) logged result is of its own part, which a resume must restore.
        """
        return self.model.distribute_strategy.experimental_local_results(variable.value)

    def kept(self) -> set[str]:
        """The numbers of the checkpoints on disk, as the run state's keys."""
        return {pathlib.Path(p).name.removeprefix("ckpt-") for p in self.manager.checkpoints}

    def restore(self, number: int) -> str:
        """Restores checkpoint ``number``; returns its prefix."""
        prefix = str(self.files.step_checkpoint(number))
        self.manager.checkpoint.restore(prefix).assert_existing_objects_matched()
        return prefix


def record_directory(files: StageLayout, run_dir: pathlib.Path) -> str:
    """Where the run state says a stage's mid-epoch checkpoints are (relative: runs move)."""
    return os.path.relpath(files.step_checkpoints, run_dir)


def fall_back_if_damaged(key: str, record: dict, run_dir: pathlib.Path, warn) -> None:
    """Points ``record``'s ``mid_epoch`` at its newest intact checkpoint of the same epoch.

    None intact: the stage resumes at the start of the epoch (from its epoch checkpoint).
    """
    mid = record.get("mid_epoch")
    if not mid:
        return
    directory = run_dir / record["step_checkpoint_dir"]
    kept = record.get("step_checkpoints", {})
    candidates = sorted((int(n) for n, c in kept.items()
                         if c["epoch"] == mid["epoch"] and int(n) <= mid["checkpoint"]),
                        reverse=True)  # fmt: skip
    for number in candidates:
        damaged = damaged_file(directory, kept[str(number)]["files"])
        if damaged is None:
            if number != mid["checkpoint"]:
                warn(f"Stage {key} resumes from the mid-epoch checkpoint ckpt-{number}, not "
                     f"ckpt-{mid['checkpoint']}.")  # fmt: skip
                record["mid_epoch"] = {
                    **mid,
                    "checkpoint": number,
                    "step": kept[str(number)]["step"],
                }
            return
        warn(f"The checkpoint file {directory / damaged} is damaged or missing (it does not "
             "match the sha256 recorded when it was written).")  # fmt: skip
    warn(f"Stage {key} resumes from the start of epoch {mid['epoch'] + 1}.")
    record["mid_epoch"] = None


class _OneTraining(keras.callbacks.CallbackList):
    """The callbacks of a training split over two ``fit`` calls: it begins once and ends once."""

    def __init__(self, callbacks, model, verbose, **params):
        super().__init__(list(callbacks), add_history=True, add_progbar=verbose != 0,
                         model=model, verbose=verbose, **params)  # fmt: skip
        self.begun = self.ending = False

    def on_train_begin(self, logs=None):
        if not self.begun:
            self.begun = True
            super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        if self.ending:
            super().on_train_end(logs)


@contextlib.contextmanager
def _not_finalized(optimizer):
    """Keras' ``fit`` ends by finalizing the weights: under ``use_ema`` it puts the averages in
    their place. The first of :func:`fit_from_step`'s two calls ends in mid-training: the
    second would train on from the averages, where an uninterrupted stage trains on."""
    optimizer.finalize_variable_values = lambda var_list: None
    try:
        yield
    finally:
        del optimizer.finalize_variable_values  # the class's method again


def fit_from_step(model: keras.Model, train: tf.data.Dataset, *, epochs: int,
                  initial_epoch: int, initial_step: int, callbacks, verbose,
                  **fit_kwargs) -> keras.callbacks.History:  # fmt: skip
    """``model.fit`` resumed after step ``initial_step`` of epoch ``initial_epoch``.

    Keras starts epochs at their first batch, so this is two ``fit`` calls that the callbacks
    see as one training: the rest of the epoch (``train.skip``: the same batches as the
    uninterrupted epoch, since its order is a function of (seed, epoch)), then the epochs after
    it, unless a callback stopped the training (early stopping) at the end of the first.
    """
    steps = int(train.cardinality())
    for callback in callbacks:
        if isinstance(callback, LearningRateLogger):  # logs the rate of the epoch's first step
            callback.steps_into_epoch = initial_step
    one = _OneTraining(callbacks, model, verbose, epochs=epochs, steps=steps)
    with _not_finalized(model.optimizer):
        model.fit(train.skip(initial_step), epochs=initial_epoch + 1, initial_epoch=initial_epoch,
                  callbacks=one, verbose=verbose, **fit_kwargs)  # fmt: skip
    one.ending = True
    if model.stop_training:
        epochs = initial_epoch + 1  # no epoch left: fit only ends the training
    return model.fit(train, epochs=epochs, initial_epoch=initial_epoch + 1, callbacks=one,
                     verbose=verbose, **fit_kwargs)  # fmt: skip
