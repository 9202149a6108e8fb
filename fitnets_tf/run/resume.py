"""Exact resume of an interrupted run: its progress record and per-stage checkpoints.

Keras' ``BackupAndRestore`` restarts an epoch from batch 0 but keeps no optimizer, RNG,
data-order or early-stopping state, so a resumed run drifts from an uninterrupted one. Here
every stage of a run saves, at each epoch end:

* a ``tf.train.Checkpoint`` of what the stage trains (the student and regressor, or the
  teacher) with its optimizer and the seed-generator states of its dropout layers, through a
  ``CheckpointManager`` (a crash or a full disk during a save leaves the previous checkpoint
  the latest one);
* the epoch count, the history so far and the early-stopping state, in ``run_state.json``
  (written to a temporary file and renamed).

The training order and augmentation are a function of (seed, epoch) (see
:func:`fitnets_tf.data.load`) and λ a function of the epoch, so resuming at epoch ``e`` gives
the same batches, the same λ and the same weights as an uninterrupted run: bit-identical on a
CPU with ``tf.config.experimental.enable_op_determinism()``.
"""

from __future__ import annotations

import json
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.config import upgrade_fingerprint
from fitnets_tf.distiller import Distiller
from fitnets_tf.errors import ConfigMismatchError
from fitnets_tf.run import io
from fitnets_tf.run.layout import RunLayout, StageLayout


class RunState:
    """The progress of a run, in its ``run_state.json``.

    Stages are keyed ``"teacher"`` or ``"<mode>/<stage>"``; each records ``epochs_done``, the
    ``history`` so far, whether it is ``done``, and the early-stopping state.

    Args:
        workdir: the run directory.
        fingerprint: the configuration's (:meth:`ExperimentConfig.fingerprint`); a run
            directory holding another one is refused.
    """

    def __init__(self, workdir: pathlib.Path, fingerprint: dict):
        self.path = RunLayout(workdir).run_state
        self.data = {"config": fingerprint, "stages": {}, "finished": []}
        if self.path.exists():
            stored = json.loads(self.path.read_text())
            _check_same_config(stored["config"], fingerprint, self.path.parent)
            self.data = stored
            self.data["config"] = fingerprint

    @property
    def resuming(self) -> bool:
        return bool(self.data["stages"])

    def stage(self, key: str) -> dict:
        return self.data["stages"].setdefault(key, {"epochs_done": 0, "history": {}, "done": False})

    def done(self, key: str) -> bool:
        return self.data["stages"].get(key, {}).get("done", False)

    def finished(self, keys) -> bool:
        return sorted(keys) in self.data["finished"]

    def mark_finished(self, keys) -> None:
        if sorted(keys) not in self.data["finished"]:
            self.data["finished"].append(sorted(keys))
        self.save()

    def seconds(self, keys) -> dict | None:
        """Training seconds of each of ``keys`` that ran, by stage name (None: none ran)."""
        times = {k.split("/")[-1]: round(self.stage(k).get("seconds", 0.0), 2)
                 for k in keys if k in self.data["stages"]}  # fmt: skip
        return times or None

    def save(self) -> None:
        io.write_json(self.path, self.data)


def _check_same_config(stored: dict, fingerprint: dict, workdir) -> None:
    # Both in today's form: a run written before an option existed used its default.
    stored, fingerprint = upgrade_fingerprint(stored), upgrade_fingerprint(fingerprint)
    differences = [
        f"{key}: {stored.get(key)!r} there, {fingerprint.get(key)!r} now"
        for key in sorted(set(stored) | set(fingerprint))
        if stored.get(key) != fingerprint.get(key)
    ]
    if differences:
        raise ConfigMismatchError(
            f"The run directory {str(workdir)!r} holds a run with a different configuration "
            f"({'; '.join(differences)}). Results of two configurations are never mixed: use a "
            "new --workdir, or delete this one to start over."
        )


