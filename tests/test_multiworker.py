"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train like one process."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import train_cli

SCRIPT = pathlib.Path(__file__).parent / "multiworker_check.py"
ROOT = pathlib.Path(__file__).parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_workers_match_one_process():
    ports = f"{_free_port()},{_free_port()}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    workers = [
        subprocess.Popen([sys.executable, str(SCRIPT), str(i), ports], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        for i in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=240) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
    single = subprocess.run([sys.executable, str(SCRIPT), "-1", ports], env=env, text=True,
                            capture_output=True, timeout=240)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    one = _last_json(single.stdout)
    for out, _ in outputs:
        result = _last_json(out)
        for phase in ("hints", "kd"):
            np.testing.assert_allclose(result[phase], one[phase], rtol=2e-3)
        np.testing.assert_allclose(result["weights"], one["weights"], rtol=2e-3)


# One worker of two, alone: reports how long make_strategy took to refuse, and what it said.
_ALONE = """
import json, os, sys, time
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": sys.argv[1].split(",")},
                                      "task": {"type": "worker", "index": int(sys.argv[2])}})
from fitnets_tf import distribute
start = time.monotonic()
try:
    distribute.make_strategy("multi_worker", cluster_timeout=3)
except distribute.ClusterTimeoutError as error:
    print(json.dumps({"seconds": time.monotonic() - start, "message": str(error)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1])  # the leader, and a worker whose leader never came
def test_a_worker_whose_peer_never_joins_stops_after_cluster_timeout(index):
    # TensorFlow waited for the cluster without end (by hand: still waiting after 10 minutes).
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _ALONE, ",".join(addresses), str(index)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused = _last_json(proc.stdout)
    assert 3 <= refused["seconds"] < 60
    assert f"this worker (worker {index}) waited 3 s" in refused["message"]
    assert f"worker 1 at {addresses[1]}" in refused["message"]
    assert "--cluster_timeout" in refused["message"]


# ------------------------- python -m fitnets_tf.train --strategy=multi_worker, two workers

# Tiny: 128 training images in batches of 32 (4 steps an epoch), a checkpoint at every step.
CLI_FLAGS = ["--flagfile=configs/smoke.flags", "--mode=fitnet", "--limit=128", "--batch_size=32",
             "--hints_epochs=1", "--kd_epochs=2", "--nomeasure_latency", "--checkpoint_every=1",
             "--strategy=multi_worker"]  # fmt: skip


@pytest.fixture(scope="module")
def cli_teacher(tmp_path_factory):
    """A teacher trained by one process (a plain Keras fit does not run multi-worker)."""
    workdir = tmp_path_factory.mktemp("teacher")
    proc = train_cli("--flagfile=configs/smoke.flags", "--mode=kd", "--stages=teacher",
                     "--limit=128", "--batch_size=32", "--teacher_epochs=1",
                     "--nomeasure_latency", f"--workdir={workdir}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _cli_workers(workdirs, *flags, each=((), ())):
    """Starts ``python -m fitnets_tf.train`` as worker 0 and 1 of a cluster on 127.0.0.1,
    with ``flags`` and each worker's own of ``each``."""
    ports = [_free_port(), _free_port()]
    workers = []
    for i, workdir in enumerate(workdirs):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": i}}  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps(tf_config))  # fmt: skip
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "fitnets_tf.train", *CLI_FLAGS, f"--workdir={workdir}", *flags,
             *each[i]],
            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))  # fmt: skip
    return workers


def _finish(workers, timeout=300):
    """Each worker's (exit status, stdout, stderr); SIGKILLs what is left after ``timeout`` s
    (a hang fails the test instead of stalling it: a SIGTERM only asks the CLI to stop)."""
    try:
        outputs = [w.communicate(timeout=timeout) for w in workers]
    finally:
        for w in workers:
            w.kill()
    return [(w.returncode, *out) for w, out in zip(workers, outputs, strict=True)]


def _student_weights(workdir):
    import keras

    return keras.saving.load_model(workdir / "student.keras", compile=False).get_weights()


@pytest.mark.slow
def test_two_workers_given_one_workdir_both_stop_with_the_fix(tmp_path, cli_teacher):
    # The second worker was refused by the run directory's lock and the first then waited for
    # it forever, in its first collective op.
    shared = tmp_path / "shared"
    results = _finish(_cli_workers([shared, shared], f"--teacher_path={cli_teacher}"),
                      timeout=180)  # fmt: skip
    for status, _, err in results:
        assert status == 1 and "Traceback" not in err, err[-3000:]
        assert "of the multi-worker run" in err and "nothing was trained" in err, err[-3000:]
        assert "give each worker a --workdir of its own" in err
    assert any("is in use by PID" in err for _, _, err in results)
    assert not (shared / "run_state.json").exists() and not (shared / "flags.txt").exists()


@pytest.mark.slow
def test_a_worker_refused_its_workdir_before_the_cluster_formed_stops_both(tmp_path, cli_teacher):
    # Worker 1's --workdir holds a file a run writes but no run: its claim refused it before
    # it joined the cluster, and worker 0 waited for the cluster forever.
    taken = tmp_path / "not_a_run"
    taken.mkdir()
    (taken / "flags.txt").write_text("--mine\n")
    workdirs = [tmp_path / "worker0", taken]
    results = _finish(_cli_workers(workdirs, f"--teacher_path={cli_teacher}"), timeout=120)
    for status, _, err in results:
        assert status == 1 and "Traceback" not in err, err[-3000:]
    (_, _, first), (_, _, second) = results
    refused = "another worker was refused its run directory or a serving runtime"
    assert refused in first, first[-3000:]
    assert "is not a run directory" in second and "nothing was trained" in second, second[-3000:]
    assert (taken / "flags.txt").read_text() == "--mine\n"
    assert not (tmp_path / "worker0" / "run_state.json").exists()


