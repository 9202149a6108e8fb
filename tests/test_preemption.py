"""Mid-epoch checkpoints (--checkpoint_every) and preemption (SIGTERM/SIGINT): exact resumes."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import dropout_model

from fitnets_tf import config as config_lib
from fitnets_tf import data, experiment, stages
from fitnets_tf.callbacks import LearningRateLogger
from fitnets_tf.run import mid_epoch, preemption, resume
from fitnets_tf.run.layout import RunLayout, StageLayout

# 256 examples in batches of 64: 4 steps per epoch.
STEPS = 4


class Killed(BaseException):
    """Stands for SIGKILL: nothing runs after it (no on_train_end, no except Exception)."""


class KilledAtStep(keras.callbacks.Callback):
    """Kills a ``fit`` after the stage's ``n``-th step (1-based), after the callbacks before it."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.n:
            raise Killed


def _stage(workdir, epochs=3, kill_at=None, every=3, seed=0, **compile_kwargs):
    """A teacher stage with dropout, augmentation and a cosine schedule, checkpointed."""
    datasets = data.load("synthetic", batch_size=64, augment=True, limit=256)
    model = dropout_model(seed)
    state = resume.RunState(workdir, {})
    checkpoint = resume.StageCheckpoint(state, "teacher", workdir, student=model,
                                        log=lambda m: None, checkpoint_every=every)  # fmt: skip
    callbacks = [datasets.epoch_callback(), LearningRateLogger(), checkpoint]
    hparams = stages.Hyperparameters(learning_rate=1e-2, lr_schedule="cosine", warmup_epochs=1)
    stages.fit_labels(model, datasets.train, epochs=epochs, hparams=hparams, verbose=0,
                      callbacks=callbacks + ([KilledAtStep(kill_at)] if kill_at else []),
                      initial_epoch=state.initial_epoch("teacher"),
                      initial_step=state.initial_step("teacher"), **compile_kwargs)  # fmt: skip
    return model, resume.RunState(workdir, {})


def test_killed_mid_epoch_then_resumed_equals_uninterrupted(tmp_path):
    tf.config.experimental.enable_op_determinism()
    straight, straight_state = _stage(tmp_path / "a")
    # Checkpoints after steps 3 and 6 (epoch 2, step 2); killed after step 7, before the
    # epoch's end: step 7 was not checkpointed and is trained again.
    with pytest.raises(Killed):
        _stage(tmp_path / "b", kill_at=7)
    state = resume.RunState(tmp_path / "b", {})
    assert state.initial_epoch("teacher") == 1 and state.initial_step("teacher") == 2
    resumed, resumed_state = _stage(tmp_path / "b", seed=123)  # all of it from the checkpoint
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 3 * STEPS
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resume.seed_states(resumed) == resume.seed_states(straight)
    # The resumed epoch's logged means are over all its batches, as uninterrupted, and its
    # learning rate is that of its first step (warm-up, then cosine: a different one each epoch).
    straight_history = straight_state.stage("teacher")["history"]
    assert len(set(straight_history["learning_rate"])) == 3
    assert resumed_state.stage("teacher")["history"] == straight_history


def test_steps_per_execution_checkpoints_count_steps_and_resume_exactly(tmp_path):
    # Two steps per Keras call: step checkpoints follow calls, at the stage's steps 6 (a
    # multiple of 3) and 10 (the call of steps 9 and 10), not at the count of calls.
    tf.config.experimental.enable_op_determinism()
    straight, straight_state = _stage(tmp_path / "a", steps_per_execution=2)
    assert sorted(straight_state.stage("teacher")["step_checkpoints"]) == ["10", "6"]
    with pytest.raises(Killed):  # after the last call, before the last epoch's checkpoint
        _stage(tmp_path / "b", kill_at=12, steps_per_execution=2)
    state = resume.RunState(tmp_path / "b", {})
    assert state.stage("teacher")["mid_epoch"] == {"epoch": 2, "step": 2, "checkpoint": 10}
    resumed, resumed_state = _stage(tmp_path / "b", seed=123, steps_per_execution=2)
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 3 * STEPS
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resume.seed_states(resumed) == resume.seed_states(straight)
    assert resumed_state.stage("teacher")["history"] == straight_state.stage("teacher")["history"]


