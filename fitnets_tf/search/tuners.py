"""keras-tuner oracles that try the configuration being tuned first, and a Tuner that logs.

The oracles are keras-tuner's own (random, Bayesian, Hyperband) with three changes: their first
trial is the defaults; they write ``oracle.json`` and each ``trial.json`` atomically, and also
when a failed trial stops the search; and they give up the trials of dead workers
(:mod:`~fitnets_tf.search.workers`). The Tuner adds, per trial, a ``log.csv`` of its epochs and
a ``runs.jsonl`` of its starts and ends (a trial re-run after an interruption shows two
starts), and stops the search on a full disk.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import keras
import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from fitnets_tf.errors import SearchError
from fitnets_tf.run import io
from fitnets_tf.search.workers import IDLE_POLL_S, WorkerWatch

ORACLES = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_accuracy"
PROJECT = "trials"


class DefaultsFirst:
    """Makes the defaults (the configuration being tuned) the first trial of any oracle.

    keras-tuner has no public hook for this: random, Bayesian (initial points) and Hyperband
    (new brackets) oracles all draw new values through ``_random_values``, and overriding
    ``populate_space`` instead would bypass Hyperband's brackets. The first draw returns the
    defaults.
    """

    def _random_values(self):
        defaults = {hp.name: hp.default for hp in self.hyperparameters.space}
        if not self._duplicate(defaults):
            return defaults
        return super()._random_values()


class AtomicStateFiles:
    """Writes ``oracle.json`` and each ``trial.json`` through :mod:`fitnets_tf.run.io`.

    keras-tuner opens them for writing in place: a full disk or a kill mid-write leaves an
    empty or half file, and the search can no longer be resumed. ``save`` is public; the trial
    files are written by ``_save_trial`` (keras-tuner 1.4), so its file names are asked of
    keras-tuner rather than spelled here.
    """

    def save(self):
        io.write_text(self._get_oracle_fname(), json.dumps(self.get_state()))

    def _save_trial(self, trial):
        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        io.write_text(path, json.dumps(trial.get_state()))


class RecordsTheStoppingFailure:
    """Writes the trial that stops the search (too many failures in a row) as ``FAILED``.

    keras-tuner's ``end_trial`` raises before it writes that trial and ``oracle.json``: on
    resume the trial was still running there, so it ran again, failed again and stopped the
    search again, whatever the re-run changed. Written, a resumed search draws a new trial.
    """

    @keras_tuner.synchronized
    def end_trial(self, trial):
        try:
            super().end_trial(trial)
        except RuntimeError as e:
            if "consecutive failures" not in str(e):
                raise
            for tuner_id, ongoing in list(self.ongoing_trials.items()):
                if ongoing.trial_id == trial.trial_id:
                    del self.ongoing_trials[tuner_id]
            self._save_trial(self.trials[trial.trial_id])
            self.save()
            raise


class RandomOracle(DefaultsFirst, WorkerWatch, RecordsTheStoppingFailure,
                   AtomicStateFiles, keras_tuner.oracles.RandomSearchOracle):  # fmt: skip
    pass


class BayesianOracle(DefaultsFirst, WorkerWatch, RecordsTheStoppingFailure,
                     AtomicStateFiles, keras_tuner.oracles.BayesianOptimizationOracle):  # fmt: skip
    pass


class HyperbandOracle(DefaultsFirst, WorkerWatch, RecordsTheStoppingFailure,
                      AtomicStateFiles, keras_tuner.oracles.HyperbandOracle):  # fmt: skip
    pass


class RecordingTuner(keras_tuner.Tuner):
    """A Tuner that logs each trial's epochs (``log.csv``) and its runs (``runs.jsonl``)."""

    def __init__(self, oracle, hypermodel, **kwargs):
        self._asked = False  # asked the oracle for a trial, none began yet
        # keras_tuner.Tuner.__init__ by name: the stock Hyperband class builds its own oracle.
        keras_tuner.Tuner.__init__(self, oracle, hypermodel, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        log = keras.callbacks.CSVLogger(os.path.join(self.get_trial_dir(trial.trial_id), "log.csv"))
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), log]
        try:
            return super().run_trial(trial, *args, **kwargs)
        except Exception as e:
            # keras-tuner would record the trial as failed and go on to fail the next ones; a
            # FatalError stops the search with the trial still RUNNING, re-run on resume.
            if io.disk_full_reason(e) is None:
                raise
            raise keras_tuner.errors.FatalError(f"trial {trial.trial_id}: {e}") from e

    def save(self):
        # keras_tuner.Tuner.save (1.4), with the tuner's own file written atomically too.
        if not self._is_worker():
            self.oracle.save()
        io.write_text(self._get_tuner_fname(), json.dumps(self.get_state()))

    def pre_create_trial(self):
        # Asked again and no trial began: the oracle said to wait (IDLE). Do not spin.
        if self._asked:
            time.sleep(IDLE_POLL_S)
        self._asked = True

    def on_trial_begin(self, trial):
        self._asked = False
        self._record(trial, "start")
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        self._record(trial, "end")
        super().on_trial_end(trial)

    def _record(self, trial, event: str):
        path = pathlib.Path(self.get_trial_dir(trial.trial_id)) / "runs.jsonl"
        line = {"event": event, "tuner_id": self.tuner_id, "status": trial.status,
                "time": round(time.time(), 3)}  # fmt: skip
        previous = path.read_text() if path.is_file() else ""
        io.write_text(path, previous + json.dumps(line) + "\n")


