"""bench/peer_process.py: candidates timed in worker processes of their own, in alternated rounds.

The workers here build tiny numpy candidates from the factories below (this module, imported in
the worker). No timing is asserted: the call order, the counts, the errors and that no worker
outlives the driver.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import peer_process
from bench.peer_process import PeerError, Worker

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = "tests.test_peer_process"


# ----------------------------------------------------------------------------- worker factories


def numpy_candidates(names=("x",), fail=None, exit_code=None):
    """``{name: a tiny numpy call}``; ``fail`` raises, ``exit_code`` ends the worker abruptly."""

    def make(name):
        def run():
            if name == fail:
                raise ValueError(f"{name} fails on purpose")
            if name == exit_code:
                os._exit(3)
            print("printed output stays out of the protocol")
            return float(np.linalg.norm(np.ones(16)))

        return run

    return {name: make(name) for name in names}, {"factory": "numpy_candidates"}


def blocking(pid_file):
    """One candidate that never returns in time; the worker's pid is written to ``pid_file``."""
    pathlib.Path(pid_file).write_text(str(os.getpid()))
    return {"sleep": lambda: time.sleep(120)}, {}


def broken_factory():
    raise RuntimeError("the factory fails on purpose")


# ----------------------------------------------------------------------------- helpers


def _alive(pid: int) -> bool:
    """Running (a zombie left for a reaper counts as ended)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _workers(**b_kwargs):
    return [
        Worker("a", f"{HERE}:numpy_candidates", {"names": ["x", "y"]}, peer_process.thread_env(1)),
        Worker(
            "b", f"{HERE}:numpy_candidates", {"names": ["z"], **b_kwargs}, {"GOMP_SPINCOUNT": None}
        ),
    ]


# ----------------------------------------------------------------------------- tests


def test_schedule_warms_up_then_rotates_each_round():
    plan = peer_process.schedule(["a", "b", "c"], repeats=2, warmup=1)
    assert plan == [("a", False), ("b", False), ("c", False),
                    ("a", True), ("b", True), ("c", True),
                    ("b", True), ("c", True), ("a", True)]  # fmt: skip


def test_times_rotation_gaps_and_worker_records(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # thread_env overrides it in worker a
    monkeypatch.setenv("GOMP_SPINCOUNT", "1")
    monkeypatch.setenv("UNRELATED_SETTING", "1")
    result = peer_process.interleaved(_workers(), repeats=3, warmup=1, gap=0.01)
    assert sorted(result["times"]) == ["a/x", "a/y", "b/z"]
    for seconds in result["times"].values():
        assert len(seconds) == 3 and all(isinstance(s, float) and s >= 0 for s in seconds)
    assert {k: len(v) for k, v in result["warmup_s"].items()} == {"a/x": 1, "a/y": 1, "b/z": 1}
    # Rounds rotate over all candidates, whichever process holds them.
    assert result["order"] == ["a/x", "a/y", "b/z", "a/y", "b/z", "a/x", "b/z", "a/x", "a/y"]
    # A gap before each call in another process than the previous call, warm-up included:
    # warm-up a a |b ; round 0 |a a |b ; round 1 |a |b |a ; round 2 |b |a a.
    assert result["quiet_gaps"] == 8
    a, b = result["workers"]["a"], result["workers"]["b"]
    assert a["env"]["OMP_NUM_THREADS"] == "1" and a["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert b["env"]["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in b["env"]
    assert a["env"]["GOMP_SPINCOUNT"] == "1" and "UNRELATED_SETTING" not in a["env"]
    assert a["factory"] == "numpy_candidates" and a["setup_s"] >= 0
    assert a["pid"] != b["pid"]
    assert not _alive(a["pid"]) and not _alive(b["pid"])


@pytest.mark.parametrize("names", [("a", "a"), ("a/b",)])
def test_worker_names_are_refused_before_any_process_starts(names):
    workers = [Worker(name, f"{HERE}:broken_factory") for name in names]
    with pytest.raises(ValueError, match="Worker names must be unique and have no '/'"):
        peer_process.interleaved(workers, repeats=1)


def test_a_raising_candidate_names_itself_and_every_worker_ends():
    with pytest.raises(PeerError, match=r"Worker 'b' .*candidate 'z' raised") as caught:
        peer_process.interleaved(_workers(fail="z"), repeats=2, gap=0.0)
    assert "z fails on purpose" in str(caught.value)
    assert len(caught.value.pids) == 2
    assert not any(_alive(pid) for pid in caught.value.pids)


def test_a_crashing_worker_is_reported_with_its_exit_code():
    with pytest.raises(PeerError, match=r"exit code 3\), candidate 'z': the worker exited"):
        peer_process.interleaved(_workers(exit_code="z"), repeats=1, gap=0.0)


def test_a_failing_factory_is_reported_while_starting():
    workers = [Worker("a", f"{HERE}:numpy_candidates"), Worker("broken", f"{HERE}:broken_factory")]
    with pytest.raises(PeerError, match=r"Worker 'broken' .*while starting raised") as caught:
        peer_process.interleaved(workers, repeats=1)
    assert "the factory fails on purpose" in str(caught.value)
    assert not any(_alive(pid) for pid in caught.value.pids)


def test_a_silent_worker_times_out():
    workers = [Worker("slow", f"{HERE}:numpy_candidates", {"names": ["x"]})]
    with pytest.raises(PeerError, match=r"while starting: no answer in 0.001 s"):
        peer_process.interleaved(workers, repeats=1, timeout=0.001)


def test_workers_die_with_a_killed_driver(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = (
        "from bench.peer_process import Worker, interleaved\n"
        f"interleaved([Worker('w', '{HERE}:blocking', {{'pid_file': {str(pid_file)!r}}})], "
        "repeats=1)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    worker = None
    try:
        for _ in range(300):  # the worker's start: up to 30 s on a loaded machine
            if pid_file.exists() and pid_file.read_text():
                worker = int(pid_file.read_text())
                break
            time.sleep(0.1)
        assert worker is not None and _alive(worker)
        driver.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel can help
        driver.wait()
        for _ in range(100):
            if not _alive(worker):
                break
            time.sleep(0.1)
        assert not _alive(worker)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.slow  # 35 s at load 8 on 2 cores: the keras worker traces five train steps
def test_torch_peer_times_each_side_in_its_own_process():
    pytest.importorskip("torch")
    from bench import torch_peer  # noqa: PLC0415 (imports TensorFlow's benchmarks)

    result = torch_peer.peer(repeats=1, steps=1, threads=1, variants=("eager_nchw",))
    assert set(result["ours_over_torch_time"]) == set(torch_peer.STEPS)
    assert result["best_torch_variant"] == dict.fromkeys(torch_peer.STEPS, "eager_nchw")
    assert result["timing"] == "separate processes, alternated rounds, quiet gap 0.3 s"
    assert result["batch_size"] == 128 and set(result["setup_s"]) == {"eager_nchw"}
    keras_worker, torch_worker = result["workers"]["keras"], result["workers"]["torch_eager_nchw"]
    assert keras_worker["intra_op_threads"] == keras_worker["inter_op_threads"] == 1
    assert torch_worker["num_threads"] == torch_worker["num_interop_threads"] == 1
    for worker in (keras_worker, torch_worker):
        assert worker["env"]["OMP_NUM_THREADS"] == "1" and not _alive(worker["pid"])