def _trackables(model: keras.Model) -> dict:
    """What a stage trains, as variable lists for ``tf.train.Checkpoint``.

    Keras 3 models are not traversed by ``tf.train.Checkpoint``, so the variables are listed
    explicitly, in their (stable) build order: weights, BatchNorm statistics and the
    seed-generator states of dropout layers, then the optimizer's. A Distiller's frozen teacher
    is left out: it never changes.
    """
    if isinstance(model, Distiller):
        variables = list(model.student.variables) + [model.kd_lambda]
        if model.regressor is not None:
            variables += list(model.regressor.variables)
    else:
        variables = list(model.variables)
    return {"model": variables, "optimizer": list(model.optimizer.variables)}


class StageCheckpoint(keras.callbacks.Callback):
    """Checkpoints one stage at every epoch end and restores it when the stage restarts.

    Place it after the callbacks whose state it saves (``EarlyStopping``) and before loggers.

    Args:
        state: the run's :class:`RunState`.
        key: the stage's key in ``state``.
        stage_dir: where ``checkpoints/`` and ``log.csv`` go.
        student: the model to save when the stage ends (None: none), to ``final_path``
            (default ``stage_dir/student.keras``).
        early_stopping: the stage's ``EarlyStopping`` callback, if any.
        log: where "resuming from ..." goes.
    """

    def __init__(self, state: RunState, key: str, stage_dir: pathlib.Path, student=None,
                 early_stopping=None, log=print, final_path=None):  # fmt: skip
        super().__init__()
        self.state, self.key, self.files = state, key, StageLayout(stage_dir)
        self.student, self.early_stopping, self.log = student, early_stopping, log
        self.final_path = final_path or self.files.student
        self._manager = None
        self._epoch_start = 0.0

    def _checkpoint_manager(self):
        if self._manager is None:
            optimizer = self.model.optimizer
            if not optimizer.built:
                # Keras may build the slots only at the first step: build them now so the
                # checkpoint lists every optimizer variable from the start.
                optimizer.build(self.model.trainable_variables)
            checkpoint = tf.train.Checkpoint(**_trackables(self.model))
            self._manager = tf.train.CheckpointManager(
                checkpoint, str(self.files.checkpoints), max_to_keep=2
            )
        return self._manager

    def on_train_begin(self, logs=None):
        record = self.state.stage(self.key)
        manager = self._checkpoint_manager()
        if record["epochs_done"] and manager.latest_checkpoint:
            manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            self._restore_early_stopping(record.get("early_stopping"))
            self.log(f"resuming from {manager.latest_checkpoint} (stage {self.key}, "
                     f"{record['epochs_done']} epochs done)")  # fmt: skip

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        record = self.state.stage(self.key)
        record["seconds"] = record.get("seconds", 0.0) + time.perf_counter() - self._epoch_start
        for name, value in (logs or {}).items():
            record["history"].setdefault(name, []).append(float(value))
        self._checkpoint_manager().save(checkpoint_number=epoch + 1)
        record["epochs_done"] = epoch + 1
        record["early_stopping"] = self._early_stopping_state()
        self.state.save()
        self._write_csv(record["history"])

    def on_train_end(self, logs=None):
        if self.student is not None:
            io.save_model(self.student, self.final_path)
        self.state.stage(self.key)["done"] = True
        self.state.save()

    def _write_csv(self, history: dict) -> None:
        columns = sorted(history)
        rows = ([i, *(history[c][i] if i < len(history[c]) else "" for c in columns)]
                for i in range(max((len(v) for v in history.values()), default=0)))  # fmt: skip
        io.write_csv(self.files.log_csv, ["epoch", *columns], rows)

    def _early_stopping_state(self):
        es = self.early_stopping
        if es is None:
            return None
        if es.best_weights is not None:
            path = self.files.best_weights
            with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, *es.best_weights)
        best = None if es.best is None else float(es.best)
        return {"wait": es.wait, "best": best, "best_epoch": es.best_epoch}

    def _restore_early_stopping(self, saved):
        es = self.early_stopping
        if es is None or not saved:
            return
        es.wait, es.best, es.best_epoch = saved["wait"], saved["best"], saved["best_epoch"]
        path = self.files.best_weights
        if path.exists():
            with np.load(path) as weights:
                es.best_weights = [weights[f"arr_{i}"] for i in range(len(weights.files))]