class HyperbandTuner(RecordingTuner, keras_tuner.Hyperband):
    """Hyperband's epochs per round and warm starts, with our oracle and records."""


def make_tuner(
    hypermodel: keras_tuner.HyperModel,
    *,
    oracle: str = "random",
    max_trials: int = 8,
    trial_epochs: int = 3,
    directory: str | os.PathLike,
    project_name: str = PROJECT,
    seed: int = 0,
    distribution_strategy=None,
    worker_alive=None,
    trial_timeout_s: float = 0.0,
) -> keras_tuner.Tuner:
    """A resumable tuner (``overwrite=False``) maximising ``val_accuracy``.

    Args:
        oracle: ``"random"``, ``"bayesian"`` (Gaussian process; needs scikit-learn) or
            ``"hyperband"`` (``trial_epochs`` is its ``max_epochs``, factor 3).
        max_trials: number of trials (Hyperband: a cap on its brackets' trials).
        seed: the oracle's seed.
        worker_alive, trial_timeout_s: how a distributed search's chief tells a trial no
            worker will end (see :class:`~fitnets_tf.search.workers.WorkerWatch`).
    """
    if oracle not in ORACLES:
        raise SearchError(f"`oracle` must be one of {ORACLES}. Received: oracle={oracle!r}")
    # keras-tuner reads max_trials=0 as "no limit": a search that never ends.
    for name, value in (("max_trials", max_trials), ("trial_epochs", trial_epochs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SearchError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    # keras-tuner replaces a seed of 0 by a random one.
    # A trial whose worker died is ended INVALID by the chief: run again once (as is, now, a
    # trial that raised an error other than keras-tuner's FailedTrialError).
    common = dict(objective=objective, seed=seed + 1, max_retries_per_trial=1,
                  worker_alive=worker_alive, trial_timeout_s=trial_timeout_s)  # fmt: skip
    if oracle == "random":
        the_oracle = RandomOracle(max_trials=max_trials, **common)
    elif oracle == "bayesian":
        the_oracle = BayesianOracle(max_trials=max_trials, **common)
    else:
        the_oracle = HyperbandOracle(max_epochs=trial_epochs, factor=3, **common)
        the_oracle.max_trials = max_trials
    cls = HyperbandTuner if oracle == "hyperband" else RecordingTuner
    return cls(the_oracle, hypermodel, directory=str(directory), project_name=project_name,
               overwrite=False, distribution_strategy=distribution_strategy)  # fmt: skip


def requeue_interrupted(oracle) -> None:
    """Queues every RUNNING trial to run again, and no finished one: call after the oracle
    reloaded, before the search starts.

    keras-tuner re-queues the trials its ``oracle.json`` lists as ongoing; a kill between a
    trial's ``trial.json`` and that file would leave the trial RUNNING and never re-run. Its
    ``end_trial`` writes ``oracle.json`` before it drops the trial from the ongoing ones (the
    tuner writes the file again just after): a kill in between re-queued the finished trial,
    to be trained twice. Its retry queue has no public accessor.
    """
    finished = (TrialStatus.COMPLETED, TrialStatus.FAILED)
    oracle._retry_queue[:] = [i for i in oracle._retry_queue if oracle.trials[i].status
                              not in finished]  # fmt: skip
    for trial_id, trial in oracle.trials.items():
        if trial.status == "RUNNING" and trial_id not in oracle._retry_queue:
            oracle._retry_queue.append(trial_id)
