"""The workers of a ``--strategy=multi_worker`` run agree before they train, and stop together.

Each worker of a ``MultiWorkerMirroredStrategy`` run keeps its own run directory (its own
``--workdir``) and commits its own progress, but all of them run the same collective ops: a
worker that stops alone, resumes at another step or skips a stage leaves the others waiting
in an all-reduce it never joins, or pairs their ops with the wrong ones. So, once the cluster
has formed, the workers compare (one small all-gather each time):

* whether each may use its ``--workdir`` (:func:`claim`: not another program's folder) and
  got its run directory (:func:`hold`): two workers given one ``--workdir`` (a shared
  filesystem) would write the same files, and the second is refused by the lock; the first
  used to wait for it forever. Now every worker stops, before anything is written;
* where each resumes (:func:`agree_on_progress`): a worker killed after the others' commit
  and before its own is one commit behind them. A worker one commit ahead goes back to its
  previous run state (``run_state.json.prev``, whose checkpoints are still kept), so that all
  resume from one point; progress that differs otherwise stops every worker, unchanged.

A worker lost during training (killed, unreachable) makes the others' collective ops fail
with TensorFlow's errors; :func:`lost_worker_named` says instead what happened and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys

import numpy as np
import tensorflow as tf

from fitnets_tf import distribute
from fitnets_tf.errors import ConfigError, UserError, WorkdirError
from fitnets_tf.run import io, lock, state_file
from fitnets_tf.run.layout import RunLayout
from fitnets_tf.run.resume import RunState

# What a collective op raises on the workers left when another one is gone: the peer is
# unreachable, the op timed out, or TensorFlow's health check aborted the collectives.
LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                      tf.errors.CancelledError, tf.errors.AbortedError)  # fmt: skip
_NONE = 0  # a digest meaning "no such state" (digests are in [1, 2**31))


class WorkerLostError(UserError, RuntimeError):
    """Another worker of a multi-worker run stopped; every worker must be started again."""


def strategy_for(name: str, cluster_timeout: float | None = None) -> tf.distribute.Strategy | None:
    """The run's ``MultiWorkerMirroredStrategy`` when ``name`` is ``"multi_worker"`` (made now,
    once per process: every worker joins the cluster here), else None: the other strategies
    are made where they are used, and making one early would claim the GPUs sooner for nothing.
    Call it before any TensorFlow op runs (TensorFlow configures the collectives once).
    ``cluster_timeout``: as :func:`fitnets_tf.distribute.make_strategy`'s."""
    if name != "multi_worker":
        return None
    return distribute.make_strategy(name, cluster_timeout=cluster_timeout)


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def gather_ints(strategy, values) -> np.ndarray:
    """Every replica's ``values`` (ints in [0, 2**31)), one row per replica, on every worker."""
    local = tf.constant(np.asarray(values, dtype=np.int64), tf.int32)
    per_replica = strategy.run(lambda: tf.identity(local)[tf.newaxis])
    return np.asarray(strategy.gather(per_replica, axis=0))


def _worker(strategy) -> str:
    return f"worker {strategy.cluster_resolver.task_id}"


@contextlib.contextmanager
def hold(directory, strategy, fingerprint: dict):
    """:func:`fitnets_tf.run.lock.hold` of the run directory ``directory``, which must hold
    no run of another configuration than ``fingerprint``'s, agreed by every worker.

    Under a multi-worker strategy, if any worker was refused (its directory in use, e.g. by
    another worker given the same ``--workdir``, or holding another run), every worker raises
    instead of the others waiting for it in their first all-reduce. Under any other strategy
    the refusal is raised as it is.
    """
    with contextlib.ExitStack() as stack:

        def take():
            stack.enter_context(lock.hold(directory))
            state_file.refuse_other_config(directory, fingerprint)

        _stop_if_any_refused(strategy, directory, _refused(strategy, take))
        _stop_if_settings_differ(strategy, directory, fingerprint)
        yield


# Settings that may name a file, which each host may keep at another place: compared only
# when they name no path (a model of the zoo, a TFDS dataset).
_HOST_PATHS = ("dataset", "teacher", "student", "teacher_path")


