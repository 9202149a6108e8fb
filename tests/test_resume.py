"""Exact resume, non-finite losses and refusing a different configuration."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_model

import fitnets_tf
from fitnets_tf import data, errors, stages
from fitnets_tf.callbacks import NonFiniteGuard
from fitnets_tf.run import resume
from fitnets_tf.run.layout import RunLayout


def _dropout_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Dropout(0.3)(inputs)
    h = keras.layers.Conv2D(4, 3, strides=2)(h)
    h = keras.layers.Dropout(0.5)(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def _fit(model, datasets, state, stage_dir, epochs, initial_epoch=0):
    checkpoint = resume.StageCheckpoint(state, "teacher", stage_dir, log=lambda m: None)
    stages.fit_labels(model, datasets.train, epochs=epochs, initial_epoch=initial_epoch,
                        hparams=stages.Hyperparameters(learning_rate=1e-3), verbose=0,
                        callbacks=[datasets.epoch_callback(), checkpoint])  # fmt: skip


def test_resumed_stage_equals_uninterrupted(tmp_path):
    tf.config.experimental.enable_op_determinism()
    datasets = data.load("synthetic", batch_size=64, augment=True, limit=256)
    straight = _dropout_model()
    _fit(straight, datasets, resume.RunState(tmp_path / "a", {}), tmp_path / "a", epochs=3)

    # An interrupted run: 2 epochs, then a new process (fresh model, fresh pipeline) resumes.
    first = _dropout_model()
    _fit(first, datasets, resume.RunState(tmp_path / "b", {}), tmp_path / "b", epochs=2)
    state = resume.RunState(tmp_path / "b", {})
    assert state.stage("teacher")["epochs_done"] == 2
    resumed = _dropout_model(seed=123)  # different init: everything must come from the checkpoint
    fresh_data = data.load("synthetic", batch_size=64, augment=True, limit=256)
    _fit(resumed, fresh_data, state, tmp_path / "b", epochs=3, initial_epoch=2)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 12
    history = resume.RunState(tmp_path / "b", {}).stage("teacher")["history"]
    assert len(history["loss"]) == 3 and (tmp_path / "b" / "log.csv").read_text().count("\n") == 4


def test_non_finite_loss_stops_before_the_checkpoint(tmp_path):
    teacher, student = tiny_model("t", 6, 0), tiny_model("s", 4, 1)
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer=keras.optimizers.SGD(0.01), phase="kd")
    x = np.random.RandomState(0).rand(64, 8, 8, 1).astype("float32")
    y = np.arange(64) % 3

    class BreakInEpochTwo(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                d.temperature.assign(0.0)  # logits / 0: the soft term becomes NaN

    state = resume.RunState(tmp_path, {})
    checkpoint = resume.StageCheckpoint(state, "kd/kd", tmp_path, log=lambda m: None)
    with pytest.raises(errors.NonFiniteLossError, match=r"kd_loss .* stage 'kd/kd', epoch 2, step 1"):
        d.fit(x, y, batch_size=8, epochs=5, verbose=0,
              callbacks=[BreakInEpochTwo(), NonFiniteGuard("kd/kd"), checkpoint])  # fmt: skip
    record = json.loads((RunLayout(tmp_path).run_state).read_text())["stages"]["kd/kd"]
    assert record["epochs_done"] == 1 and np.isfinite(record["history"]["loss"]).all()
    latest = tf.train.latest_checkpoint(tmp_path / "checkpoints")
    assert latest.endswith("ckpt-1")  # the last good checkpoint, not overwritten
    assert all(np.isfinite(tf.train.load_variable(latest, name)).all()
               for name, _ in tf.train.list_variables(latest) if "VARIABLE_VALUE" in name)  # fmt: skip


def test_a_different_configuration_is_refused(tmp_path):
    resume.RunState(tmp_path, {"seed": 0, "kd_epochs": 5}).save()
    with pytest.raises(errors.ConfigMismatchError, match="seed: 0 there, 1 now"):
        resume.RunState(tmp_path, {"seed": 1, "kd_epochs": 5})


# ---------------------------------------------------------------- kill -9, then resume (CLI)

ROOT = pathlib.Path(__file__).parent.parent
ARGS = ["--flagfile=configs/smoke.flags", "--mode=fitnet,kd", "--deterministic",
        "--nomeasure_latency", "--teacher_epochs=3", "--hints_epochs=2", "--kd_epochs=3"]  # fmt: skip


def _cli(workdir, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "fitnets_tf.train", *ARGS, f"--workdir={workdir}", *extra]
    return cmd, env


def _run(workdir, *extra):
    cmd, env = _cli(workdir, *extra)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _kill_when(workdir, key, epochs_done):
    """Starts a run and SIGKILLs it once stage `key` has checkpointed `epochs_done` epochs."""
    cmd, env = _cli(workdir)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    state_file = RunLayout(workdir).run_state
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                stages = json.loads(state_file.read_text())["stages"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                stages = {}
            if stages.get(key, {}).get("epochs_done", 0) >= epochs_done:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def _results(workdir):
    summary = json.loads((workdir / "summary.json").read_text())
    student = keras.saving.load_model(workdir / "student.keras", safe_mode=True)
    return {r["name"]: r["test_accuracy"] for r in summary["models"]}, student.get_weights()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    _run(workdir)
    return _results(workdir)


def _assert_same(workdir, uninterrupted):
    accuracies, weights = _results(workdir)
    assert accuracies == uninterrupted[0]
    for a, b in zip(weights, uninterrupted[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_kill_in_stage_two_then_resume_is_bit_identical(tmp_path, uninterrupted):
    _kill_when(tmp_path, "fitnet/kd", 1)
    proc = _run(tmp_path)
    assert "resuming from" in proc.stdout and "stage fitnet/kd" in proc.stdout
    _assert_same(tmp_path, uninterrupted)
    again = _run(tmp_path)  # a finished run re-invoked does nothing and says so
    assert "nothing to do" in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("key", "epochs"), [("teacher", 1), ("fitnet/hints", 1), ("kd/kd", 2)])
def test_kill_anywhere_then_resume_is_bit_identical(tmp_path, uninterrupted, key, epochs):
    _kill_when(tmp_path, key, epochs)
    _run(tmp_path)
    _assert_same(tmp_path, uninterrupted)


def test_a_full_disk_leaves_the_previous_files_loadable(tmp_path):
    script = pathlib.Path(__file__).parent / "full_disk_check.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(result["failures"].values()), result  # every write did fail
    assert result["model_intact"] and result["checkpoint_intact"]
    assert result["latest"] == "ckpt-1" and result["state_epochs"] == 1
    assert result["litter"] == []
