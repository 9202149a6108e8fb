"""Exact resume, damaged files, non-finite losses and refusing a different configuration."""

import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import dropout_model, tiny_data, tiny_model

import fitnets_tf
from fitnets_tf import config as config_lib
from fitnets_tf import data, errors, experiment, stages
from fitnets_tf.callbacks import EarlyStopping, NonFiniteGuard
from fitnets_tf.run import contents, io, resume
from fitnets_tf.run.layout import RunLayout


def _fit(model, datasets, state, stage_dir, epochs, initial_epoch=0):
    checkpoint = resume.StageCheckpoint(state, "teacher", stage_dir, log=lambda m: None)
    stages.fit_labels(model, datasets.train, epochs=epochs, initial_epoch=initial_epoch,
                        hparams=stages.Hyperparameters(learning_rate=1e-3), verbose=0,
                        callbacks=[datasets.epoch_callback(), checkpoint])  # fmt: skip


def test_resumed_stage_equals_uninterrupted(tmp_path):
    tf.config.experimental.enable_op_determinism()
    datasets = data.load("synthetic", batch_size=64, augment=True, limit=256)
    straight = dropout_model()
    _fit(straight, datasets, resume.RunState(tmp_path / "a", {}), tmp_path / "a", epochs=3)

    # An interrupted run: 2 epochs, then a new process (fresh model, fresh pipeline) resumes.
    first = dropout_model()
    _fit(first, datasets, resume.RunState(tmp_path / "b", {}), tmp_path / "b", epochs=2)
    state = resume.RunState(tmp_path / "b", {})
    assert state.stage("teacher")["epochs_done"] == 2
    resumed = dropout_model(seed=123)  # different init: everything must come from the checkpoint
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


def _checkpointed_then_marked_old(model, x, y, workdir):
    """One epoch checkpointed, then the run state edited as a version before the mark wrote it."""
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    state = resume.RunState(workdir, {})
    checkpoint = resume.StageCheckpoint(state, "teacher", workdir, log=lambda m: None)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[checkpoint])
    state = resume.RunState(workdir, {})
    assert state.stage("teacher").pop("maxout_order") == "piece_major"
    state.save()
    state = resume.RunState(workdir, {})
    return resume.StageCheckpoint(state, "teacher", workdir, log=lambda m: None)


def test_a_checkpoint_from_before_piece_major_maxout_is_refused(tmp_path):
    x, y = tiny_data()
    checkpoint = _checkpointed_then_marked_old(tiny_model("t", 4, 0), x, y, tmp_path / "m")
    again = tiny_model("t", 4, 0)
    again.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    with pytest.raises(errors.WorkdirError, match="stage teacher.*new --workdir"):
        again.fit(x, y, batch_size=16, epochs=2, initial_epoch=1, verbose=0, callbacks=[checkpoint])
    # Without maxout layers, the order of nothing changed: an old checkpoint resumes.
    x28 = np.random.RandomState(0).rand(32, 28, 28, 1).astype("float32")
    checkpoint = _checkpointed_then_marked_old(dropout_model(), x28, y, tmp_path / "plain")
    again = dropout_model(seed=1)
    again.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    again.fit(x28, y, batch_size=16, epochs=2, initial_epoch=1, verbose=0, callbacks=[checkpoint])
    assert resume.RunState(tmp_path / "plain", {}).stage("teacher")["epochs_done"] == 2


def test_an_old_checkpoint_is_judged_by_what_it_holds_not_by_the_frozen_teacher():
    # A stage record made before piece-major maxouts (no mark) with an epoch to restore.
    old = {"epochs_done": 1}
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    plain = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    maxout_teacher = tiny_model("teacher", 4, 0)
    # The teacher is left out of the checkpoint (trackables): its order never mattered.
    contents.check_maxout_order(old, fitnets_tf.Distiller(maxout_teacher, plain), "kd")
    with pytest.raises(errors.WorkdirError, match="stage kd"):
        contents.check_maxout_order(old, fitnets_tf.Distiller(plain, tiny_model("s", 4, 1)), "kd")
    marked = {"epochs_done": 1, "maxout_order": contents.MAXOUT_ORDER}
    contents.check_maxout_order(marked, fitnets_tf.Distiller(plain, tiny_model("s", 4, 1)), "kd")


