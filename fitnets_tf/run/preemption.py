"""Preemption: SIGTERM or SIGINT stops a run at a step boundary, checkpointed, resumable.

Cloud machines are preempted with a SIGTERM and a grace period; people press Ctrl-C. While
:func:`watch` is active, the first of these signals only sets a flag; the stage's checkpoint
callback (:class:`~fitnets_tf.run.resume.StageCheckpoint`) sees it after the step under way,
writes a checkpoint through the run state like any other and raises :class:`Preempted`. The
run directory's lock is released as the exception leaves :func:`fitnets_tf.experiment.run`,
and ``python -m fitnets_tf.train`` exits with :data:`EXIT_STATUS` and one line saying to run
the same command again. A second signal ends the process at once (Ctrl-C twice): the files on
disk are those of the last commit, which a resume handles as after ``kill -9``.

Outside training (loading data, caching the teacher, evaluating) the flag waits for the next
step or epoch end; a run that finishes first exits normally. Under a multi-worker strategy
every worker must stop after the same step, or the others would wait forever in the next
all-reduce: :func:`agreed` stops them all when any worker's flag is set (one small collective).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import tensorflow as tf

# EX_TEMPFAIL of sysexits.h: "try again later", which is what a preempted run asks for.
EXIT_STATUS = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Workers of a multi-worker strategy compare their flags every this many steps (and at every
# epoch end): one collective each time, on the step's critical path.
MULTI_WORKER_CHECK_STEPS = 10

_requested: list[int] = []  # the signals received while watching (the first one counts)


class Preempted(Exception):
    """A run stopped on SIGTERM or SIGINT after writing a checkpoint; re-running resumes it."""

    def __init__(self, where: str):
        super().__init__(f"Stopped by a signal after {where}, checkpointed: run the same "
                         "command again to resume.")  # fmt: skip
        self.where = where


def _handle(signum, frame) -> None:
    if _requested:
        os._exit(128 + signum)  # the second signal: at once, as the shell's convention says
    _requested.append(signum)


def requested() -> bool:
    """Whether this process has received SIGTERM or SIGINT while :func:`watch` was active."""
    return bool(_requested)


def agreed(strategy: tf.distribute.Strategy | None = None, step: int | None = None) -> bool:
    """Whether to stop after the stage's ``step`` (None: at an epoch end), the same on every worker.

    One process drives all replicas of a single-host strategy (``MirroredStrategy``), so its
    own flag is the answer, at every step. Workers of ``MultiWorkerMirroredStrategy`` all call
    this after the same steps; at every :data:`MULTI_WORKER_CHECK_STEPS`-th step and at epoch
    ends they all-reduce the sum of their flags (stop if positive), elsewhere the answer is no.
    """
    return agreed_flags(strategy, step)[0]


def agreed_flags(strategy: tf.distribute.Strategy | None, step: int | None,
                 *flags: bool) -> tuple[bool, ...]:  # fmt: skip
    """:func:`agreed`, then for each of this worker's ``flags`` whether any worker's is set,
    in the same collective.

    Workers of a multi-worker strategy compare them after the same steps as :func:`agreed`
    (elsewhere: all False), so that all act on them after the same step; one process (any
    other strategy) acts on its own flags at once. A checkpoint due by time is such a flag:
    each worker has its own clock.
    """
    local = (requested(), *map(bool, flags))
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return local
    if step is not None and step % MULTI_WORKER_CHECK_STEPS:
        return (False,) * len(local)
    values = tf.constant([int(flag) for flag in local], tf.int32)
    per_replica = strategy.run(lambda: tf.identity(values))
    # ReduceOp has no MAX: the sum of the 0/1 flags is positive when any worker's flag is.
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return tuple(bool(value > 0) for value in total.numpy())


@contextlib.contextmanager
def watch():
    """Turns SIGTERM and SIGINT into a request to stop at the next step (see the module doc).

    The previous handlers come back on exit. Outside the main thread (where Python cannot
    set handlers) it watches nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    _requested.clear()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested.clear()
