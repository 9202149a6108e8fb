"""A distributed search outlives its workers: the chief gives up the trials no worker will end.

keras-tuner's chief serves the oracle until every trial it handed out has ended, and only the
worker running a trial ends it: a worker killed mid-trial (out of memory, a preempted machine,
``kill -9``) left the chief, and so the search, waiting forever. With :func:`watch` the chief
checks its workers every few seconds:

* A worker is *gone* when the lock it holds on the search directory is free (see
  :mod:`fitnets_tf.run.lock`: the kernel releases it when the process ends, however it ends).
  Its trial is ended as INVALID, which keras-tuner re-queues once (the oracles are made with
  ``max_retries_per_trial=1``; a trial whose worker dies twice is FAILED, so one trial that
  kills its workers cannot stall the search).
* A trial running longer than ``trial_timeout_s`` (``--trial_timeout_minutes``) is FAILED and
  not re-run, as it would most likely hang again; what its worker reports later is ignored.
* A worker that asks for a trial when the trial budget is spent while other trials still run
  is told to wait (IDLE) rather than to stop, so that a trial re-queued later still finds a
  worker to run it.

A worker that runs again under the same tuner id takes up its old trial, as in keras-tuner.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

# How often the chief looks at its workers, and how long a worker told to wait waits before
# asking again (each question is a call to the chief).
WATCH_INTERVAL_S = 2.0
IDLE_POLL_S = 1.0


class WorkerWatch:
    """Oracle mixin: gives up the trials of gone workers and overdue trials (module docstring).

    Args:
        worker_alive: tuner id -> True (its process runs), False (it is gone) or None (no way
            to tell: only the timeout applies).
        trial_timeout_s: a trial running longer than this is failed; 0 for never.
    """

    def __init__(self, *args, worker_alive: Callable[[str], bool | None] | None = None,
                 trial_timeout_s: float = 0.0, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.worker_alive = worker_alive
        self.trial_timeout_s = trial_timeout_s
        self.started: dict[str, float] = {}  # trial id -> when its current run began
        self.given_up: set[str] = set()  # failed by the timeout: later reports are ignored

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        resumed = tuner_id in self.ongoing_trials
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.STOPPED and any(t != tuner_id for t in self.ongoing_trials):
            self.tuner_ids.add(tuner_id)  # keras-tuner let it go with its STOPPED
            return Trial(self.get_space(), status=TrialStatus.IDLE)
        if trial.status == TrialStatus.RUNNING and not resumed:
            self.started[trial.trial_id] = time.monotonic()
        return trial

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        if trial_id in self.given_up:
            return self.trials[trial_id]
        return super().update_trial(trial_id, metrics, step=step)

    @keras_tuner.synchronized
    def end_trial(self, trial):
        if trial.trial_id not in self.given_up:
            super().end_trial(trial)

    @keras_tuner.synchronized
    def release_abandoned(self) -> list[str]:
        """Ends the trials of gone workers and the overdue ones; one line per trial given up."""
        lines = []
        for tuner_id, trial in list(self.ongoing_trials.items()):
            found = self._abandoned(tuner_id, trial.trial_id)
            if found is None:
                continue
            why, status = found
            trial.status, trial.message = status, f"Given up by the chief: {why}."
            try:
                self.end_trial(trial)  # INVALID: keras-tuner re-queues it if retries are left
            finally:  # end_trial may raise (too many consecutive failures): let the worker go
                self.ongoing_trials.pop(tuner_id, None)
                self.tuner_ids.discard(tuner_id)
                if status == TrialStatus.FAILED:
                    self.given_up.add(trial.trial_id)
            outcome = "queued to run again" if trial.status == TrialStatus.INVALID else "failed"
            lines.append(f"Trial {trial.trial_id}: {why}; {outcome}.")
        # A worker gone between two trials would keep the chief from stopping, too.
        for tuner_id in list(self.tuner_ids - set(self.ongoing_trials)):
            if self.worker_alive is not None and self.worker_alive(tuner_id) is False:
                self.tuner_ids.discard(tuner_id)
        return lines

    def _abandoned(self, tuner_id: str, trial_id: str) -> tuple[str, str] | None:
        """Why no worker will end the trial, and the status to end it with; None: one may."""
        if self.worker_alive is not None and self.worker_alive(tuner_id) is False:
            return f"its worker {tuner_id!r} is gone", TrialStatus.INVALID
        running = time.monotonic() - self.started.setdefault(trial_id, time.monotonic())
        if self.trial_timeout_s and running > self.trial_timeout_s:
            return (f"it ran {running / 60:.1f} min on worker {tuner_id!r}, more than "
                    f"--trial_timeout_minutes={self.trial_timeout_s / 60:g}",
                    TrialStatus.FAILED)  # fmt: skip
        return None


@contextlib.contextmanager
def watch(oracle: WorkerWatch, log=print, interval: float = WATCH_INTERVAL_S):
    """Runs ``oracle.release_abandoned`` every ``interval`` seconds in the background."""
    stop = threading.Event()

    def loop():
        while not stop.wait(interval):
            try:
                for line in oracle.release_abandoned():
                    log(line)
            except Exception as e:  # noqa: BLE001  (the chief keeps serving; the next look retries)
                log(f"Checking the workers failed: {type(e).__name__}: {e}")

    thread = threading.Thread(target=loop, name="fitnets_tf-worker-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