def test_mid_epoch_checkpoints_are_bounded(tmp_path):
    _, state = _stage(tmp_path, epochs=3, every=1)
    files = StageLayout(tmp_path)
    # Every step but each epoch's last one: 9 written, the last 2 kept, beside 2 epoch ones.
    steps = sorted(p.name for p in files.step_checkpoints.glob("ckpt-*.index"))
    assert steps == ["ckpt-10.index", "ckpt-11.index"] and mid_epoch.KEPT == 2
    assert len(list(files.checkpoints.glob("ckpt-*.index"))) == resume.CHECKPOINTS_KEPT == 2
    record = state.stage("teacher")
    assert record["mid_epoch"] is None and sorted(record["step_checkpoints"]) == ["10", "11"]


def test_a_damaged_mid_epoch_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    with pytest.raises(Killed):
        _stage(tmp_path, kill_at=7, every=1)  # checkpoints after steps 5, 6 and 7
    damaged = StageLayout(tmp_path).step_checkpoint(7).with_suffix(".index")
    os.truncate(damaged, damaged.stat().st_size // 2)
    state = resume.RunState(tmp_path, {})
    warnings = capsys.readouterr().err
    assert f"The checkpoint file {damaged} is damaged" in warnings
    assert "resumes from the mid-epoch checkpoint ckpt-6, not ckpt-7" in warnings
    assert state.initial_epoch("teacher") == 1 and state.initial_step("teacher") == 2


def test_one_process_checkpoints_when_steps_or_minutes_say_so_at_any_step(tmp_path):
    # Workers of a multi-worker strategy agree on the minutes (each has its own clock) at the
    # steps they compare signals at (tests/test_multiworker.py); one process needs no one.
    model = dropout_model()
    by_steps = mid_epoch.StepCheckpoints(StageLayout(tmp_path / "a"), model, {"model": model},
                                         every=3)  # fmt: skip
    assert [by_steps.decide(None, n) for n in (3, 4)] == [(False, True), (False, False)]
    assert by_steps.decide(None, 7, since=5) == (False, True)  # step 6 ran in that call
    by_time = mid_epoch.StepCheckpoints(StageLayout(tmp_path / "b"), model, {"model": model},
                                        minutes=1e-9)  # fmt: skip
    assert by_time.decide(None, 1) == (False, True)  # not only at a MULTI_WORKER_CHECK_STEPS
    assert preemption.agreed_flags(None, 5, True, False) == (False, True, False)


def test_sigterm_checkpoints_the_step_under_way_and_raises_preempted(tmp_path):
    class SignalAtStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 5:  # during step 6
                os.kill(os.getpid(), signal.SIGTERM)

    straight, _ = _stage(tmp_path / "a", every=0)
    datasets = data.load("synthetic", batch_size=64, augment=True, limit=256)
    model = dropout_model()
    state = resume.RunState(tmp_path / "b", {})
    checkpoint = resume.StageCheckpoint(state, "teacher", tmp_path / "b", log=lambda m: None)
    # As _stage trains (the straight run it is compared with): warm-up, then cosine.
    hparams = stages.Hyperparameters(learning_rate=1e-2, lr_schedule="cosine", warmup_epochs=1)
    with preemption.watch(), pytest.raises(preemption.Preempted, match="step 2 of epoch 2"):
        stages.fit_labels(model, datasets.train, epochs=3, hparams=hparams, verbose=0,
                          callbacks=[SignalAtStep(), datasets.epoch_callback(),
                                     checkpoint])  # fmt: skip
    assert int(model.optimizer.iterations) == 6 and not preemption.requested()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed, _ = _stage(tmp_path / "b", seed=123, every=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------- every stage kind, killed mid-epoch, in-process

RUN = config_lib.ExperimentConfig().with_values(
    dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", init="he_uniform",
    modes=("fitnet", "scratch", "stagewise_labels"), teacher_epochs=2, hints_epochs=2,
    kd_epochs=2, batch_size=32, limit=96, learning_rate=1e-3, measure_latency=False,
    deterministic=True, checkpoint_every=1,
)  # fmt: skip


# What a summary row measures about the run rather than the model: never compared. (The
# .keras files' sizes are compared: a resumed run writes each as an uninterrupted one does.)
MEASURED = ("train_seconds", "stage_seconds")


def _outcome(workdir):
    summary = json.loads((workdir / "summary.json").read_text())
    summary["models"] = [{k: v for k, v in row.items() if k not in MEASURED}
                         for row in summary["models"]]  # fmt: skip
    files = RunLayout(workdir)
    weights = {name: keras.saving.load_model(files.model_file(name)).get_weights()
               for name in ("teacher", *RUN.schedule.modes)}  # fmt: skip
    return summary, weights


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    experiment.run(RUN.with_values(checkpoint_every=0), workdir, log=lambda m: None)
    return _outcome(workdir)


@pytest.mark.parametrize(
    "key",
    [
        "fitnet/kd",  # the Distiller, λ annealed per epoch
        *(pytest.param(key, marks=pytest.mark.slow) for key in (
            "teacher", "fitnet/hints", "scratch/scratch", "stagewise_labels/guided_labels",
            "stagewise_labels/kd")),
    ],
)  # fmt: skip
def test_every_stage_killed_mid_epoch_resumes_bit_identical(
    tmp_path, monkeypatch, reference_run, key
):
    save = resume.RunState.save

    def save_then_die(state):  # killed right after the commit of epoch 2's first step
        save(state)
        mid = state.data["stages"].get(key, {}).get("mid_epoch")
        if mid and mid["epoch"] == 1 and mid["step"] == 1:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(resume.RunState, "save", save_then_die)
        with pytest.raises(Killed):
            experiment.run(RUN, tmp_path, log=lambda m: None)
    logs = []
    experiment.run(RUN, tmp_path, log=logs.append)
    assert f"(stage {key}, 1 epochs and 1 steps done)" in "\n".join(logs)
    summary, weights = _outcome(tmp_path)
    reference_summary, reference_weights = reference_run
    assert summary == reference_summary  # accuracies, and every epoch's logged values
    for name, arrays in reference_weights.items():
        for a, b in zip(arrays, weights[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


# ---------------------------------------------------------------- SIGTERM to the CLI, resume

ROOT = pathlib.Path(__file__).parent.parent
ARGS = ["--flagfile=configs/smoke.flags", "--mode=kd", "--deterministic", "--nomeasure_latency",
        "--teacher_epochs=2", "--kd_epochs=2", "--checkpoint_every=1"]  # fmt: skip


def _cli(workdir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return [sys.executable, "-m", "fitnets_tf.train", *ARGS, f"--workdir={workdir}"], env


def _student(workdir):
    summary = json.loads((workdir / "summary.json").read_text())
    weights = keras.saving.load_model(workdir / "student.keras").get_weights()
    return {r["name"]: r["test_accuracy"] for r in summary["models"]}, weights


@pytest.mark.slow
def test_sigterm_exits_75_with_a_checkpoint_and_the_same_command_resumes(tmp_path):
    cmd, env = _cli(tmp_path / "a")
    straight = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    cmd, env = _cli(tmp_path / "b")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    state_file = RunLayout(tmp_path / "b").run_state
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # once kd/kd has trained a step
        if '"kd/kd"' in (state_file.read_text() if state_file.exists() else ""):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == preemption.EXIT_STATUS == 75, err[-2000:]
    assert "run the same command again to resume" in err.splitlines()[-1]
    record = json.loads(state_file.read_text())["stages"]["kd/kd"]
    assert record["mid_epoch"] or record["epochs_done"]  # the step (or epoch end) under way
    assert not (tmp_path / "b" / ".lock").read_text()  # released
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "resuming from" in done.stdout
    reference, resumed = _student(tmp_path / "a"), _student(tmp_path / "b")
    assert resumed[0] == reference[0]
    for a, b in zip(reference[1], resumed[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_sigterm_under_mirrored_strategy_stops_every_replica_at_one_step():
    script = pathlib.Path(__file__).parent / "preemption_mirrored_check.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["stopped_after"] == "step 2 of epoch 2 of stage student"
    assert result["same_weights"] and result["same_history"]


# ------------------------------- two workers (MultiWorkerMirroredStrategy) on 127.0.0.1, SIGTERM

MULTI_WORKER = pathlib.Path(__file__).parent / "preemption_multiworker_check.py"


def _two_workers(workdir, signals=("", "")):
    """Both workers of the check script, to their end: [(exit status, last JSON line)]."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(str(s.getsockname()[1]))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    workers = [
        subprocess.Popen(["nice", sys.executable, str(MULTI_WORKER), str(i), ",".join(ports),
                          str(workdir / f"w{i}"), *filter(None, [signals[i]])],
                         env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)
    ]  # fmt: skip
    try:
        outputs = [w.communicate(timeout=240) for w in workers]
    finally:
        for w in workers:
            w.kill()
    return [(w.returncode, json.loads(out.strip().splitlines()[-1]) if out.strip() else err[-3000:])
            for w, (out, err) in zip(workers, outputs, strict=True)]  # fmt: skip


def _worker_weights(workdir):
    with np.load(workdir / "student_weights.npz") as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


@pytest.fixture(scope="module")
def uninterrupted_two_workers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two_workers")
    (status0, report0), (status1, report1) = _two_workers(workdir)
    assert status0 == status1 == 0, (report0, report1)
    # The workers agree with each other; and two such runs agree exactly (measured).
    assert report0 == report1
    for a, b in zip(_worker_weights(workdir / "w0"), _worker_weights(workdir / "w1"), strict=True):
        np.testing.assert_array_equal(a, b)
    return report0["history"], _worker_weights(workdir / "w0")


@pytest.mark.slow
@pytest.mark.parametrize(
    "signalled, signal_at, stopped_after, checkpoint",
    [
        # The non-chief, as stage 2's step 3 begins: all stop at its first check, step 10.
        (1, "kd:3", "step 10 of epoch 1 of stage kd", 10),
        # The chief, as stage 1's step 19 (epoch 2, step 3) begins: all stop at step 20.
        (0, "hints:19", "step 4 of epoch 2 of stage hints", 20),
    ],
)  # fmt: skip
def test_sigterm_to_one_of_two_workers_stops_both_after_one_step_and_resumes_identically(
    tmp_path, uninterrupted_two_workers, signalled, signal_at, stopped_after, checkpoint
):
    assert preemption.MULTI_WORKER_CHECK_STEPS == 10  # the steps at which workers compare
    signals = ["", ""]
    signals[signalled] = signal_at
    stopped = _two_workers(tmp_path, signals)
    for status, report in stopped:
        assert status == preemption.EXIT_STATUS == 75, report
        assert report["stopped_after"] == stopped_after
        assert report["mid_epoch"]["checkpoint"] == checkpoint
    stage = stopped_after.rsplit(" ", 1)[1]
    chief = StageLayout(tmp_path / "w0" / stage)
    assert chief.step_checkpoint(checkpoint).with_suffix(".index").exists()
    history, weights = uninterrupted_two_workers
    for i, (status, report) in enumerate(_two_workers(tmp_path)):  # the same commands again
        assert status == 0, report
        assert report["history"] == history  # every epoch's logged means, as uninterrupted
        for a, b in zip(weights, _worker_weights(tmp_path / f"w{i}"), strict=True):
            np.testing.assert_array_equal(a, b)