def _stop_if_settings_differ(strategy, directory, fingerprint: dict) -> None:
    """Raises on every worker of a multi-worker run if their ``fingerprint`` (the settings
    the results depend on) differ. Each trained as far as the settings agreed and then paired
    its collective ops with another kind (an epoch more on one worker: TensorFlow's
    "Collective instance ... expected type 0 ... but got type 1" at the end), or waited."""
    if not is_multi_worker(strategy):
        return
    names = sorted(fingerprint)
    mine = [digest({"": None if name in _HOST_PATHS and "/" in str(fingerprint[name])
                    else fingerprint[name]}) for name in names]  # fmt: skip
    with lost_worker_named(strategy, directory):
        rows = gather_ints(strategy, [digest({"": names}), *mine])
    if len({tuple(int(v) for v in row) for row in rows}) == 1:
        return
    differ = [n for i, n in enumerate(names) if len({int(row[i + 1]) for row in rows}) > 1]
    said = ", ".join(f"--{n} (this worker's: {json.dumps(fingerprint[n])})" for n in differ)
    raise ConfigError(
        f"{_worker(strategy).capitalize()} of the multi-worker run: the workers were given "
        f"different settings: {said or 'other flags (another version of fitnets_tf?)'}. Every "
        "worker stopped; nothing was trained. Synchronous workers train one model: start "
        "every worker with the same flags (only --workdir and paths on each host may differ)."
    )


def claim(strategy, directory, check) -> None:
    """Runs ``check()``, which refuses this worker without writing (its ``directory``:
    :func:`fitnets_tf.run.ownership.claim`; its host: a serving runtime missing): as
    :func:`hold`, every worker of a multi-worker run raises if it refused any. Call it once
    the cluster has formed: a worker refused before it joined left the others waiting for the
    cluster, without a timeout."""
    _stop_if_any_refused(strategy, directory, _refused(strategy, check))


def _refused(strategy, attempt) -> UserError | None:
    """The refusal ``attempt()`` raised on this worker of a multi-worker run (None: none);
    under any other strategy it is raised as it is."""
    try:
        attempt()
    except UserError as e:
        if not is_multi_worker(strategy):
            raise
        return e
    return None


def _stop_if_any_refused(strategy, directory, refused: UserError | None) -> None:
    if is_multi_worker(strategy):
        with lost_worker_named(strategy, directory):  # one that stopped before it got here
            anyone_refused = gather_ints(strategy, [refused is not None]).max()
        if anyone_refused:
            raise _refusal(strategy, refused) from refused


def _refusal(strategy, refused: UserError | None) -> UserError:
    worker = f"{_worker(strategy).capitalize()} of the multi-worker run"
    own = ("Each worker of a multi-worker run keeps its own run directory (checkpoints, run "
           "state, models): give each worker a --workdir of its own, also on a shared "
           "filesystem (e.g. --workdir=runs/x/worker0 on the first, runs/x/worker1 on the "
           "second).")  # fmt: skip
    stopped = "Every worker stopped; nothing was trained."
    if refused is None:
        return WorkdirError(f"{worker}: another worker was refused its run directory or a "
                            f"serving runtime (its message says why). {stopped} If two workers "
                            f"were given the same --workdir: {own[0].lower()}{own[1:]}")  # fmt: skip
    if isinstance(refused, lock.WorkdirBusyError):  # its advice (another directory) is ours
        busy = str(refused).split(" Two writers")[0].rstrip(".")
        return WorkdirError(f"{worker}: {busy}. {stopped} {own}")
    return type(refused)(f"{worker}: {refused} {stopped}")


def position(data: dict) -> dict:
    """Where a run state (its ``data``) resumes, as the workers must agree on it: per stage
    started, whether it is done, its epochs done and its mid-epoch checkpoint; and the sets
    of stages whose report is written."""
    stages = {}
    for key, record in data.get("stages", {}).items():
        where = [bool(record.get("done")), int(record.get("epochs_done") or 0),
                 int((record.get("mid_epoch") or {}).get("checkpoint") or 0)]  # fmt: skip
        if where != [False, 0, 0]:  # a stage not started yet
            stages[key] = where
    return {"stages": stages, "finished": sorted(map(sorted, data.get("finished", [])))}


def digest(where: dict) -> int:
    """A :func:`position` as an int in [1, 2**31), for :func:`gather_ints`."""
    text = json.dumps(where, sort_keys=True)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % ((1 << 31) - 1) + 1