@pytest.mark.slow
def test_a_worker_that_stops_before_joining_stops_the_other_after_cluster_timeout(tmp_path):
    # Worker 1's flags are refused before it joins the cluster; worker 0 waited for it forever.
    workdirs = [tmp_path / "w0", tmp_path / "w1"]
    workers = _cli_workers(workdirs, "--cluster_timeout=5", each=([], ["--batch_size=0"]))
    (status, _, err), (bad_status, _, bad_err) = _finish(workers, timeout=120)
    assert bad_status == 1 and "batch_size" in bad_err, bad_err[-3000:]
    assert status == 1 and "Traceback" not in err, err[-3000:]
    assert "The multi-worker cluster did not form: this worker (worker 0) waited 5 s" in err
    assert not (workdirs[0] / "run_state.json").exists()


@pytest.mark.slow
def test_a_worker_one_commit_ahead_goes_back_and_both_finish_alike(tmp_path, cli_teacher):
    workdirs = [tmp_path / "w0", tmp_path / "w1"]
    teacher = f"--teacher_path={cli_teacher}"
    workers = _cli_workers(workdirs, teacher)
    # A SIGTERM once training has begun (before, it would end the process): both workers stop
    # after the same step, committed.
    while not (workdirs[0] / "versions.json").exists() and workers[0].poll() is None:
        time.sleep(0.2)
    workers[0].send_signal(signal.SIGTERM)
    for status, _, err in _finish(workers):
        assert status == 75, err[-3000:]
    # Worker 1 as if killed between its last checkpoint and its commit: one commit behind.
    w1 = workdirs[1] / "run_state.json"
    w1.write_text((workdirs[1] / "run_state.json.prev").read_text())
    results = _finish(_cli_workers(workdirs, teacher))
    for status, _, err in results:
        assert status == 0, err[-3000:]
    assert "goes back to its previous run state" in results[0][2]
    assert "goes back" not in results[1][2]
    for a, b in zip(*map(_student_weights, workdirs), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_lost_worker_stops_the_other_with_what_to_do(tmp_path, cli_teacher):
    # The other worker got TensorFlow's UnavailableError and its traceback.
    workdirs = [tmp_path / "w0", tmp_path / "w1"]
    flags = (f"--teacher_path={cli_teacher}", "--kd_epochs=10")
    workers = _cli_workers(workdirs, *flags)
    while not (workdirs[1] / "run_state.json").exists() and workers[1].poll() is None:
        time.sleep(0.2)
    workers[1].kill()  # training under way: worker 1 committed its first step
    (status, _, err), _ = _finish(workers)
    assert status == 1 and "Traceback" not in err, err[-3000:]
    assert "Another worker of the multi-worker run stopped or cannot be reached" in err
    assert "is intact: start every worker again with the same command" in err
    # As it says: both resume (from one point, whichever side of its commit worker 1 died).
    for status, _, err in _finish(_cli_workers(workdirs, *flags)):
        assert status == 0, err[-3000:]
    for a, b in zip(*map(_student_weights, workdirs), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_workers_checkpoint_after_the_same_steps_whatever_their_clocks_say(tmp_path, cli_teacher):
    # Worker 0's clock finds a checkpoint due after every step, worker 1's never: each used to
    # checkpoint by its own, and killed they resumed from different steps. Now they agree at
    # the steps they compare signals at (every 10th of a stage: step 10 of kd here).
    workdirs = [tmp_path / "w0", tmp_path / "w1"]
    results = _finish(_cli_workers(workdirs, f"--teacher_path={cli_teacher}", "--kd_epochs=6",
                                   "--checkpoint_every=0",
                                   each=(["--checkpoint_minutes=1e-9"], [])))  # fmt: skip
    for status, _, err in results:
        assert status == 0, err[-3000:]
    kept = [{key: sorted(record.get("step_checkpoints", {}), key=int)
             for key, record in json.loads((w / "run_state.json").read_text())["stages"].items()}
            for w in workdirs]  # fmt: skip
    assert kept[0] == kept[1] == {"fitnet/hints": [], "fitnet/kd": ["10"]}


@pytest.mark.slow
def test_workers_given_different_flags_both_stop_before_training(tmp_path, cli_teacher):
    # Worker 1 was given --kd_epochs=3: both trained stage 1 and two KD epochs, then worker 0
    # finished and worker 1 waited for it in an all-reduce until TensorFlow's heartbeat gave up.
    workdirs = [tmp_path / "w0", tmp_path / "w1"]
    workers = _cli_workers(workdirs, f"--teacher_path={cli_teacher}",
                           each=([], ["--kd_epochs=3"]))  # fmt: skip
    for status, _, err in _finish(workers, timeout=180):
        assert status == 1 and "Traceback" not in err, err[-3000:]
        assert "were given different settings: --kd_epochs (this worker's: " in err, err[-3000:]
        assert "Every worker stopped; nothing was trained." in err
    assert not any((w / "run_state.json").exists() for w in workdirs)