# ------------------------------------------- interrupted in-process, at chosen moments, resumed

# Both modes whose stage 2 resumed from the wrong checkpoint, each with two stages' worth of
# boundaries; a teacher with dropout (seed-generator state) trained here.
RUN = config_lib.ExperimentConfig().with_values(
    dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", init="he_uniform",
    modes=("stagewise_labels", "kd"), teacher_epochs=2, hints_epochs=2, kd_epochs=2,
    batch_size=64, limit=128, learning_rate=1e-3, measure_latency=False, deterministic=True,
)  # fmt: skip


def test_the_regressor_bound_is_part_of_the_configuration_a_run_resumes(tmp_path):
    bounded = RUN.with_values(modes=("fitnet",), regressor_max_norm=0.9)
    resume.RunState(tmp_path, bounded.fingerprint()).save()
    resume.RunState(tmp_path, bounded.fingerprint())  # the same command resumes
    with pytest.raises(errors.ConfigMismatchError, match="regressor_max_norm: 0.9 there, 0.0 now"):
        resume.RunState(tmp_path, bounded.with_values(regressor_max_norm=0.0).fingerprint())
    # A run directory written before the option resumes as what it was: unbounded.
    old = {k: v for k, v in RUN.fingerprint().items() if k != "regressor_max_norm"}
    assert config_lib.upgrade_fingerprint(old) == RUN.fingerprint()


class Killed(BaseException):
    """Stands for SIGKILL: nothing runs after it (no on_train_end, no except Exception)."""


def _die(*args):
    raise Killed


class KilledAfterEpoch(keras.callbacks.Callback):
    """Kills a ``fit`` once epoch ``n`` (1-based) has ended, after the callbacks before it."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.n:
            raise Killed


def _run_killed_at(monkeypatch, workdir, key, epochs, *, committed):
    """Runs RUN and 'kills' it when stage ``key`` has trained ``epochs`` epochs.

    ``committed=False``: after that epoch's checkpoint is written, before the run state that
    counts it (the window a kill fell into); ``True``: right after the run state, before the
    stage finishes (its student.keras, its ``done``).
    """
    save = resume.RunState.save

    def save_then_die(state):
        record = state.data["stages"].get(key, {})
        due = record.get("epochs_done") == epochs and not record.get("done")
        if due and not committed:
            raise Killed
        save(state)
        if due:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(resume.RunState, "save", save_then_die)
        with pytest.raises(Killed):
            experiment.run(RUN, workdir, log=lambda m: None)


def _outcome(workdir):
    """Test accuracies and every saved model's weights of a finished run."""
    summary = json.loads((workdir / "summary.json").read_text())
    files = RunLayout(workdir)
    weights = {name: keras.saving.load_model(files.model_file(name)).get_weights()
               for name in ("teacher", *RUN.schedule.modes)}  # fmt: skip
    return {r["name"]: r["test_accuracy"] for r in summary["models"]}, weights


