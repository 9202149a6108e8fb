"""Exact resume of an interrupted run: its progress record and per-stage checkpoints.

Keras' ``BackupAndRestore`` restarts an epoch from batch 0 but keeps no optimizer, RNG,
data-order or early-stopping state, so a resumed run drifts from an uninterrupted one. Here
every stage of a run saves, at the end of its epoch ``N``:

1. a ``tf.train.Checkpoint`` ``ckpt-N`` of what the stage trains (the student and regressor,
   or the teacher) with its optimizer and the seed-generator states of its dropout layers,
   and early stopping's best weights beside it (``ckpt-N.best_weights.npz``), through a
   ``CheckpointManager`` that keeps the last :data:`CHECKPOINTS_KEPT`;
2. then ``run_state.json``: the epoch count, the history so far, the early-stopping state and
   the sha256 of every file of ``ckpt-N``, written to a temporary file and renamed.

The second write is the commit. A kill between the two leaves a ``ckpt-N`` that the run state
does not mention: the resumed stage restores ``ckpt-{epochs done}``, never merely the newest
files, so it repeats epoch ``N`` from the state that epoch started from.

Damaged files are detected rather than trusted. A process that resumes checks the files of
each unfinished stage's latest checkpoint against their recorded sha256; a truncated, altered
or missing one is named on stderr and the stage falls back to its previous checkpoint, with
that checkpoint's epoch count, history and early-stopping state (no intact one: the stage
starts over). ``run_state.json`` carries its own sha256 and its previous version is kept in
``run_state.json.prev``, read when the latest is damaged. Either way some epochs are trained
again; the final numbers are the uninterrupted run's.

The training order and augmentation are a function of (seed, epoch) (see
:func:`fitnets_tf.data.load`) and λ a function of the epoch, so resuming at epoch ``e`` gives
the same batches, the same λ and the same weights as an uninterrupted run: bit-identical on a
CPU with ``tf.config.experimental.enable_op_determinism()``.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.run import contents, io, mid_epoch, preemption
from fitnets_tf.run.checksums import content_sha256, damaged_file, prefix_digests
from fitnets_tf.run.contents import (  # noqa: F401  (the seed states: re-exported, as before)
    restore_seed_states,
    seed_states,
    trackables,
)
from fitnets_tf.run.layout import RunLayout, StageLayout
from fitnets_tf.run.state_file import check_same_config as _check_same_config
from fitnets_tf.run.state_file import parse as _parse_run_state
from fitnets_tf.stages import STAGES_OF_MODE

# The latest checkpoint of a stage, and the one a damaged latest falls back to.
CHECKPOINTS_KEPT = 2


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class RunState:
    """The progress of a run, in its ``run_state.json``.

    Stages are keyed ``"teacher"`` or ``"<mode>/<stage>"``; each records ``epochs_done``, the
    ``history`` so far, whether it is ``done``, the order its checkpoints hold maxout columns in
    (``contents.MAXOUT_ORDER``), and per kept checkpoint its files' sha256 and the
    early-stopping state. Reading it checks the latest checkpoint of every unfinished stage
    and falls back as the module docstring says, naming each damaged file through ``warn``.

    Args:
        workdir: the run directory.
        fingerprint: the configuration's (:meth:`ExperimentConfig.fingerprint`); a run
            directory holding another one is refused.
        warn: where damaged files are reported (default: stderr).
    """

    def __init__(self, workdir: pathlib.Path, fingerprint: dict, warn=_warn):
        self.files = RunLayout(workdir)
        self.path = self.files.run_state
        self.warn = warn
        self.data = {"config": fingerprint, "stages": {}, "finished": []}
        self._written = None  # the file's current text: the next save keeps it as the previous
        stored = self._read()
        if stored is not None:
            _check_same_config(stored["config"], fingerprint, self.path.parent)
            self.data = stored
            self.data["config"] = fingerprint
            self._finish_again_if_file_lost()  # before the checks, which skip finished stages
            for key, record in self.data["stages"].items():
                self._fall_back_if_damaged(key, record)

    def _finish_again_if_file_lost(self) -> None:
        """Marks unfinished a finished stage whose ``.keras`` file is missing or damaged, and
        the stages of its mode after it (they started from that file's weights).

        Its epochs are all checkpointed, so running it again restores its last checkpoint and
        writes the file without training; left finished, the next stage (or the report) stops
        at the lost file and no command would write it again.
        """
        stages = self.data["stages"]
        for key in [k for k, r in stages.items() if r.get("done") and r.get("checkpoints")]:
            path = self.files.teacher if key == "teacher" else self.files.stage(key).student
            if not stages[key].get("done") or (path.is_file() and not io.checksum_problem(path)):
                continue
            mode = key.partition("/")[0]
            order = [f"{mode}/{s}" for s in STAGES_OF_MODE.get(mode, ())]
            later = order[order.index(key) + 1 :] if key in order else []
            again = [key, *(k for k in later if stages.get(k, {}).get("done"))]
            which = (f"stages {', '.join(again)} are", "their last checkpoints") if again[1:] \
                else (f"stage {key} is", "its last checkpoint")  # fmt: skip
            self.warn(f"{path} is missing or damaged: {which[0]} finished again from {which[1]}, "
                      "without training.")  # fmt: skip
            for k in again:
                stages[k]["done"] = False

    def _read(self) -> dict | None:
        if not self.path.exists():
            return None
        for path in (self.path, self.files.run_state_previous):
            if not path.exists():
                continue  # no previous yet: one save so far
            try:
                text = path.read_text()
                data = _parse_run_state(text)
            except (OSError, ValueError) as e:  # a JSONDecodeError or UnicodeDecodeError too
                self.warn(f"The run state {path} is damaged or unreadable ({e}).")
                continue
            if path != self.path:
                self.warn(f"Resuming from the previous run state {path}: the epochs after "
                          "it are trained again.")  # fmt: skip
            self._written = text
            return data
        self.warn(f"No readable run state in {self.path.parent}: every stage starts over.")
        return None

    def _fall_back_if_damaged(self, key: str, record: dict) -> None:
        """Rolls ``key`` back to its newest checkpoint whose files match their sha256."""
        epochs_done = record.get("epochs_done")
        self._fall_back_to_intact_epoch(key, record)
        if record.get("epochs_done") != epochs_done:
            record["mid_epoch"] = None  # a step of an epoch after the one now resumed
        if not record.get("done"):
            mid_epoch.fall_back_if_damaged(key, record, self.path.parent, self.warn)

    def _fall_back_to_intact_epoch(self, key: str, record: dict) -> None:
        kept = record.get("checkpoints")
        if record.get("done") or not record.get("epochs_done") or kept is None:
            return  # nothing to restore, or written before checkpoints had checksums
        directory = self.path.parent / record["checkpoint_dir"]
        good = 0
        for number in sorted(map(int, kept), reverse=True):
            damaged = damaged_file(directory, kept[str(number)]["files"])
            if damaged is None:
                good = number
                break
            self.warn(f"The checkpoint file {directory / damaged} is damaged or missing (it "
                      "does not match the sha256 recorded when it was written).")  # fmt: skip
        if good != record["epochs_done"]:
            start = f"checkpoint ckpt-{good} ({good} epochs done)" if good else "its first epoch"
            self.warn(f"Stage {key} resumes from {start}, not from epoch "
                      f"{record['epochs_done']}.")  # fmt: skip
            record["epochs_done"] = good
            record["history"] = {name: values[:good] for name, values in record["history"].items()}
            record["checkpoints"] = {n: c for n, c in kept.items() if int(n) <= good}

    @property
    def resuming(self) -> bool:
        return bool(self.data["stages"])

    def stage(self, key: str) -> dict:
        new = {"epochs_done": 0, "history": {}, "done": False}
        return self.data["stages"].setdefault(key, {**new, "maxout_order": contents.MAXOUT_ORDER})

    def done(self, key: str) -> bool:
        return self.data["stages"].get(key, {}).get("done", False)

    def initial_epoch(self, key: str) -> int:
        """The epoch at which ``key``'s ``fit`` (re)starts.

        Its epochs done; or, once early stopping has stopped it, its last epoch: ``fit`` then
        runs no epoch and only finishes the stage (restores the best weights, saves them).
        """
        record = self.stage(key)
        if (_saved_early_stopping(record) or {}).get("stopped_epoch"):
            return record["epochs"]
        return record["epochs_done"]

    def initial_step(self, key: str) -> int:
        """The steps of epoch :meth:`initial_epoch` that ``key`` has done (mid-epoch checkpoint)."""
        return (self.stage(key).get("mid_epoch") or {}).get("step", 0)

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
        """Writes the run state (with its sha256), keeping the one it replaces as the previous."""
        text = json.dumps({**self.data, "sha256": content_sha256(self.data)}, indent=2,
                          sort_keys=True, default=str) + "\n"  # fmt: skip
        if self._written is not None and self._written != text:
            io.write_text(self.files.run_state_previous, self._written)
        io.write_text(self.path, text)
        self._written = text


def _saved_early_stopping(record: dict) -> dict | None:
    """The early-stopping state of a stage record's latest checkpoint (None: none)."""
    latest = record.get("checkpoints", {}).get(str(record["epochs_done"]))
    return latest["early_stopping"] if latest else record.get("early_stopping")


class StageCheckpoint(keras.callbacks.Callback):
    """Checkpoints one stage at every epoch end and restores it when the stage restarts.

    Place it after the callbacks whose state it saves (``EarlyStopping``) and before loggers.
    Start the stage's ``fit`` at :meth:`RunState.initial_epoch`.

    Args:
        state: the run's :class:`RunState`.
        key: the stage's key in ``state``.
        stage_dir: where ``checkpoints/`` and ``log.csv`` go.
        student: the model to save when the stage ends (None: none), to ``final_path``
            (default ``stage_dir/student.keras``); its seed-generator states, which the file
            leaves out, go to the run state (:func:`restore_seed_states`).
        early_stopping: the stage's ``EarlyStopping`` callback, if any.
        log: where "resuming from ..." goes.
        checkpoint_every, checkpoint_minutes: mid-epoch checkpoints every that many steps and
            minutes (0: none; see :mod:`fitnets_tf.run.mid_epoch`). A stage resumed from one
            is ``fit`` with :func:`~fitnets_tf.run.mid_epoch.fit_from_step` at
            :meth:`RunState.initial_step`.

    A SIGTERM or SIGINT while :func:`~fitnets_tf.run.preemption.watch` is active ends the
    stage after the step under way with a checkpoint and
    :class:`~fitnets_tf.run.preemption.Preempted`.
    """

    def __init__(self, state: RunState, key: str, stage_dir: pathlib.Path, student=None,
                 early_stopping=None, log=print, final_path=None, checkpoint_every: int = 0,
                 checkpoint_minutes: float = 0.0):  # fmt: skip
        super().__init__()
        self.state, self.key, self.files = state, key, StageLayout(stage_dir)
        self.student, self.early_stopping, self.log = student, early_stopping, log
        self.final_path = final_path or self.files.student
        self.checkpoint_every, self.checkpoint_minutes = checkpoint_every, checkpoint_minutes
        self._manager, self._steps, self._epoch_start = None, None, 0.0
        self._epoch = self._step = self._first_step = self._resume_step = 0
        self._resume_metrics = None  # the resumed epoch's metric totals before its first step

    def _checkpoint_manager(self):
        if self._manager is None:
            optimizer = self.model.optimizer
            if not optimizer.built:
                # Keras may build the slots only at the first step: build them now so the
                # checkpoint lists every optimizer variable from the start.
                optimizer.build(self.model.trainable_variables)
            checkpoint = tf.train.Checkpoint(**trackables(self.model))
            self._manager = tf.train.CheckpointManager(
                checkpoint, str(self.files.checkpoints), max_to_keep=CHECKPOINTS_KEPT
            )
        return self._manager

    def on_train_begin(self, logs=None):
        record = self.state.stage(self.key)
        manager = self._checkpoint_manager()
        self._steps = mid_epoch.StepCheckpoints(
            self.files, self.model, trackables(self.model), self.checkpoint_every,
            self.checkpoint_minutes,
        )  # fmt: skip
        contents.check_maxout_order(record, self.model, self.key)  # before restoring anything
        number = record["epochs_done"]
        mid = record.get("mid_epoch")
        if mid:
            prefix = self._steps.restore(mid["checkpoint"])
            if number:
                self._restore_early_stopping(_saved_early_stopping(record), number)
            saved = record["step_checkpoints"][str(mid["checkpoint"])]
            self._resume_step, self._resume_metrics = mid["step"], saved["metrics"]
            self.log(f"resuming from {prefix} (stage {self.key}, {number} epochs and "
                     f"{mid['step']} steps done)")  # fmt: skip
        elif number:
            # The checkpoint of the epochs the run state counts, not the newest files: a kill
            # after a checkpoint and before its run state leaves a newer, uncounted one.
            prefix = str(self.files.checkpoint(number))
            manager.checkpoint.restore(prefix).assert_existing_objects_matched()
            self._restore_early_stopping(_saved_early_stopping(record), number)
            self.log(f"resuming from {prefix} (stage {self.key}, {number} epochs done)")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._epoch, self._first_step, self._resume_step = epoch, self._resume_step, 0
        self._step = self._first_step

    def on_train_batch_end(self, batch, logs=None):
        # One call per execution of steps_per_execution steps: Keras passes the index of its
        # last step in this fit's epoch (a resumed epoch's fit starts _first_step in).
        before, self._step = self._step, self._first_step + batch + 1
        if self._resume_metrics:  # the resumed epoch's first step has built the metrics
            self._steps.add_metric_totals(self._resume_metrics)
            self._resume_metrics = None
        steps = self.params.get("steps")
        if not steps or self._step >= steps:  # unknown length: checkpoints at epoch ends only
            return  # the epoch's last step: the epoch's checkpoint follows
        number = self._epoch * steps + self._step
        stop, due = self._steps.decide(self.model.distribute_strategy, number,
                                       since=number - (self._step - before))  # fmt: skip
        if due:
            self._save_mid_epoch(number)
        if stop:
            raise preemption.Preempted(f"step {self._step} of epoch {self._epoch + 1} of stage "
                                       f"{self.key}")  # fmt: skip

    def _save_mid_epoch(self, number: int) -> None:
        record = self.state.stage(self.key)
        entry = self._steps.save(number)
        kept = {n: c for n, c in record.get("step_checkpoints", {}).items()
                if n in self._steps.kept()}  # fmt: skip
        kept[str(number)] = {**entry, "epoch": self._epoch, "step": self._step,
                             "metrics": self._steps.metric_totals()}  # fmt: skip
        mid = {"epoch": self._epoch, "step": self._step, "checkpoint": number}
        directory = mid_epoch.record_directory(self.files, self.state.path.parent)
        record.update(step_checkpoints=kept, mid_epoch=mid, step_checkpoint_dir=directory)
        self.state.save()  # the commit: from here on a resume starts after this step

    def on_epoch_end(self, epoch, logs=None):
        record = self.state.stage(self.key)
        record["seconds"] = record.get("seconds", 0.0) + time.perf_counter() - self._epoch_start
        for name, value in (logs or {}).items():
            record["history"].setdefault(name, []).append(float(value))
        number = epoch + 1
        stopping = self._save_early_stopping(number)
        manager = self._checkpoint_manager()
        manager.save(checkpoint_number=number)
        names = {pathlib.Path(p).name for p in manager.checkpoints}
        kept = {n: c for n, c in record.get("checkpoints", {}).items() if f"ckpt-{n}" in names}
        files = prefix_digests(self.files.checkpoint(number))
        kept[str(number)] = {"files": files, "early_stopping": stopping}
        # Relative to the run state: a run directory can be moved.
        directory = os.path.relpath(self.files.checkpoints, self.state.path.parent)
        record.update(epochs_done=number, epochs=self.params.get("epochs"), checkpoints=kept,
                      checkpoint_dir=directory)  # fmt: skip
        record.pop("early_stopping", None)  # where run states before checksums kept it
        record["mid_epoch"] = None  # this epoch's mid-epoch checkpoints no longer count
        self.state.save()  # the commit: from here on a resume starts after this epoch
        for path in self.files.checkpoints.glob("ckpt-*.best_weights.npz"):
            if path.name.split(".")[0] not in names:
                path.unlink(missing_ok=True)
        self._write_csv(record["history"])
        if preemption.agreed(self.model.distribute_strategy):
            raise preemption.Preempted(f"epoch {number} of stage {self.key}")

    def on_train_end(self, logs=None):
        record = self.state.stage(self.key)
        if self.student is not None:
            io.save_model(self.student, self.final_path)
            record["seed_states"] = seed_states(self.student)
        record["done"] = True
        self.state.save()

    def _write_csv(self, history: dict) -> None:
        columns = sorted(history)
        rows = ([i, *(history[c][i] if i < len(history[c]) else "" for c in columns)]
                for i in range(max((len(v) for v in history.values()), default=0)))  # fmt: skip
        io.write_csv(self.files.log_csv, ["epoch", *columns], rows)

    def _save_early_stopping(self, number: int):
        """Early stopping's state after epoch ``number``; its best weights beside the checkpoint."""
        es = self.early_stopping
        if es is None:
            return None
        if es.best_weights is not None:
            with io.atomic_path(self.files.best_weights(number)) as tmp, open(tmp, "wb") as f:
                np.savez(f, *es.best_weights)
        best = None if es.best is None else float(es.best)
        return {"wait": es.wait, "best": best, "best_epoch": es.best_epoch,
                "stopped_epoch": es.stopped_epoch}  # fmt: skip

    def _restore_early_stopping(self, saved, number: int) -> None:
        es = self.early_stopping
        if es is None or not saved:
            return
        es.wait, es.best, es.best_epoch = saved["wait"], saved["best"], saved["best_epoch"]
        # Set in the epoch early stopping ended: on_train_end then restores the best weights.
        es.stopped_epoch = saved.get("stopped_epoch", 0)
        path = self.files.best_weights(number)
        if path.exists():
            with np.load(path) as weights:
                es.best_weights = [weights[f"arr_{i}"] for i in range(len(weights.files))]