def common_point(rows) -> int | None:
    """The position digest every worker can resume from, given each one's ``[current,
    previous]`` (:data:`_NONE`: no previous to go back to); None if there is none.

    A worker can stay where it is or go back one commit. Among the points every worker can
    reach, the one fewest workers go back from (then the smallest digest: every worker picks
    the same).
    """
    rows = [tuple(int(v) for v in row) for row in rows]
    reachable = [here for here in sorted({r[0] for r in rows})
                 if all(here in (current, previous) for current, previous in rows)]  # fmt: skip
    if not reachable:
        return None
    return max(reachable, key=lambda here: (sum(r[0] == here for r in rows), -here))


def _previous(files: RunLayout) -> tuple[int, str | None]:
    """The position digest of the run state before the current one and its text (None: no
    file, the current one being the first commit), or :data:`_NONE` if it cannot be read."""
    if not files.run_state.exists():
        return _NONE, None
    if not files.run_state_previous.exists():
        return digest(position({})), None
    try:
        text = files.run_state_previous.read_text()
        return digest(position(state_file.parse(text))), text
    except (OSError, ValueError):
        return _NONE, None


def roll_back(files: RunLayout, previous_text: str | None) -> None:
    """Makes the previous run state the current one (None: no run state, the current one
    being the first commit). The checkpoints it names are kept (two of each kind)."""
    if previous_text is None:
        files.run_state.unlink()
    else:
        io.write_text(files.run_state, previous_text)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def agree_on_progress(workdir, fingerprint: dict, strategy, warn=_warn) -> None:
    """Brings this worker's run state to the point every worker resumes from, or raises.

    Call it with the run directory held, before reading the run state to train. Under any
    strategy but a multi-worker one it does nothing.

    Raises:
        WorkdirError: on every worker, when their progress differs by more than one commit.
    """
    if not is_multi_worker(strategy):
        return
    files = RunLayout(workdir)
    for attempt in range(2):  # the second round checks the point reached (its files intact)
        here = position(RunState(files.root, fingerprint, warn=lambda message: None).data)
        previous, previous_text = _previous(files)
        rows = gather_ints(strategy, [digest(here), previous])
        if len({int(r[0]) for r in rows}) == 1:
            return
        target = common_point(rows) if attempt == 0 else None
        if target is None:
            raise WorkdirError(_apart_message(strategy, files, here, went_back=attempt > 0))
        if target != digest(here):
            roll_back(files, previous_text)
            warn(f"Another worker of the multi-worker run stopped before its last commit: "
                 f"this worker goes back to its previous run state with it "
                 f"({files.run_state_previous.name}), so that all resume from one point.")  # fmt: skip


def _apart_message(strategy, files: RunLayout, here: dict, went_back: bool) -> str:
    changed = "the worker ahead went back one commit" if went_back else "nothing was changed"
    return (
        f"The workers of the multi-worker run would resume from different points, more than "
        f"one commit apart ({_worker(strategy)}, {str(files.root)!r}: "
        f"{json.dumps(here['stages'], sort_keys=True)} (stage: [done, epochs done, mid-epoch "
        f"checkpoint]); the other workers print theirs). Every worker stopped; {changed}. "
        "To restore, copy the run directory of one worker over each other worker's "
        "(synchronous workers hold the same weights at the same point) and start every worker "
        "again; or give every worker a new --workdir to start over."
    )


@contextlib.contextmanager
def lost_worker_named(strategy, workdir):
    """Turns the error a collective op raises when another worker is gone into a
    :class:`WorkerLostError` saying what to do (any other strategy: unchanged)."""
    try:
        yield
    except LOST_WORKER_ERRORS as e:
        if not is_multi_worker(strategy):
            raise
        lines = str(e).strip().splitlines() or [type(e).__name__]
        # "Graph execution error:" comes first; the line that says why is further down.
        first = next((line for line in lines if "aborted by" in line), lines[0]).strip()[:300]
        raise WorkerLostError(
            f"Another worker of the multi-worker run stopped or cannot be reached, so "
            f"{_worker(strategy)} stopped too (TensorFlow: {type(e).__name__}: {first}). Its "
            f"last checkpoint in {os.fspath(workdir)!r} is intact: start every worker again "
            "with the same command to resume from it."
        ) from e