def _assert_same_outcome(workdir, reference):
    accuracies, weights = _outcome(workdir)
    assert accuracies == reference[0]
    for name, arrays in reference[1].items():
        for a, b in zip(arrays, weights[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    experiment.run(RUN, workdir, log=lambda m: None)
    return _outcome(workdir)


@pytest.mark.parametrize(
    ("key", "epochs", "committed"),
    [
        # The report: ckpt-2 written, the run state still at 1 epoch; the resumed stage
        # restored ckpt-2 and trained epoch 2 again on top of it.
        ("stagewise_labels/kd", 2, False),
        ("kd/kd", 2, True),  # between the mode's last checkpoint and its student.keras
        pytest.param("stagewise_labels/guided_labels", 2, True, marks=pytest.mark.slow),
        pytest.param("stagewise_labels/guided_labels", 2, False, marks=pytest.mark.slow),
        pytest.param("kd/kd", 2, False, marks=pytest.mark.slow),
        pytest.param("teacher", 2, False, marks=pytest.mark.slow),
    ],
)
def test_interrupted_then_resumed_equals_uninterrupted(
    tmp_path, monkeypatch, reference_run, key, epochs, committed
):
    _run_killed_at(monkeypatch, tmp_path, key, epochs, committed=committed)
    logs = []
    experiment.run(RUN, tmp_path, log=logs.append)
    resumed_at = epochs if committed else epochs - 1
    if resumed_at:
        assert f"ckpt-{resumed_at} (stage {key}, {resumed_at} epochs done)" in "\n".join(logs)
    _assert_same_outcome(tmp_path, reference_run)


@pytest.mark.slow
def test_killed_while_reporting_then_resumed_equals_uninterrupted(
    tmp_path, monkeypatch, reference_run
):
    # Every stage done and the final student written; no summary yet.
    with monkeypatch.context() as patch:
        patch.setattr(experiment.Experiment, "_summary", _die)
        with pytest.raises(Killed):
            experiment.run(RUN, tmp_path, log=lambda m: None)
    assert not (tmp_path / "summary.json").exists()
    experiment.run(RUN, tmp_path, log=lambda m: None)
    _assert_same_outcome(tmp_path, reference_run)


def test_a_lost_stage_file_is_written_again_from_its_checkpoint(
    tmp_path, monkeypatch, capsys, reference_run
):
    # Every stage done, killed while reporting; then a finished stage's student.keras is cut
    # short and the trained teacher deleted. The run used to stop at the lost file on every
    # re-run ("run that stage first", "No teacher"), which no command could write again.
    with monkeypatch.context() as patch:
        patch.setattr(experiment.Experiment, "_summary", _die)
        with pytest.raises(Killed):
            experiment.run(RUN, tmp_path, log=lambda m: None)
    files = RunLayout(tmp_path)
    guided = files.stage_student("stagewise_labels", "guided_labels")
    os.truncate(guided, guided.stat().st_size // 2)
    files.teacher.unlink()
    capsys.readouterr()
    logs = []
    experiment.run(RUN, tmp_path, log=logs.append)
    warnings = capsys.readouterr().err
    assert f"{guided} is missing or damaged: stages stagewise_labels/guided_labels, " \
           "stagewise_labels/kd are finished again from their last" in warnings  # fmt: skip
    assert f"{files.teacher} is missing or damaged: stage teacher is finished" in warnings
    assert "ckpt-2 (stage stagewise_labels/guided_labels, 2 epochs done)" in "\n".join(logs)
    assert not [m for m in logs if m.startswith("Epoch")]  # nothing trained again
    _assert_same_outcome(tmp_path, reference_run)


def test_a_resume_removes_what_writers_killed_mid_write_left(tmp_path, monkeypatch, reference_run):
    # A SIGKILL inside a save leaves its temporary (io.atomic_path's, or TensorFlow's shards of
    # a checkpoint): a resumed run wrote new ones and kept these for good, each model-sized.
    _run_killed_at(monkeypatch, tmp_path, "kd/kd", 1, committed=True)
    files = RunLayout(tmp_path)
    checkpoints = files.stage("kd/kd").checkpoints
    litter = [files.root / "kd" / ".tmp-0123abcd-student.keras",
              files.root / ".tmp-89abcdef-student_saved_model" / "saved_model.pb",
              checkpoints / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate7",
              checkpoints / f"checkpoint.tmp{'0' * 32}"]  # fmt: skip
    for path in litter:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    experiment.run(RUN, tmp_path, log=lambda m: None)
    assert not [p for p in litter if p.exists()]
    assert not (checkpoints / "ckpt-2_temp").exists()
    assert not (files.root / ".tmp-89abcdef-student_saved_model").exists()
    _assert_same_outcome(tmp_path, reference_run)


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, monkeypatch, capsys, reference_run
):
    _run_killed_at(monkeypatch, tmp_path, "stagewise_labels/kd", 2, committed=True)
    damaged = RunLayout(tmp_path).stage("stagewise_labels/kd").checkpoints / "ckpt-2.index"
    os.truncate(damaged, damaged.stat().st_size // 2)
    capsys.readouterr()
    logs = []
    experiment.run(RUN, tmp_path, log=logs.append)
    warnings = capsys.readouterr().err
    assert f"The checkpoint file {damaged} is damaged" in warnings
    assert "Stage stagewise_labels/kd resumes from checkpoint ckpt-1 (1 epochs done)" in warnings
    assert "ckpt-1 (stage stagewise_labels/kd, 1 epochs done)" in "\n".join(logs)
    _assert_same_outcome(tmp_path, reference_run)


def test_a_damaged_run_state_falls_back_to_the_previous_one(
    tmp_path, monkeypatch, capsys, reference_run
):
    _run_killed_at(monkeypatch, tmp_path, "kd/kd", 1, committed=True)
    files = RunLayout(tmp_path)
    text = files.run_state.read_text()
    files.run_state.write_text(text.replace('"epochs_done": 1', '"epochs_done": 7'))  # parses
    capsys.readouterr()
    logs = []
    experiment.run(RUN, tmp_path, log=logs.append)
    warnings = capsys.readouterr().err
    assert f"The run state {files.run_state} is damaged" in warnings
    assert "content does not match its sha256" in warnings
    assert f"Resuming from the previous run state {files.run_state_previous}" in warnings
    # The previous state is the one before kd/kd's first epoch: that epoch is trained again.
    assert not any("stage kd/kd" in m for m in logs if m.startswith("resuming from"))
    _assert_same_outcome(tmp_path, reference_run)


def test_no_readable_run_state_starts_over(tmp_path):
    state = resume.RunState(tmp_path, {"seed": 0}, warn=lambda m: None)
    state.stage("teacher")["epochs_done"] = 1
    state.save()
    state.stage("teacher")["epochs_done"] = 2
    state.save()
    files = RunLayout(tmp_path)
    assert json.loads(files.run_state_previous.read_text())["stages"]["teacher"]["epochs_done"] == 1
    files.run_state.write_text(files.run_state.read_text()[:40])  # truncated
    warnings = []
    state = resume.RunState(tmp_path, {"seed": 0}, warn=warnings.append)
    assert state.stage("teacher")["epochs_done"] == 1 and len(warnings) == 2
    files.run_state_previous.write_bytes(b"\x00" * 16)
    warnings.clear()
    fresh = resume.RunState(tmp_path, {"seed": 0}, warn=warnings.append)
    assert not fresh.resuming and len(warnings) == 3 and "every stage starts over" in warnings[-1]


def test_early_stopping_that_ended_a_stage_still_ends_it_after_a_kill(tmp_path):
    # Stops after epoch 2 (no improvement by 10) and keeps epoch 1's weights. Killed after
    # epoch 2's run state, the stage must not train on: it only restores the best weights.
    datasets = data.load("synthetic", batch_size=64, limit=128)

    def stage(workdir, kill=False):
        model = dropout_model()
        state = resume.RunState(workdir, {})
        es = keras.callbacks.EarlyStopping(monitor="loss", min_delta=10, patience=1,
                                           restore_best_weights=True)  # fmt: skip
        checkpoint = resume.StageCheckpoint(state, "teacher", workdir, student=model,
                                            early_stopping=es, log=lambda m: None)  # fmt: skip
        callbacks = [datasets.epoch_callback(), es, checkpoint]
        stages.fit_labels(model, datasets.train, epochs=5, verbose=0,
                          initial_epoch=state.initial_epoch("teacher"),
                          hparams=stages.Hyperparameters(learning_rate=1e-3),
                          callbacks=callbacks + ([KilledAfterEpoch(2)] if kill else []))  # fmt: skip
        return model, state

    straight, _ = stage(tmp_path / "a")
    with pytest.raises(Killed):
        stage(tmp_path / "b", kill=True)
    assert resume.RunState(tmp_path / "b", {}).initial_epoch("teacher") == 5
    resumed, state = stage(tmp_path / "b")
    assert state.stage("teacher")["epochs_done"] == 2 and state.done("teacher")
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 4
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_later_stage_continues_the_dropout_seeds_of_the_stage_before(tmp_path):
    model = dropout_model()
    state = resume.RunState(tmp_path, {})
    datasets = data.load("synthetic", batch_size=64, limit=128)
    checkpoint = resume.StageCheckpoint(state, "m/one", tmp_path, student=model, log=lambda m: None)
    stages.fit_labels(model, datasets.train, epochs=1, verbose=0, callbacks=[checkpoint],
                      hparams=stages.Hyperparameters(learning_rate=1e-3))  # fmt: skip
    states = resume.seed_states(model)
    assert len(states) == 2 and states != resume.seed_states(dropout_model())  # dropout drew
    fresh = dropout_model()
    recorded = resume.RunState(tmp_path, {}).stage("m/one")["seed_states"]
    resume.restore_seed_states(fresh, recorded)
    assert resume.seed_states(fresh) == states


# ----------------------------------------------- stage 2 starts from stage 1's best epoch

# The paper's code saves stage 1's best model by its validation hint cost (pylearn2's
# MonitorBasedSaveBest) and loads that file into the student before stage 2: so does a run
# with --early_stopping_patience, through a kill too. Stage 1 here runs 3 epochs, judged by a
# validation score that worsens every epoch: its best epoch is its first, never its last.
BEST_FIRST = RUN.with_values(modes=("fitnet",), teacher_epochs=1, hints_epochs=3, kd_epochs=1,
                             early_stopping_patience=5)  # fmt: skip


class WorseningHints(EarlyStopping):
    """The run's early stopping, stage 1 judged by a score that grows with the epoch."""

    @classmethod
    def for_stage(cls, stage, patience):
        if not stage.endswith("/hints"):
            return EarlyStopping.for_stage(stage, patience)
        return cls(monitor="val_worse", mode="min", patience=patience, restore_best_weights=True)

    def on_epoch_end(self, epoch, logs=None):
        logs["val_worse"] = float(epoch)
        super().on_epoch_end(epoch, logs)


def _run_recording(patch, workdir, record, kill_at_stage_two=False):
    """Runs BEST_FIRST, recording the student's weights after each stage-1 epoch and when
    stage 2 begins (``kill_at_stage_two``: then dies there, at the stage boundary)."""
    fit_hints, fit_kd = stages.fit_hints, stages.fit_kd

    class EpochWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record[f"epoch {epoch + 1}"] = self.model.student.get_weights()

    def hints(distiller, *args, callbacks=(), **kwargs):
        return fit_hints(distiller, *args, callbacks=[*callbacks, EpochWeights()], **kwargs)

    def kd(distiller, *args, **kwargs):
        record["stage 2 starts"] = distiller.student.get_weights()
        if kill_at_stage_two:
            raise Killed
        return fit_kd(distiller, *args, **kwargs)

    patch.setattr(experiment, "EarlyStopping", WorseningHints)
    patch.setattr(stages, "fit_hints", hints)
    patch.setattr(stages, "fit_kd", kd)
    experiment.run(BEST_FIRST, workdir, log=lambda m: None)


def _same_weights(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def best_first_run(tmp_path_factory):
    record = {}
    with pytest.MonkeyPatch.context() as patch:
        _run_recording(patch, tmp_path_factory.mktemp("best_first"), record)
    return record


def test_stage_two_starts_from_stage_ones_best_epoch_not_its_last(best_first_run):
    assert _same_weights(best_first_run["stage 2 starts"], best_first_run["epoch 1"])
    assert not _same_weights(best_first_run["epoch 1"], best_first_run["epoch 3"])


@pytest.mark.slow  # kill and resume at more points: the slow suite's
def test_a_run_killed_after_stage_ones_best_epoch_still_starts_stage_two_from_it(
    tmp_path, monkeypatch, best_first_run
):
    # Killed once epoch 2 is committed: the resumed stage trains epoch 3 alone, and the best
    # weights it restores at its end come from the checkpoint's early-stopping state.
    save = resume.RunState.save

    def save_then_die(state):
        save(state)
        if state.data["stages"].get("fitnet/hints", {}).get("epochs_done") == 2:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(resume.RunState, "save", save_then_die)
        with pytest.raises(Killed):
            _run_recording(patch, tmp_path, {})
    record = {}
    with monkeypatch.context() as patch:
        _run_recording(patch, tmp_path, record)
    assert "epoch 1" not in record and _same_weights(record["epoch 3"], best_first_run["epoch 3"])
    assert _same_weights(record["stage 2 starts"], best_first_run["epoch 1"])


@pytest.mark.slow  # kill and resume at more points: the slow suite's
def test_a_run_killed_at_the_stage_boundary_starts_stage_two_from_stage_ones_best_epoch(
    tmp_path, monkeypatch, best_first_run
):
    # Stage 1 done, its student file written; the resumed run trains no stage-1 epoch and
    # starts stage 2 from that file.
    with monkeypatch.context() as patch, pytest.raises(Killed):
        _run_recording(patch, tmp_path, {}, kill_at_stage_two=True)
    record = {}
    with monkeypatch.context() as patch:
        _run_recording(patch, tmp_path, record)
    assert not any(key.startswith("epoch") for key in record)
    assert _same_weights(record["stage 2 starts"], best_first_run["epoch 1"])


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
    assert set(result["failures"].values()) == {"DiskFullError"}, result  # every write failed
    assert result["model_intact"] and result["checkpoint_intact"]
    assert result["latest"] == "ckpt-1" and result["state_epochs"] == 1
    # TensorFlow's half-written ckpt-2_temp/ too: it stayed on the disk the user had to free.
    assert result["litter"] == []


def test_a_full_disk_while_training_is_named_with_what_to_do(tmp_path):
    # A checkpoint that found no room raised TensorFlow's ResourceExhaustedError through the
    # CLI: a traceback, saying neither what was kept nor that the same command resumes.
    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))

    cmd, env = _cli(tmp_path)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=small_files)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (f"The run directory {str(tmp_path)!r} has no room left (the file size limit is "
            "exceeded)") in proc.stderr and "run the same command again" in proc.stderr  # fmt: skip
    # TensorFlow's half-written checkpoint is removed at once, not left on the full disk.
    assert list(tmp_path.rglob("*_temp")) == []


def test_a_disk_full_before_training_names_the_run_directory(tmp_path):
    # flags.txt, the run's first file: a traceback for EFBIG, and for ENOSPC "Cannot write: the
    # disk is full. Free space there, then re-run." (no file, no directory named).
    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (500, hard))  # flags.txt is about 1 kB

    cmd, env = _cli(tmp_path)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=small_files)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (f"The run directory {str(tmp_path)!r} has no room left (the file size limit is "
            "exceeded): the run stopped") in proc.stderr  # fmt: skip


