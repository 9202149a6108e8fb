"""Timing candidates that live in separate worker processes, in alternated rounds.

Why separate processes: two runtimes in one process slow each other down. PyTorch's OpenMP
threads spin-wait after each parallel region, and TensorFlow's Eigen pool spins too, on the
cores the other runtime needs next. Timed beside our TensorFlow steps in one process, PyTorch
measured 7–40× slower than in a process of its own, and still ~2× with
``OMP_WAIT_POLICY=PASSIVE``. So each side is built once, in a long-lived worker process of its
own, and the driver (this module, in the calling process) asks one worker at a time to run one
candidate once. Every other process is blocked reading its pipe meanwhile, and before a call in
another process than the previous call the driver waits :data:`QUIET_GAP_S`, so that each
runtime is timed alone. Other jobs on the machine still compete; under such load spin-waiting
hurts a runtime even alone, so :func:`thread_env` also makes idle OpenMP threads sleep.

The rounds are those of :func:`bench.timing.interleaved` (warm-up calls, then every candidate
once per round, the order rotated by :func:`bench.timing.round_order`), and :func:`interleaved`
returns the ``times`` :func:`bench.timing.ratio` and :func:`bench.timing.summary` take. The
seconds are measured inside the worker, by ``perf_counter`` around the call; a candidate syncs
with the host itself before it returns.

A worker is a :class:`Worker`: a name and a factory, ``"module:function"``, called in the
worker process with JSON-able keyword arguments; it returns ``(candidates, info)``, a dict of
zero-argument callables and a JSON-able dict recorded in the result (the thread settings:
:func:`pin_tensorflow`, :func:`pin_torch`). The worker's environment gets :func:`thread_env`.

Workers die with the driver: on Linux each asks the kernel to SIGKILL it when the driver's
thread that started it exits (``PR_SET_PDEATHSIG``; start workers from a thread that outlives
the timing, e.g. the main thread), and every worker exits when its pipe closes. When a worker
fails, the driver kills all of them and raises :class:`PeerError` naming the worker, the
candidate and the tail of the worker's stderr.

Protocol (JSON lines): the worker answers its start with ``{"ready": [names], "setup_s",
"info"}``; the driver sends ``{"run": name}`` and gets ``{"seconds": s}``; any failure is
``{"error": traceback}``. The worker writes them to its original stdout, which it moves away
from fd 1 first, so that whatever a library prints goes to stderr, not into the protocol.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from bench import timing

# Between calls in different processes: longer than the longest default spin-wait of the
# runtimes involved (Intel OpenMP's KMP_BLOCKTIME, 200 ms; libgomp's and Eigen's pool's spins
# are shorter), so that the process that just ran has parked its threads before the next starts.
QUIET_GAP_S = 0.3
# For one answer of a worker: a torch.compile warm-up call on 2 loaded cores takes minutes.
TIMEOUT_S = 1800.0
ROOT = pathlib.Path(__file__).resolve().parents[1]
# The environment variables recorded for each worker: the ones that set threads and runtimes.
RECORDED_ENV = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "TF_", "TORCH", "PYTORCH_")
STDERR_TAIL = 2000  # characters of a failed worker's stderr quoted in the error
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class PeerError(RuntimeError):
    """A worker failed; ``pids`` are every worker process the driver started (all ended)."""

    def __init__(self, message: str, pids: list[int]):
        super().__init__(message)
        self.pids = pids


@dataclasses.dataclass(frozen=True)
class Worker:
    """One worker process: ``factory(**kwargs)`` builds its candidates there.

    Attributes:
        name: prefixes its candidates' names in the result (``"<name>/<candidate>"``).
        factory: ``"module:function"``, imported in the worker.
        kwargs: JSON-able keyword arguments of the factory.
        env: set in the worker's environment over the driver's; ``None`` unsets a variable.
    """

    name: str
    factory: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    env: dict = dataclasses.field(default_factory=dict)


def thread_env(threads: int) -> dict:
    """The environment that pins a worker's threads, the same for every runtime."""
    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        # PyTorch's OpenMP threads sleep at once when idle instead of spinning. Even alone in
        # its process, spinning cost PyTorch 10-16x (by hand) on the loaded 2 cores (eager
        # student step 1.5-2.5 s with ACTIVE or the default, 156 ms with PASSIVE; alternated
        # rounds, load 6-7):
        # a spinning thread holds a core its descheduled partner needs to reach the barrier.
        "OMP_WAIT_POLICY": "PASSIVE",
        # torch.compile compiles in the worker itself: no pool of compile processes left
        # running beside the timed ones.
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
    }