def _sha256_of_files(root: pathlib.Path, pattern: str) -> dict:
    return {str(p.relative_to(root)): io.file_sha256(p)
            for p in sorted(root.rglob(pattern)) if p.is_file()}  # fmt: skip


@pytest.mark.slow  # a training run in a subprocess, run twice, ~26 s
def test_a_full_disk_at_the_final_saved_model_is_written_by_the_same_command(tmp_path):
    # The export's message said to "choose another --output, then export again": a training
    # run writes its SavedModel in its run directory, and running it again writes it.
    cmd, env = _cli(tmp_path, "--mode=kd", "--teacher_epochs=1", "--kd_epochs=1")
    script = pathlib.Path(__file__).parent / "full_disk_final_student_check.py"
    proc = subprocess.run([sys.executable, str(script), *cmd[3:]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (f"The run directory {str(tmp_path)!r} has no room left (the file size limit is "
            "exceeded) for the student's SavedModel student_saved_model/: training is finished, "
            "and the trained student (student.keras), the checkpoints") in proc.stderr  # fmt: skip
    assert "run the same training command again" in proc.stderr
    assert "export again" not in proc.stderr
    files = RunLayout(tmp_path)
    assert files.student.is_file() and not files.student_saved_model.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".student")] == []
    checkpoints = _sha256_of_files(tmp_path, "checkpoints/*")
    student = [w.numpy() for w in io.load_model(files.student).weights]

    again = _run(tmp_path, "--mode=kd", "--teacher_epochs=1", "--kd_epochs=1")
    assert "== teacher" not in again.stdout and "== student" not in again.stdout  # nothing trained
    assert (files.student_saved_model / "saved_model.pb").is_file() and files.summary.is_file()
    assert _sha256_of_files(tmp_path, "checkpoints/*") == checkpoints
    for a, b in zip(io.load_model(files.student).weights, student, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)