def pin_tensorflow(threads: int) -> dict:
    """Sets TensorFlow's intra- and inter-op threads (before it runs an op); returns them."""
    import tensorflow as tf  # noqa: PLC0415 (only in a TensorFlow worker)

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return {
        "tensorflow": tf.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def pin_torch(threads: int) -> dict:
    """Sets PyTorch's intra- and inter-op threads (before it runs an op); returns them."""
    import torch  # noqa: PLC0415 (optional dependency, only in a PyTorch worker)

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    return {
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
    }


@contextlib.contextmanager
def shared_batch(x, y):
    """The path of a temporary ``.npz`` holding ``x`` and ``y``: one batch for every worker."""
    import numpy as np  # noqa: PLC0415 (the driver's only use of it)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batch.npz")
        np.savez(path, x=x, y=y)
        yield path


def describe(gap: float = QUIET_GAP_S) -> str:
    """How :func:`interleaved` times, for a result's ``"timing"`` field."""
    return f"separate processes, alternated rounds, quiet gap {gap:g} s"


def schedule(names: list[str], *, repeats: int, warmup: int = 1) -> list[tuple[str, bool]]:
    """``(candidate, timed)`` in call order: ``warmup`` rounds as given, then rotated rounds."""
    plan = [(name, False) for _ in range(warmup) for name in names]
    return plan + [(name, True) for r in range(repeats) for name in timing.round_order(names, r)]


def interleaved(
    workers: list[Worker],
    *,
    repeats: int,
    warmup: int = 1,
    gap: float = QUIET_GAP_S,
    timeout: float = TIMEOUT_S,
) -> dict:
    """Times every worker's candidates in alternated rounds, each in its own process.

    Returns:
        ``times`` (``{"<worker>/<candidate>": [seconds] * repeats}``), ``warmup_s`` (the
        warm-up calls' seconds), ``order`` (the timed calls' candidates in call order),
        ``quiet_gaps`` (how many gaps were waited) and ``workers`` (per worker: ``pid``,
        ``setup_s``, ``env`` and its factory's ``info``).

    Raises:
        ValueError: two workers share a name, or a name has a ``/``.
        PeerError: a worker failed to start, raised, crashed or timed out; all are ended.
    """
    names = [worker.name for worker in workers]
    if len(set(names)) < len(names) or any("/" in name for name in names):
        raise ValueError(f"Worker names must be unique and have no '/'. Received: {names}")
    processes = []
    ok = False
    try:
        for worker in workers:  # one at a time, so that each setup time is the worker's own
            processes.append(_Process(worker))
            processes[-1].wait_ready(timeout)
        result = _rounds(processes, repeats, warmup, gap, timeout)
        ok = True
    except PeerError as err:
        raise PeerError(str(err), [p.pid for p in processes]) from None
    finally:
        for process in processes:
            process.stop(kill=not ok)
    return {**result, "workers": {p.worker.name: p.record for p in processes}}


def _rounds(processes, repeats: int, warmup: int, gap: float, timeout: float) -> dict:
    owner = {f"{p.worker.name}/{c}": p for p in processes for c in p.candidates}
    times = {name: [] for name in owner}
    warm = {name: [] for name in owner}
    order, gaps, previous = [], 0, None
    for name, timed in schedule(list(owner), repeats=repeats, warmup=warmup):
        process = owner[name]
        if previous is not None and process is not previous:
            time.sleep(gap)  # the process that ran last parks its threads
            gaps += 1
        previous = process
        seconds = process.run(name.split("/", 1)[1], timeout)
        (times if timed else warm)[name].append(seconds)
        if timed:
            order.append(name)
    return {"times": times, "warmup_s": warm, "order": order, "quiet_gaps": gaps}


class _Process:
    """The driver's end of one worker: its pipes, its stderr file, its ready message."""

    def __init__(self, worker: Worker):
        self.worker = worker
        env = {**os.environ, **worker.env}
        env = {k: v for k, v in env.items() if v is not None}
        spec = {"factory": worker.factory, "kwargs": worker.kwargs, "parent": os.getpid()}
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench.peer_process", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            cwd=ROOT, env=env, bufsize=0,
        )  # fmt: skip
        self.pid = self.popen.pid
        self.buffer = b""
        self.candidates, self.record = [], {}

    def wait_ready(self, timeout: float) -> None:
        ready = self._receive(timeout, "while starting")
        self.candidates = ready["ready"]
        self.record = {"pid": self.pid, "setup_s": ready["setup_s"], **ready["info"]}

    def run(self, candidate: str, timeout: float) -> float:
        try:
            self.popen.stdin.write(json.dumps({"run": candidate}).encode() + b"\n")
        except OSError:
            self._fail(f"candidate {candidate!r}: the worker has exited")
        return self._receive(timeout, f"candidate {candidate!r}")["seconds"]

    def _receive(self, timeout: float, doing: str) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._fail(f"{doing}: no answer in {timeout:g} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._fail(f"{doing}: the worker exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = json.loads(line)
        if "error" in message:
            self._fail(f"{doing} raised:\n{message['error']}")
        return message

    def _fail(self, what: str):
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)  # a worker that reported an error is exiting
        if self.popen.poll() is None:
            self.popen.kill()
        code = self.popen.wait()  # -9: it was still running
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace")[-STDERR_TAIL:] or "(nothing)"
        raise PeerError(
            f"Worker {self.worker.name!r} (pid {self.pid}, exit code {code}), {what}\n"
            f"Its stderr ends:\n{tail}",
            [],
        )

    def stop(self, *, kill: bool) -> None:
        """Ends the worker (at once if ``kill``, else by closing its pipe) and reaps it."""
        if self.popen.poll() is None and not kill:
            self.popen.stdin.close()  # the worker's read loop ends
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        for pipe in (self.popen.stdin, self.popen.stdout, self.stderr):
            pipe.close()


# ----------------------------------------------------------------------------- worker side


def _die_with_parent(parent: int) -> None:
    """Asks Linux to SIGKILL this process when the driver dies; elsewhere, EOF ends it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the driver died before the request
        os._exit(1)


def _runtime_env() -> dict:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(RECORDED_ENV)}


def _serve(spec: dict) -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what libraries print goes to stderr, not into the protocol

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    _die_with_parent(spec["parent"])
    start = time.perf_counter()
    try:
        module, function = spec["factory"].split(":")
        candidates, info = getattr(importlib.import_module(module), function)(**spec["kwargs"])
    except BaseException:  # noqa: BLE001 (reported to the driver, which raises it)
        send({"error": traceback.format_exc()})
        return 1
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
    info = {**info, "env": _runtime_env(), "os_threads_when_ready": threads}
    send({"ready": list(candidates), "setup_s": time.perf_counter() - start, "info": info})
    for line in sys.stdin:
        name = json.loads(line)["run"]
        try:
            start = time.perf_counter()
            candidates[name]()
            send({"seconds": time.perf_counter() - start})
        except BaseException:  # noqa: BLE001
            send({"error": traceback.format_exc()})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(_serve(json.loads(sys.argv[1])))
