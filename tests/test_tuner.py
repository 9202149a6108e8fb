"""The λ/τ search: search space, trials (student-only checkpoints, NaN, seed, dtype policy),
and the CLI on configs/tune_smoke.flags (outputs, resume, interruption, refusals, chief/workers).
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import types

import h5py
import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from conftest import cli_run_once, tiny_data, tiny_dataset, tiny_model

from fitnets_tf import config as config_lib
from fitnets_tf import errors, losses, models, search, stages
from fitnets_tf.cli import flags as flag_lib
from fitnets_tf.cli import tune  # defines the flags
from fitnets_tf.data import get_spec
from fitnets_tf.distiller import Distiller
from fitnets_tf.run import ownership
from fitnets_tf.search import tuners

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/tune_smoke.flags"
PAPER = stages.Hyperparameters()  # λ0 = 4, τ = 3


# -- search space and oracles (no training) ------------------------------------------------------


def test_search_space_is_named_after_train_flags_and_defaults_to_the_base_values():
    space = search.SearchSpace()
    assert space.names() == ("kd_lambda", "temperature")
    hp = keras_tuner.HyperParameters()
    hparams = space.hyperparameters(hp, PAPER)
    assert hparams == PAPER  # the first values are the defaults: the paper's λ0 = 4, τ = 3
    assert {p.name: p.default for p in hp.space} == {"kd_lambda": 4.0, "temperature": 3.0}
    hp.values.update(kd_lambda=8.0, temperature=2.0)
    assert space.hyperparameters(hp, PAPER).lambda_start == 8.0

    full = search.SearchSpace.with_optional(["lambda_end", "learning_rate", "tau_squared"])
    assert full.names() == (
        "kd_lambda",
        "temperature",
        "lambda_end",
        "learning_rate",
        "tau_squared",
    )
    described = full.describe(PAPER)
    assert (
        described["lambda_end"]["sampling"] == "linear"
        and described["kd_lambda"]["sampling"] == "log"
    )
    assert described["tau_squared"] == {"type": "bool", "default": False}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: search.SearchSpace(kd_lambda=(4.0, 1.0)), r"Received: kd_lambda=\(4.0, 1.0\)"),
        (lambda: search.SearchSpace(temperature=(0.0, 3.0)), "temperature"),
        (lambda: search.SearchSpace.with_optional(["momentum"]), "Unknown optional.*momentum"),
        (lambda: search.SearchSpace(kd_lambda=(8.0, 16.0)).describe(PAPER),
         "base hparams.lambda_start=4.0, outside the searched range.*widen `space.kd_lambda`"),
        (lambda: search.SearchSpace(kd_lambda=(8.0, 16.0)).describe(PAPER, as_flags=True),
         "base kd_lambda=4.0, outside the searched range.*widen --kd_lambda_range"),
        # Was told to widen the range, which a log scale cannot take down to 0.
        (lambda: search.SearchSpace().describe(stages.Hyperparameters(lambda_start=0.0)),
         r"base hparams.lambda_start=0.0, outside .* on a log scale, above 0: change "
         r"`hparams.lambda_start`\.$"),
        (lambda: search.SearchSpace().describe(stages.Hyperparameters(lambda_start=0.0),
                                               as_flags=True),
         r"base kd_lambda=0.0, outside .* on a log scale, above 0: change --kd_lambda\.$"),
        # Was silently searched over 0.5..inf: log sampling then draws inf or NaN.
        (lambda: search.SearchSpace(kd_lambda=(0.5, float("inf"))), "finite"),
        # Was dropped without a word: a range given for a hyperparameter not searched.
        (lambda: search.SearchSpace.with_optional([], lambda_end=(0.0, 2.0)),
         "lambda_end is not searched.*with_optional"),
    ],
)  # fmt: skip
def test_bad_search_space_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_every_oracle_runs_the_defaults_first(kind, tmp_path):
    oracle = {"random": search.RandomOracle, "bayesian": search.BayesianOracle,
              "hyperband": search.HyperbandOracle}[kind]  # fmt: skip
    kwargs = {"max_epochs": 3} if kind == "hyperband" else {"max_trials": 3}
    oracle = oracle(objective=keras_tuner.Objective("val_accuracy", "max"), seed=1, **kwargs)
    oracle._set_project_dir(str(tmp_path), "p")
    hp = keras_tuner.HyperParameters()
    search.SearchSpace().hyperparameters(hp, PAPER)
    oracle.update_space(hp)
    first = oracle.create_trial("tuner0")
    assert {k: first.hyperparameters.values[k] for k in ("kd_lambda", "temperature")} == {
        "kd_lambda": 4.0, "temperature": 3.0}  # fmt: skip
    oracle.update_trial(first.trial_id, {"val_accuracy": 0.5})
    first.status = "COMPLETED"
    oracle.end_trial(first)
    second = oracle.create_trial("tuner0")
    assert second.hyperparameters.values["kd_lambda"] != 4.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # keras-tuner reads max_trials=0 as "no limit": the notebook's search never ended.
        ({"max_trials": 0}, "`max_trials` must be an integer >= 1. Received: max_trials=0"),
        ({"max_trials": 2.5}, "`max_trials` must be an integer >= 1"),
        ({"oracle": "hyperband", "trial_epochs": 0}, "`trial_epochs` must be an integer >= 1"),
    ],
)
def test_make_tuner_refuses_a_search_of_no_trials_or_epochs(kwargs, message, teacher_path):
    hypermodel = _hypermodel(teacher_path)
    directory = teacher_path.parent / "search"
    with pytest.raises(ValueError, match=message):
        search.make_tuner(hypermodel, directory=directory, **kwargs)
    assert not directory.exists()


def test_results_are_in_trial_order_when_a_search_is_resumed_with_more_trials():
    # keras-tuner pads ids to the digits of --max_trials: 8 trials then 4 more are "0".."7",
    # "08".."11"; the rows came in text order ("0", "08", "09", "1", "10", ...).
    ids = [str(i) for i in range(8)] + [f"{i:02d}" for i in range(8, 12)]
    hp = types.SimpleNamespace(values={"kd_lambda": 4.0, "temperature": 3.0})
    oracle = types.SimpleNamespace(
        trials={i: types.SimpleNamespace(trial_id=i, status="FAILED", hyperparameters=hp)
                for i in reversed(ids)},
        hyperparameters=types.SimpleNamespace(space=[]),
    )  # fmt: skip
    assert [r["trial_id"] for r in search.trial_rows(oracle, search.SearchSpace(), 1)] == ids


def test_best_epoch_counts_the_epochs_a_hyperband_trial_continues(tmp_path):
    # keras-tuner's best_step indexes the epochs of the trial's own run: a trial continuing
    # another from epoch 1, best at the second epoch it ran, is best at epoch 3 (it said 2).
    def trial(trial_id, **tuner):
        hp = types.SimpleNamespace(values={"kd_lambda": 2.0, "temperature": 3.0, **tuner})
        return types.SimpleNamespace(
            trial_id=trial_id,
            status="COMPLETED",
            score=0.8125,
            best_step=1,
            hyperparameters=hp,
            metrics=types.SimpleNamespace(exists=lambda name: False),
        )

    oracle = types.SimpleNamespace(
        trials={"0": trial("0", **{"tuner/epochs": 3, "tuner/initial_epoch": 0}),
                "1": trial("1", **{"tuner/epochs": 3, "tuner/initial_epoch": 1}),
                "2": trial("2")},  # a random or Bayesian search's: no tuner/ values
        hyperparameters=types.SimpleNamespace(space=[]),
    )  # fmt: skip
    rows = search.trial_rows(oracle, search.SearchSpace(), 4)
    assert [(r["best_epoch"], r["epochs"]) for r in rows] == [(2, 3), (3, 3), (2, 4)]
    text = tune.best_flagfile(config_lib.ExperimentConfig(), rows[1], "t.keras", tmp_path, "best")
    header = text.splitlines()[0]
    assert header.endswith("trial 1, validation accuracy 0.8125 after 3 of 3 epoch(s).")


def test_hyperband_results_say_how_many_epochs_each_trial_had():
    # Hyperband gives trials 1 to --trial_epochs epochs: the table showed a trial and its
    # 3-epoch continuation alike, and the closing line set a 3-epoch best against the
    # defaults' single epoch without a word (smoke search, --oracle=hyperband --trial_epochs=3).
    def row(trial_id, acc, epochs, defaults=False):
        return {"trial_id": trial_id, "status": "COMPLETED", "kd_lambda": 4.0 if defaults else 1.14,
                "temperature": 3.0 if defaults else 1.72, "defaults": defaults,
                "val_accuracy": acc, "epochs": epochs}  # fmt: skip

    rows = [row("0", 0.125, 1, defaults=True), row("2", 0.1406, 1), row("3", 0.8125, 3)]
    lines = search.table(rows).splitlines()
    assert lines[0].split() == ["trial", "kd_lambda", "temperature", "epochs", "val", "acc",
                                "status"]  # fmt: skip
    assert lines[2].split()[:5] == ["3", "1.14", "1.72", "3", "0.8125"]
    closing = tune._closing_line({"best": rows[2], "defaults": rows[0]})
    assert "val_accuracy=0.8125 after 3 epoch(s)" in closing
    assert "temperature=3: 0.1250 after 1 epoch(s)" in closing
    same = [row("0", 0.125, 2, defaults=True), row("1", 0.5, 2)]  # random, Bayesian: as before
    assert "epochs" not in search.table(same).splitlines()[0]
    assert "epoch(s)" not in tune._closing_line({"best": same[1], "defaults": same[0]})


def test_a_tie_keeps_the_defaults_as_the_best_trial(tmp_path):
    # A search whose trials all score alike (e.g. at chance) must not put another trial's
    # values in best.flags: only a trial that beats the defaults replaces them. A reloaded
    # oracle's trials come in no fixed order; before, the first one found won the tie.
    oracle = search.RandomOracle(objective=keras_tuner.Objective("val_accuracy", "max"), seed=1,
                                 max_trials=3)  # fmt: skip
    oracle._set_project_dir(str(tmp_path), "p")
    hp = keras_tuner.HyperParameters()
    search.SearchSpace().hyperparameters(hp, PAPER)
    oracle.update_space(hp)
    for _ in range(3):
        trial = oracle.create_trial("tuner0")
        oracle.update_trial(trial.trial_id, {"val_accuracy": 0.14})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    defaults = next(iter(oracle.trials))
    oracle.trials = dict(reversed(list(oracle.trials.items())))  # as a reload may order them
    assert search.best_trial(oracle).trial_id == defaults
    later = sorted(oracle.trials)[1:]
    oracle.trials = {k: oracle.trials[k] for k in reversed(later)}  # no defaults: the earliest
    assert search.best_trial(oracle).trial_id == later[0]


def _watched_oracle(tmp_path, alive: dict, timeout_s: float = 0.0):
    oracle = search.RandomOracle(objective=keras_tuner.Objective("val_accuracy", "max"), seed=1,
                                 max_trials=2, max_retries_per_trial=1, worker_alive=alive.get,
                                 trial_timeout_s=timeout_s)  # fmt: skip
    oracle._set_project_dir(str(tmp_path), "p")
    hp = keras_tuner.HyperParameters()
    search.SearchSpace().hyperparameters(hp, PAPER)
    oracle.update_space(hp)
    return oracle


def _complete(oracle, trial):
    """What a worker reports: its own copy of the trial (it came over gRPC)."""
    oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
    report = keras_tuner.engine.trial.Trial.from_state(trial.get_state())
    report.status = "COMPLETED"
    oracle.end_trial(report)


def _status_on_disk(tmp_path, trial) -> str:
    return json.loads((tmp_path / "p" / f"trial_{trial.trial_id}" / "trial.json").read_text())[
        "status"
    ]


def test_the_trial_of_a_dead_worker_runs_again_and_the_search_ends(tmp_path):
    alive = {"a": True, "b": True}
    oracle = _watched_oracle(tmp_path, alive)
    first, second = oracle.create_trial("a"), oracle.create_trial("b")
    _complete(oracle, first)
    assert oracle.create_trial("a").status == "IDLE"  # no trial left, but b's may come back
    assert oracle.release_abandoned() == []
    alive["b"] = False  # killed mid-trial: its lock is free
    assert oracle.release_abandoned() == [
        f"Trial {second.trial_id}: its worker 'b' is gone; queued to run again."
    ]
    assert oracle.ongoing_trials == {} and oracle.tuner_ids == {"a"}
    again = oracle.create_trial("a")
    assert (again.trial_id, again.status) == (second.trial_id, "RUNNING")
    _complete(oracle, again)
    assert oracle.create_trial("a").status == "STOPPED"
    assert oracle.ongoing_trials == {} and oracle.tuner_ids == set()  # the chief may stop
    assert [_status_on_disk(tmp_path, t) for t in (first, second)] == ["COMPLETED", "COMPLETED"]


def test_a_trial_whose_worker_dies_twice_fails(tmp_path):
    alive = {"a": True, "b": True, "c": True}
    oracle = _watched_oracle(tmp_path, alive)
    _complete(oracle, oracle.create_trial("a"))
    second = oracle.create_trial("b")
    alive["b"] = False
    oracle.release_abandoned()
    assert oracle.create_trial("c").trial_id == second.trial_id
    alive["c"] = False
    assert oracle.release_abandoned() == [
        f"Trial {second.trial_id}: its worker 'c' is gone; failed."
    ]
    assert oracle.create_trial("a").status == "STOPPED" and oracle.tuner_ids == set()
    assert _status_on_disk(tmp_path, second) == "FAILED"


def test_an_overdue_trial_fails_and_its_late_report_is_ignored(tmp_path):
    oracle = _watched_oracle(tmp_path, {}, timeout_s=0.05)  # no locks: the timeout alone
    first = oracle.create_trial("a")
    time.sleep(0.1)
    (line,) = oracle.release_abandoned()
    assert line.startswith(f"Trial {first.trial_id}: it ran ") and line.endswith("; failed.")
    _complete(oracle, first)  # the worker was alive after all, and reports
    assert oracle.trials[first.trial_id].status == "FAILED"
    assert not oracle.trials[first.trial_id].metrics.exists("val_accuracy")
    assert _status_on_disk(tmp_path, first) == "FAILED"


def _failed(oracle, message):
    trial = oracle.create_trial("a")
    trial.status, trial.message = "FAILED", message
    oracle.end_trial(trial)
    return trial


def test_results_say_why_each_trial_failed(tmp_path):
    # results.csv and the printed table said FAILED and nothing more: the reason was only in
    # keras-tuner's trial.json (a whole traceback) and the console of the run.
    oracle = _watched_oracle(tmp_path, {})
    oracle.max_trials = 3
    _complete(oracle, oracle.create_trial("a"))
    try:
        raise keras_tuner.errors.FailedTrialError(
            "Non-finite loss term loss (nan) in stage 'trial', epoch 1, step 3.\nThe student "
            "diverged."
        )
    except keras_tuner.errors.FailedTrialError:
        _failed(oracle, traceback.format_exc())  # what keras-tuner stores
    _failed(oracle, "Given up by the chief: its worker 'b' is gone.")
    rows = search.trial_rows(oracle, search.SearchSpace(), 1)
    assert [r["reason"] for r in rows] == [
        None,
        "Non-finite loss term loss (nan) in stage 'trial', epoch 1, step 3. The student diverged.",
        "Given up by the chief: its worker 'b' is gone.",
    ]
    options = search.TuneOptions(max_trials=3, trial_epochs=1)
    search.write_results(oracle, options, tmp_path)
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["reason"] for r in table] == ["", rows[1]["reason"], rows[2]["reason"]]
    printed = search.table(rows).splitlines()
    assert printed[0].split()[-1] == "reason"
    assert printed[-1].split("FAILED")[1].strip() == rows[2]["reason"]


def test_a_failure_reason_is_one_short_line():
    assert search.failure_reason(None) is None and search.failure_reason("") is None
    try:
        raise ValueError("No teacher at 'x.keras'.\n  Give one.")
    except ValueError:
        assert search.failure_reason(traceback.format_exc()) == (
            "ValueError: No teacher at 'x.keras'. Give one."
        )
    long = search.failure_reason("word " * 100)
    assert len(long) == 200 and long.endswith("…")


def test_a_changed_search_is_refused_naming_the_differences(tmp_path):
    config = config_lib.ExperimentConfig().with_values(dataset="synthetic")
    options = search.TuneOptions()
    search.check_search(tmp_path, search.describe(config, options))
    # Free to change: the number of trials, the full run's length, where data lives.
    more = search.TuneOptions(max_trials=20)
    search.check_search(tmp_path, search.describe(config.with_values(kd_epochs=99), more))
    changed = search.TuneOptions(space=search.SearchSpace(temperature=(1.0, 8.0)), trial_epochs=5)
    with pytest.raises(search.SearchError) as info:
        search.check_search(tmp_path, search.describe(config.with_values(seed=1), changed))
    message = str(info.value)
    for part in ("space.temperature.max: 10.0 → 8.0", "trial_epochs: 3 → 5", "config.seed: 0 → 1",
                 "new --workdir"):  # fmt: skip
        assert part in message


@pytest.mark.parametrize("name", ["tune_smoke", "tune_fashion_mnist"])
def test_tune_configs_parse_validate_and_start_at_the_paper_values(name):
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["tune", f"--flagfile={os.path.join(ROOT, 'configs', name + '.flags')}"])
        config, options = flag_lib.config_from_flags(), tune.options_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    config.validate()
    options.validate()
    description = search.describe(config, options)  # raises if a default is outside its range
    assert description["space"]["kd_lambda"]["default"] == 4.0
    assert description["space"]["temperature"]["default"] == 3.0
    assert options.max_trials >= 2 and config.schedule.modes[0] == "fitnet"
    spec = get_spec(config.data.dataset)
    teacher = models.build(config.models.teacher, spec.input_shape, spec.num_classes)
    student = models.build(config.models.student, spec.input_shape, spec.num_classes)
    Distiller(teacher, student, *config.pair())  # the pair fits


# -- trials in process, tiny models ----------------------------------------------------------------


@pytest.fixture
def teacher_path(teacher, tmp_path):
    path = tmp_path / "teacher.keras"
    teacher.save(path)
    return path


def _hypermodel(teacher_path, cls=search.FitNetsHyperModel, **kwargs):
    return cls(teacher_path, lambda: tiny_model("student", width=4, seed=1),
               hparams=stages.Hyperparameters(learning_rate=1e-3), **kwargs)  # fmt: skip


def _search(hypermodel, directory, trials=2, validation=None, **search_kwargs):
    t = search.make_tuner(hypermodel, max_trials=trials, trial_epochs=1, directory=directory)
    t.search(tiny_dataset(), validation or tiny_dataset(), epochs=1, verbose=0, **search_kwargs)
    return t


def _arrays(path) -> list[str]:
    names = []
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
        )
    return names


def test_trial_checkpoints_hold_the_student_alone(teacher_path, tmp_path):
    t = _search(_hypermodel(teacher_path), tmp_path / "search")
    student = tiny_model("student", width=4, seed=1)
    for trial in t.oracle.trials.values():
        assert trial.status == "COMPLETED"
        path = os.path.join(t.get_trial_dir(trial.trial_id), "checkpoint.weights.h5")
        assert len(_arrays(path)) == len(student.weights)  # not the teacher's, nor the regressor's
        student.load_weights(path)
    best = t.load_model(search.best_trial(t.oracle))  # keras-tuner's reload path works too
    assert isinstance(best, Distiller)
    reloaded = tiny_model("student", width=4, seed=1)
    reloaded.load_weights(os.path.join(t.get_trial_dir(search.best_trial(t.oracle).trial_id),
                                       "checkpoint.weights.h5"))  # fmt: skip
    for a, b in zip(best.student.get_weights(), reloaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_retrain_hints_per_trial_runs_stage_one_inside_the_trial(teacher_path, tmp_path):
    hm = _hypermodel(teacher_path, hint_layer="conv2", guided_layer="conv2", hints_epochs=1)
    hp = keras_tuner.HyperParameters()
    hm.declare_hyperparameters(hp)
    model = hm.build(hp)
    regressor = [w.copy() for w in model.regressor.get_weights()]
    history = hm.fit(hp, model, tiny_dataset(), tiny_dataset(), epochs=1, verbose=0)
    assert "val_accuracy" in history.history and model.phase == "kd"
    assert any(not np.array_equal(a, b) for a, b in
               zip(regressor, model.regressor.get_weights(), strict=True))  # fmt: skip
    model.save_weights(tmp_path / "trial.weights.h5")  # still the student alone
    assert len(_arrays(tmp_path / "trial.weights.h5")) == len(model.student.weights)


def test_a_trial_trains_on_the_label_smoothing_of_the_search(teacher_path):
    # --label_smoothing reaches a trial through the search's base hyperparameters: its
    # Distiller's ce_loss is the smoothed cross-entropy of the student's logits.
    hm = search.FitNetsHyperModel(
        teacher_path, lambda: tiny_model("student", width=4, seed=1),
        hparams=stages.Hyperparameters(learning_rate=1e-3, label_smoothing=0.2),
    )  # fmt: skip
    hp = keras_tuner.HyperParameters()
    hm.declare_hyperparameters(hp)
    model = hm.build(hp)
    history = hm.fit(hp, model, tiny_dataset(), tiny_dataset(), epochs=1, verbose=0)
    x, y = tiny_data(32)
    logits = model.student(x, training=False)  # the weights the epoch's validation saw
    smoothed = float(np.mean(losses.cross_entropy(y, logits, 0.2)))
    assert model.label_smoothing == 0.2
    assert history.history["val_ce_loss"][0] == pytest.approx(smoothed, rel=1e-5)
    assert abs(smoothed - float(np.mean(losses.cross_entropy(y, logits)))) > 1e-4  # near-uniform


def test_retrain_hints_per_trial_trains_every_pair(teacher_path):
    hm = _hypermodel(teacher_path, hints=[("conv1", "conv1"), ("conv2", "conv2")],
                     hint_weights=[0.5, 1.0], hints_epochs=1)  # fmt: skip
    hp = keras_tuner.HyperParameters()
    hm.declare_hyperparameters(hp)
    model = hm.build(hp)
    assert model.hints == [("conv1", "conv1"), ("conv2", "conv2")]
    assert model.hint_weights == (0.5, 1.0) and len(model.more_regressors) == 1
    before = [r.get_weights() for r in (model.regressor, *model.more_regressors)]
    history = hm.fit(hp, model, tiny_dataset(), tiny_dataset(), epochs=1, verbose=0)
    assert "val_accuracy" in history.history and model.phase == "kd"
    for regressor, weights in zip((model.regressor, *model.more_regressors), before, strict=True):
        assert any(not np.array_equal(a, b) for a, b in
                   zip(weights, regressor.get_weights(), strict=True))  # fmt: skip


def test_retrain_hints_per_trial_needs_a_pair(teacher_path):
    with pytest.raises(ValueError, match="needs `hints` or `hint_layer` and `guided_layer`"):
        _hypermodel(teacher_path, hints_epochs=1)


def test_the_cli_retrains_every_pair_of_hints_per_trial(tmp_path):
    from fitnets_tf.search import session

    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["tune", f"--flagfile={os.path.join(ROOT, SMOKE)}", "--retrain_hints_per_trial",
                     "--hints=pool1:pool2,pool2:pool4", "--hint_weights=0.5,1"])  # fmt: skip
        config, options = flag_lib.config_from_flags(), tune.options_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    session._check_searchable(config, options)  # once refused: the trials retrained one pair
    spec = get_spec("synthetic")
    teacher = models.build("mnist_teacher", spec.input_shape, spec.num_classes)
    teacher.save(tmp_path / "teacher.keras")
    record = {"teacher_path": str(tmp_path / "teacher.keras"), "student_path": None}
    hm = session.hypermodel(config, options, record, (spec.input_shape, spec.num_classes))
    hp = keras_tuner.HyperParameters()
    hm.declare_hyperparameters(hp)
    model = hm.build(hp)
    assert model.hints == [("pool1", "pool2"), ("pool2", "pool4")]
    assert model.hint_weights == (0.5, 1.0) and hm.hints_epochs == 1


def test_hyperband_continues_a_trial_from_its_student_checkpoint(
    teacher_path, tmp_path, monkeypatch
):
    # With hints retrained per trial (--retrain_hints_per_trial), only a new trial trains
    # them: one that continues starts from a student whose hints are trained already.
    calls = []
    real = stages.fit_hints
    monkeypatch.setattr(stages, "fit_hints", lambda *a, **k: calls.append(1) or real(*a, **k))
    hm = _hypermodel(teacher_path, hint_layer="conv2", guided_layer="conv2", hints_epochs=1)
    t = search.make_tuner(hm, oracle="hyperband", max_trials=4, trial_epochs=3,
                          directory=tmp_path)  # fmt: skip
    t.search(tiny_dataset(), tiny_dataset(), epochs=3, verbose=0)
    trials = t.oracle.trials.values()
    assert all(tr.status == "COMPLETED" for tr in trials)
    continued = [tr for tr in trials if "tuner/trial_id" in tr.hyperparameters.values]
    assert continued  # a later round started from an earlier trial's (student-only) weights
    assert len(calls) == len(trials) - len(continued)
    rows = {r["trial_id"]: r for r in search.trial_rows(t.oracle, search.SearchSpace(), 3)}
    for tr in continued:
        # The epoch log.csv numbers (from 0), counted on from the trial it continues.
        with open(os.path.join(t.get_trial_dir(tr.trial_id), "log.csv")) as f:
            log = list(csv.DictReader(f))
        best = max(log, key=lambda epoch: float(epoch["val_accuracy"]))  # the first of equals
        assert int(log[0]["epoch"]) == tr.hyperparameters.values["tuner/initial_epoch"] > 0
        assert rows[tr.trial_id]["best_epoch"] == int(best["epoch"]) + 1


class _PoisonedUnlessDefault(search.FitNetsHyperModel):
    """NaN weights in every trial but the first (the defaults): a diverged student."""

    def build(self, hp):
        model = super().build(hp)
        if hp.get("temperature") != PAPER.temperature:
            kernel = model.student.get_layer("conv1").kernel
            kernel.assign(tf.fill(kernel.shape, float("nan")))
        return model


def test_a_nan_trial_is_failed_and_never_the_best(teacher_path, tmp_path):
    x = np.random.RandomState(0).rand(32, 8, 8, 1).astype("float32")
    # All labels 0: a NaN student predicts class 0 everywhere and would score 100 %.
    zeros = tf.data.Dataset.from_tensor_slices((x, np.zeros(32, "int32"))).batch(8)
    t = _search(_hypermodel(teacher_path, _PoisonedUnlessDefault), tmp_path / "s", trials=3,
                validation=zeros)  # fmt: skip
    statuses = [t.oracle.trials[i].status for i in sorted(t.oracle.trials)]
    assert statuses == ["COMPLETED", "FAILED", "FAILED"]
    assert "Non-finite loss" in t.oracle.trials["1"].message
    assert search.best_trial(t.oracle).trial_id == "0"
    rows = search.trial_rows(t.oracle, search.SearchSpace(), 1)
    assert [r["val_accuracy"] is None for r in rows] == [False, True, True]
    assert rows[1]["reason"].startswith("Non-finite loss term ce_loss (nan) in stage 'trial', "
                                        "epoch 1, step 1. The student diverged")  # fmt: skip
    assert rows[0]["val_accuracy"] < 1.0
    # What the failed trials would have reported without the check:
    hm = _hypermodel(teacher_path, _PoisonedUnlessDefault)
    hp = t.oracle.trials["1"].hyperparameters
    poisoned = hm.build(hp)
    poisoned.compile(phase="kd", metrics=["accuracy"])
    assert poisoned.evaluate(zeros, return_dict=True, verbose=0)["accuracy"] == 1.0


def test_a_search_stopped_by_failures_resumes_with_a_new_trial(tmp_path):
    # keras-tuner raises on the third failure in a row before writing that trial and
    # oracle.json: resumed, the trial was RUNNING there, ran again, failed again and stopped
    # the search again, whatever the re-run changed (--max_trials): it could never go on.
    oracle = _watched_oracle(tmp_path, {})
    oracle.max_trials = 5
    for n in range(3):
        trial = oracle.create_trial("tuner0")
        trial.status, trial.message = "FAILED", "diverged"
        if n < 2:
            oracle.end_trial(trial)
    with pytest.raises(RuntimeError, match="consecutive failures"):
        oracle.end_trial(trial)
    assert _status_on_disk(tmp_path, trial) == "FAILED"
    resumed = _watched_oracle(tmp_path, {})
    resumed.max_trials = 5
    resumed.reload()
    tuners.requeue_interrupted(resumed)  # as a resumed search does
    assert resumed.end_order == ["0", "1", "2"] and not resumed.ongoing_trials
    assert resumed.create_trial("tuner0").trial_id == "3"  # a new trial, not trial 2 again


def test_a_trial_killed_as_it_ended_is_not_run_again(tmp_path):
    # keras-tuner's end_trial writes trial.json (COMPLETED) and oracle.json before it lets the
    # trial go from its ongoing ones; the tuner writes oracle.json again just after. A kill -9
    # between the two left oracle.json naming the finished trial as running: the resumed
    # search handed it out again, trained it again and appended a second run to its metrics.
    oracle = _watched_oracle(tmp_path, {})
    trial = oracle.create_trial("tuner0")
    _complete(oracle, trial)
    state = oracle.get_state()
    state["ongoing_trials"] = {"tuner0": trial.trial_id}  # oracle.json as end_trial wrote it
    (tmp_path / "p" / "oracle.json").write_text(json.dumps(state))
    resumed = _watched_oracle(tmp_path, {})
    resumed.reload()
    tuners.requeue_interrupted(resumed)  # as a resumed search does
    assert resumed.trials[trial.trial_id].status == "COMPLETED" and not resumed.ongoing_trials
    nxt = resumed.create_trial("tuner0")
    assert nxt.trial_id == "1" and resumed.end_order == [trial.trial_id]


def test_a_search_without_validation_data_stops_before_training(teacher_path, tmp_path):
    # Was: every trial trained, failed with KeyError: 'val_accuracy' after its last epoch,
    # ran again and failed again; the search then returned as if done, every trial FAILED.
    t = search.make_tuner(_hypermodel(teacher_path), max_trials=2, trial_epochs=1,
                          directory=tmp_path / "s")  # fmt: skip
    with pytest.raises(keras_tuner.errors.FatalError, match="needs validation_data"):
        t.search(tiny_dataset(), epochs=1, verbose=0)
    assert not list((tmp_path / "s").rglob("log.csv"))  # no epoch was trained


def test_an_exploding_learning_rate_fails_the_trial(teacher_path):
    hm = search.FitNetsHyperModel(teacher_path, lambda: tiny_model("student", width=4, seed=1),
                                 hparams=stages.Hyperparameters(learning_rate=1e30))  # fmt: skip
    hp = keras_tuner.HyperParameters()
    hm.declare_hyperparameters(hp)
    # It ended "step 1. the student diverged.", saying nothing of what happens next.
    with pytest.raises(keras_tuner.errors.FailedTrialError,
                       match=r"step \d+\. The student diverged at this trial's values: the trial "
                             r"is recorded as FAILED and the search goes on"):  # fmt: skip
        hm.fit(hp, hm.build(hp), tiny_dataset(), tiny_dataset(), epochs=3, verbose=0)


class _Recording(search.FitNetsHyperModel):
    seen: list

    def fit(self, hp, model, *args, **kwargs):
        layer = model.student.get_layer("conv1")
        self.seen.append((layer.compute_dtype, layer.variable_dtype))
        return super().fit(hp, model, *args, **kwargs)


def _refusal(error, make) -> str:
    with pytest.raises(error) as info:
        make()
    message = str(info.value)
    assert "--" not in message, message  # the Python API's words, not the CLI's flags
    return message


def test_the_hypermodel_names_its_own_arguments_in_its_errors(teacher_path, tmp_path):
    # A Python user was told to "Pass --teacher_path=FILE.keras ... or add 'teacher' to
    # --stages", only when the first trial built its model; a missing .weights.h5 raised
    # h5py's FileNotFoundError; a base value outside its range said "widen --kd_lambda_range".
    def student():
        return tiny_model("student", width=4, seed=1)

    missing = tmp_path / "none.keras"
    message = _refusal(errors.TeacherLoadError,
                       lambda: search.FitNetsHyperModel(missing, student))  # fmt: skip
    assert f"No teacher at {str(missing)!r}" in message and "`teacher_path`" in message
    for name in ("none.keras", "none.weights.h5"):
        message = _refusal(errors.ModelFileError, lambda n=name: search.FitNetsHyperModel(
            teacher_path, student, tmp_path / n))  # fmt: skip
        assert f"{str(tmp_path / name)!r}" in message and "`student_weights`" in message
    message = _refusal(search.SearchError, lambda: search.FitNetsHyperModel(
        teacher_path, student, space=search.SearchSpace(kd_lambda=(8.0, 16.0))))  # fmt: skip
    assert message == ("The first trial uses the base hparams.lambda_start=4.0, outside the "
                       "searched range space.kd_lambda=(8.0, 16.0): widen `space.kd_lambda` to "
                       "include it, or change `hparams.lambda_start`.")  # fmt: skip
    # The CLI keeps its flags' words for the same check.
    config = config_lib.ExperimentConfig()
    narrow = search.TuneOptions(space=search.SearchSpace(kd_lambda=(8.0, 16.0)))
    with pytest.raises(search.SearchError, match="widen --kd_lambda_range to include it, or "
                                                 "change --kd_lambda"):  # fmt: skip
        search.describe(config, narrow)


def test_a_resumed_search_whose_teacher_is_gone_says_so_in_flags(tmp_path):
    # The CLI builds the HyperModel from stage1.json: it said "`teacher_path`" to a CLI user.
    (tmp_path / "stage1.json").write_text(json.dumps(
        {"teacher_path": str(tmp_path / "gone.keras"), "student_path": None, "holdout": None}))
    config = config_lib.ExperimentConfig()
    with pytest.raises(search.SearchError) as info:
        search.stage_one(config, search.TuneOptions(), tmp_path)
    message = str(info.value)
    assert "The search's teacher" in message and "gone.keras" in message
    assert "new --workdir" in message and "`" not in message


def test_a_full_disk_stops_the_search_clearly_and_it_resumes(tmp_path):
    script = os.path.join(ROOT, "tests", "full_disk_search_check.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # A trial's checkpoint: the search stops (not "trial failed", then the next), the trial is
    # still RUNNING, and no half checkpoint is left. tune() words it as a DiskFullError.
    assert result["trial_error"] == ["FatalError", "the file size limit is exceeded"]
    assert result["trial_status"] == "RUNNING" and not result["checkpoint"]
    # The oracle's file: the write fails, the previous oracle.json stays whole.
    assert result["oracle_error"] == ["OSError", "the file size limit is exceeded"]
    assert result["oracle_intact"] and result["litter"] == []
    assert result["resumed"] == {"0": "COMPLETED", "1": "COMPLETED"}


def test_seed_and_dtype_policy_hold_in_every_trial(teacher_path, tmp_path):
    scores = []
    for run in ("a", "b"):
        hm = _hypermodel(teacher_path, _Recording, dtype_policy="mixed_float16", seed=7)
        hm.seen = []
        t = _search(hm, tmp_path / run, trials=2)
        # keras-tuner clears the session (which resets the policy to float32) before each trial.
        assert hm.seen == [("float16", "float32")] * 2
        trials = [t.oracle.trials[i] for i in sorted(t.oracle.trials)]
        assert all(tr.status == "COMPLETED" for tr in trials)
        scores.append([(tr.hyperparameters.values, tr.score,
                        tr.metrics.get_best_value("val_loss")) for tr in trials])  # fmt: skip
    assert scores[0] == scores[1]  # same seed: same trials, same numbers


# -- the CLI ---------------------------------------------------------------------------------------


def _env(**extra):
    return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **extra)


def _tune(*args, timeout=240, **env):
    return subprocess.run(
        [sys.executable, "-m", "fitnets_tf.tune", f"--flagfile={SMOKE}", *args],
        cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _runs(workdir, trial_id):
    path = workdir / "trials" / f"trial_{trial_id}" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return cli_run_once(tmp_path_factory, "tune-smoke",
                        lambda workdir: _tune(f"--workdir={workdir}"))  # fmt: skip


def _copy(smoke, tmp_path, with_trials=True):
    workdir, _ = smoke
    ignore = None if with_trials else shutil.ignore_patterns("trials", "results.*", "summary.json")
    shutil.copytree(workdir, tmp_path / "run", ignore=ignore)
    return tmp_path / "run"


def test_smoke_search_writes_trials_results_plot_and_best_flags(smoke):
    workdir, proc = smoke
    for path in ["flags.txt", "search.json", "stage1.json", "stage1/teacher/teacher.keras",
                 "stage1/fitnet/hints/student.keras", "trials/oracle.json", "results.csv",
                 "results.png", "summary.json", "best.flags"]:  # fmt: skip
        assert (workdir / path).is_file(), path
    lines = (workdir / "results.csv").read_text().splitlines()
    assert lines[0].startswith("trial_id,status,kd_lambda,temperature,defaults,val_accuracy")
    assert len(lines) == 1 + 3 and all(",COMPLETED," in line for line in lines[1:])
    assert lines[1].startswith("0,COMPLETED,4.0,3.0,True,")  # the paper's values come first
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["completed"] == 3 and summary["defaults"]["trial_id"] == "0"
    best = summary["best"]
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in summary["trials"])
    assert "Best: kd_lambda=" in proc.stdout
    # Trials keep the student only: every file is far smaller than the teacher.
    teacher_bytes = (workdir / "stage1/teacher/teacher.keras").stat().st_size
    sizes = [p.stat().st_size for p in (workdir / "trials").rglob("*") if p.is_file()]
    assert teacher_bytes > 1_000_000 and max(sizes) < teacher_bytes / 4
    # best.flags is a train flagfile carrying the best values and the tuned teacher.
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train", f"--flagfile={workdir / 'best.flags'}"])
        config = flag_lib.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    config.validate()
    assert config.schedule.kd_lambda == pytest.approx(best["kd_lambda"])
    assert config.schedule.temperature == pytest.approx(best["temperature"])
    assert config.models.teacher_path.endswith("stage1/teacher/teacher.keras")


def test_best_flags_of_a_teacher_given_as_a_file_name_it_once(tmp_path):
    teacher = tmp_path / "mine.keras"
    tiny_model("teacher", width=4, seed=0).save(teacher)
    best = {"kd_lambda": 2.5, "temperature": 3.5, "trial_id": "00", "val_accuracy": 0.5,
            "best_epoch": 1, "epochs": 1}  # fmt: skip
    for config, teacher_path in (
        (config_lib.ExperimentConfig().with_values(teacher=str(teacher)), str(teacher)),
        (config_lib.ExperimentConfig(), str(teacher)),  # an architecture trained by stage 1
    ):
        text = tune.best_flagfile(config, best, teacher_path, tmp_path, tmp_path / "best")
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(["train", *[line for line in text.splitlines() if line.startswith("--")]])
            parsed = flag_lib.config_from_flags()
        finally:
            flags.FLAGS.unparse_flags()
        parsed.validate()  # --teacher=FILE beside --teacher_path=FILE would be refused
        assert str(teacher) in (parsed.models.teacher, parsed.models.teacher_path)
        assert parsed.schedule.kd_lambda == 2.5


@pytest.mark.slow  # a whole train run; the default suite parses and validates best.flags above
def test_best_flags_trains_with_fitnets_tf_train(smoke, tmp_path):
    workdir, _ = smoke
    proc = subprocess.run(
        [sys.executable, "-m", "fitnets_tf.train", f"--flagfile={workdir / 'best.flags'}",
         f"--workdir={tmp_path}", "--kd_epochs=1", "--nomeasure_latency"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "fitnet" / "kd" / "log.csv").is_file()
    assert not (tmp_path / "teacher").exists()  # the tuned teacher was reused


@pytest.mark.parametrize("version", ["this", "earlier"])
def test_rerun_resumes_without_running_finished_trials(smoke, tmp_path, version):
    workdir = _copy(smoke, tmp_path)
    flags_txt = workdir / "flags.txt"
    assert flags_txt.read_text().startswith(ownership.SEARCH_FLAGS_HEADER)  # its mark
    if version == "earlier":  # which wrote no mark: its other files show it is a search's
        flags_txt.write_text(flags_txt.read_text().removeprefix(ownership.SEARCH_FLAGS_HEADER))
    before = {i: _runs(workdir, i) for i in range(3)}
    proc = _tune(f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Reloading Tuner" in proc.stdout and "stage 1" not in proc.stdout
    assert {i: _runs(workdir, i) for i in range(3)} == before
    assert "Best: kd_lambda=" in proc.stdout
    assert flags_txt.read_text().startswith(ownership.SEARCH_FLAGS_HEADER)


def test_an_interrupted_trial_runs_again(smoke, tmp_path):
    workdir = _copy(smoke, tmp_path)
    args = [sys.executable, "-m", "fitnets_tf.tune", f"--flagfile={SMOKE}",
            f"--workdir={workdir}", "--max_trials=4"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    state = workdir / "trials" / "trial_3" / "trial.json"
    started = state.with_name("runs.jsonl")  # written once the oracle has recorded the trial
    try:
        deadline = time.monotonic() + 120
        while not started.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-trial: no chance to clean up
    finally:
        proc.wait(timeout=30)
    assert json.loads(state.read_text())["status"] == "RUNNING"
    done = _tune(f"--workdir={workdir}", "--max_trials=4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(state.read_text())["status"] == "COMPLETED"
    assert [e["event"] for e in _runs(workdir, 3)][-2:] == ["start", "end"]
    assert [len(_runs(workdir, i)) for i in range(3)] == [2, 2, 2]  # the others did not rerun
    assert len((workdir / "results.csv").read_text().splitlines()) == 1 + 4


def _killed_when(args, ready, timeout=240):
    """Runs ``args``, SIGKILLs its process group once the file ``ready`` exists."""
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert ready.is_file(), f"no {ready} after {timeout} s (status {proc.poll()})"
        os.killpg(proc.pid, signal.SIGKILL)  # no handler, no finally: nothing runs after it
    finally:
        proc.wait(timeout=30)


def _without_seconds(path) -> list[dict]:
    rows = list(csv.DictReader(path.read_text().splitlines()))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.slow  # a whole search killed and run again: about two minutes on 2 loaded cores
def test_a_search_killed_mid_trial_resumes_to_the_uninterrupted_results(smoke, tmp_path):
    # kill -9 of a fresh search in its second trial's training, then the same command: the
    # kill leaves no lock that refuses it, stage 1 and the finished trial are not run again,
    # the killed trial is, and every file ends as the uninterrupted search's (smoke) did.
    from fitnets_tf.run import lock

    uninterrupted, _ = smoke
    workdir = tmp_path / "run"
    trial = workdir / "trials" / "trial_1"
    args = [sys.executable, "-m", "fitnets_tf.tune", f"--flagfile={SMOKE}", f"--workdir={workdir}"]
    _killed_when(args, trial / "log.csv")  # Keras' CSVLogger opens it as training begins
    assert json.loads((trial / "trial.json").read_text())["status"] == "RUNNING"
    assert not (workdir / "results.csv").exists() and not (workdir / "best.flags").exists()
    assert lock.held(workdir) is False and lock.held(workdir / "stage1") is False
    first = _runs(workdir, 0)
    done = _tune(f"--workdir={workdir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Reloading Tuner" in done.stdout and "== stage 1" not in done.stdout
    assert _runs(workdir, 0) == first  # finished: not run again
    assert [e["event"] for e in _runs(workdir, 1)] == ["start", "start", "end"]
    assert _without_seconds(workdir / "results.csv") == _without_seconds(
        uninterrupted / "results.csv"
    )
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["completed"] == 3 and summary["failed"] == 0
    same = json.loads((uninterrupted / "summary.json").read_text())["best"]
    assert (summary["best"]["trial_id"], summary["best"]["val_accuracy"]) == (
        same["trial_id"], same["val_accuracy"])  # fmt: skip
    text = (workdir / "best.flags").read_text().replace(str(workdir), "WORKDIR")
    assert text == (uninterrupted / "best.flags").read_text().replace(str(uninterrupted), "WORKDIR")
    assert lock.held(workdir) is False


@pytest.mark.parametrize(
    ("when", "signum"),
    [("trial", signal.SIGTERM),  # the other two in the slow suite: each a search of its own
     pytest.param("trial", signal.SIGINT, marks=pytest.mark.slow),
     pytest.param("stage 1", signal.SIGTERM, marks=pytest.mark.slow)],
)
def test_a_signal_stops_the_search_with_one_line_and_status_75(when, signum, smoke, tmp_path):
    # Was: SIGTERM in a trial ended the process without a word (status -15), Ctrl-C printed
    # KeyboardInterrupt's traceback, and SIGTERM in stage 1 the traceback of Preempted.
    if when == "trial":
        workdir = _copy(smoke, tmp_path)
        ready = workdir / "trials" / "trial_3" / "runs.jsonl"  # trial 3 has started
    else:
        workdir = tmp_path / "fresh"
        ready = workdir / "stage1" / "data.json"  # stage 1 has read its data
    out = tmp_path / "out.txt"
    with open(out, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fitnets_tf.tune", f"--flagfile={SMOKE}",
             f"--workdir={workdir}", "--max_trials=4"],
            cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not ready.is_file() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            proc.send_signal(signum)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = out.read_text()
    assert proc.returncode == 75, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("fitnets_tf.tune: Stopped by a signal ")
    assert last.endswith("run the same command again to resume.")
    if when == "trial":
        assert json.loads(ready.with_name("trial.json").read_text())["status"] == "RUNNING"
        assert "finished trials are kept" in last
        # The results so far, not those of the run the copy was made from (3 trials).
        rows = list(csv.DictReader((workdir / "results.csv").read_text().splitlines()))
        assert [r["status"] for r in rows] == ["COMPLETED"] * 3 + ["RUNNING"]
        summary = json.loads((workdir / "summary.json").read_text())
        assert len(summary["trials"]) == 4
        header = (workdir / "best.flags").read_text().splitlines()[0]
        assert f"trial {summary['best']['trial_id']}," in header


def test_a_different_search_space_on_an_old_workdir_is_refused(smoke, tmp_path):
    workdir = _copy(smoke, tmp_path)
    flags_txt = (workdir / "flags.txt").read_text()
    proc = _tune(f"--workdir={workdir}", "--temperature_range=1,8", "--search_space=learning_rate")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "holds a different search" in proc.stderr
    assert "space.temperature.max: 10.0 → 8.0" in proc.stderr
    assert "space.learning_rate.max: (absent) → 0.01" in proc.stderr
    assert (workdir / "flags.txt").read_text() == flags_txt  # still the search's own flags


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kd_lambda_range=5"], "--kd_lambda_range must be two numbers min,max. Received: 5"),
        # Named the Python field `kd_lambda`, which a user reads as --kd_lambda.
        (
            ["--kd_lambda_range=16,0.5"],
            r"--kd_lambda_range must be two finite numbers min,max with 0 < min < max\. "
            r"Received: 16,0\.5",
        ),
        (
            ["--lambda_end_range=-1,2", "--search_space=lambda_end"],
            r"--lambda_end_range must be .* with 0 <= min < max\. Received: -1,2",
        ),
        # Was ignored without a word: the search ran over λ0 and τ alone.
        (
            ["--lambda_end_range=0,2"],
            "--lambda_end_range is given but lambda_end is not searched: add "
            "--search_space=lambda_end",
        ),
        (["--search_space=momentum"], "Unknown optional.*momentum"),
        (["--kd_lambda=20"], "kd_lambda=20.0, outside the searched range"),
        (["--mode=scratch"], "needs --mode=fitnet or kd"),
        (["--retrain_on_all"], "needs a validation split"),
        # Was run: every trial all warm-up, its rate never reaching --learning_rate.
        (
            ["--warmup_epochs=1", "--hints_epochs=2", "--trial_epochs=1"],
            "warmup_epochs=1 is not shorter than trial_epochs=1",
        ),
        (["--stages=hints,kd"], "No teacher: give --teacher_path"),
    ],
)
def test_bad_searches_are_refused_before_any_work(args, message, tmp_path):
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["tune", f"--flagfile={os.path.join(ROOT, SMOKE)}", *args])
        with pytest.raises(ValueError, match=message):  # main prints these as one paragraph
            search.tune(flag_lib.config_from_flags(), tune.options_from_flags(), tmp_path)
    finally:
        flags.FLAGS.unparse_flags()
    assert not (tmp_path / "stage1").exists() and not (tmp_path / "trials").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_tuner(tuner_id: str, workdir, port: str, logs):
    """One process of a distributed search; its output goes to ``logs/<tuner_id>.log``."""
    env = _env(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=port)  # fmt: skip
    log = open(logs / f"{tuner_id}.log", "w")  # noqa: SIM115  (closed by the caller)
    return (subprocess.Popen(
        [sys.executable, "-m", "fitnets_tf.tune", f"--flagfile={SMOKE}", f"--workdir={workdir}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log)  # fmt: skip


def _stop_all(procs: dict) -> None:
    for proc, log in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _start_chief_and_two_workers(procs: dict, workdir, tmp_path) -> None:
    """Starts the chief and workers tuner0, tuner1 on a free port, into ``procs`` (stopped by
    the caller's ``_stop_all`` even if a start fails)."""
    port = str(_free_port())
    for tuner_id in ("chief", "tuner0", "tuner1"):
        procs[tuner_id] = _start_tuner(tuner_id, workdir, port, tmp_path)


@pytest.mark.slow  # three processes; the default suite tests the oracle's worker logic in-process
def test_chief_and_two_workers_run_each_trial_once(smoke, tmp_path):
    # Stage 1 is the smoke run's (the chief would run it first and the workers wait for it).
    workdir = _copy(smoke, tmp_path, with_trials=False)
    procs = {}
    try:
        _start_chief_and_two_workers(procs, workdir, tmp_path)
        deadline = time.monotonic() + 240
        for proc, _ in procs.values():
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        _stop_all(procs)
    logs = {k: (tmp_path / f"{k}.log").read_text() for k in procs}
    for tuner_id, (proc, _) in procs.items():
        assert proc.returncode == 0, f"{tuner_id}:\n{logs[tuner_id][-3000:]}"
    runs = {i: _runs(workdir, i) for i in range(3)}
    for trial_id, events in runs.items():
        assert [e["event"] for e in events] == ["start", "end"], (trial_id, events)
        assert events[1]["status"] == "COMPLETED" and events[0]["tuner_id"] != "chief"
    assert not (workdir / "trials" / "trial_3").exists()
    assert "worker done" in logs["tuner0"] and "worker done" in logs["tuner1"]
    lines = (workdir / "results.csv").read_text().splitlines()  # written by the chief
    assert len(lines) == 1 + 3 and all(",COMPLETED," in line for line in lines[1:])


def _first_trial_of(workdir, tuner_id: str, timeout: float = 240) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted((workdir / "trials").glob("trial_*/runs.jsonl")):
            if any(
                json.loads(line)["tuner_id"] == tuner_id for line in path.read_text().splitlines()
            ):
                return path.parent.name.removeprefix("trial_")
        time.sleep(0.2)
    return None


@pytest.mark.slow  # three processes and a trial run twice: about a minute on 2 loaded cores
def test_a_worker_killed_mid_trial_does_not_stall_the_search(smoke, tmp_path):
    workdir = _copy(smoke, tmp_path, with_trials=False)
    procs = {}
    try:
        _start_chief_and_two_workers(procs, workdir, tmp_path)
        killed = _first_trial_of(workdir, "tuner1")
        assert killed is not None, (tmp_path / "tuner1.log").read_text()[-3000:]
        os.killpg(procs["tuner1"][0].pid, signal.SIGKILL)  # mid-trial: no chance to report
        for tuner_id in ("chief", "tuner0"):  # keras-tuner's chief alone would wait forever
            procs[tuner_id][0].wait(timeout=240)
    finally:
        _stop_all(procs)
    logs = {k: (tmp_path / f"{k}.log").read_text() for k in procs}
    for tuner_id in ("chief", "tuner0"):
        assert procs[tuner_id][0].returncode == 0, f"{tuner_id}:\n{logs[tuner_id][-3000:]}"
    assert f"Trial {killed}: its worker 'tuner1' is gone; queued to run again." in logs["chief"]
    events = _runs(workdir, killed)
    assert [(e["event"], e["tuner_id"]) for e in events] == [
        ("start", "tuner1"), ("start", "tuner0"), ("end", "tuner0")]  # fmt: skip
    lines = (workdir / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 and all(",COMPLETED," in line for line in lines[1:])


def test_a_search_takes_the_users_data_models_hints_and_recipe(tmp_path):
    """The tuner's CLI shares every experiment option: npz images, a .keras student, --hints,
    an SGD + cosine recipe."""
    rng = np.random.default_rng(0)
    arrays = {f"{x}_{split}": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if x == "x"
              else rng.integers(0, 10, n) for split, n in (("train", 320), ("test", 64))
              for x in "xy"}  # fmt: skip
    np.savez(tmp_path / "mine.npz", **arrays)
    student = models.build("mnist_fitnet", (28, 28, 1), 10)
    student.save(tmp_path / "student.keras")
    workdir = tmp_path / "search"
    proc = _tune(
        f"--workdir={workdir}", f"--dataset=npz:{tmp_path / 'mine.npz'}", "--validation_size=64",
        f"--student={tmp_path / 'student.keras'}", "--hints=pool2:pool4", "--optimizer=sgd",
        "--momentum=0.9", "--lr_schedule=cosine", "--learning_rate=0.01", "--max_trials=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert len(summary["trials"]) == 2
    best = (workdir / "best.flags").read_text()
    for line in ("--optimizer=sgd", "--lr_schedule=cosine", "--hints=pool2:pool4", "npz:"):
        assert line in best


def test_a_search_whose_best_trial_is_near_chance_says_where_to_look(tmp_path):
    from fitnets_tf.search import results

    lines = []
    results.warn_near_chance({"best": {"val_accuracy": 0.3125}}, 3, tmp_path, lines.append)
    assert len(lines) == 1 and "near chance (validation accuracy 0.3125, chance 0.3333)" in lines[0]
    assert "--hints_optimizer=adam" in lines[0] and str(tmp_path / "stage1") in lines[0]
    results.warn_near_chance({"best": {"val_accuracy": 0.7}}, 3, tmp_path, lines.append)
    results.warn_near_chance({"best": None}, 3, tmp_path, lines.append)  # every trial failed
    assert len(lines) == 1
    results.warn_near_chance({"best": {"val_accuracy": 0.3}}, 3, tmp_path, lines.append, "adam")
    assert "--hints_learning_rate)" in lines[1] and "--hints_optimizer" not in lines[1]
    # A search by KD alone trained no hints: no stage-1 folder to look in.
    results.warn_near_chance({"best": {"val_accuracy": 0.3}}, 3, tmp_path, lines.append, None)
    assert "Look first at the teacher's accuracy (logged before the trials)" in lines[2]
    assert "stage1" not in lines[2] and "hint" not in lines[2]
    # --retrain_hints_per_trial: it named WORKDIR/stage1, which such a search never makes.
    results.warn_near_chance({"best": {"val_accuracy": 0.3}}, 3, tmp_path, lines.append,
                             "rmsprop", hints_per_trial=True)  # fmt: skip
    assert "the hint loss of each trial's hint training (printed as it runs" in lines[3]
    assert "stage1" not in lines[3]


def test_a_kd_search_checks_a_given_teacher_before_any_trial(smoke, tmp_path):
    # The smoke search's teacher with its classes renamed (0 <-> 1, 2 <-> 3, ...): a
    # search by KD alone runs no stage-1 run, whose check refuses it, and distilled it.
    workdir, _ = smoke
    teacher = keras.models.load_model(workdir / "stage1/teacher/teacher.keras")
    swap = keras.layers.Dense(10, use_bias=False, trainable=False, name="swap")
    renamed = keras.Sequential([keras.Input(teacher.inputs[0].shape[1:]), teacher, swap])
    swap.set_weights([np.eye(10)[[1, 0, 3, 2, 5, 4, 7, 6, 9, 8]]])
    renamed.save(tmp_path / "renamed.keras")
    proc = _tune("--mode=kd", f"--teacher_path={tmp_path / 'renamed.keras'}", "--max_trials=1",
                 f"--workdir={tmp_path / 'search'}")  # fmt: skip
    assert proc.returncode != 0
    assert "The teacher calls classes by other labels than this data's" in proc.stderr
    assert not (tmp_path / "search" / "trials").exists()
    proc = _tune("--mode=kd", f"--teacher_path={workdir / 'stage1/teacher/teacher.keras'}",
                 "--max_trials=1", "--trial_epochs=1", f"--workdir={tmp_path / 'kept'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "teacher: validation accuracy " in proc.stdout + proc.stderr


@pytest.mark.slow  # the CLI's message and resume; the oracle's part: the test above
def test_a_search_stopped_by_failures_says_how_to_go_on_and_resumes(smoke, tmp_path):
    # Its advice was "Narrow the ranges ... and re-run": on the same --workdir, narrower
    # ranges are refused as another search; and the same command re-ran the last failed trial.
    workdir, _ = smoke
    args = ("--mode=kd", f"--teacher_path={workdir / 'stage1/teacher/teacher.keras'}",
            "--kd_lambda_range=1e36,1e38", "--kd_lambda=1e37", "--max_trials=4",
            f"--workdir={tmp_path / 'search'}")  # fmt: skip
    proc = _tune(*args)
    assert proc.returncode == 1
    assert "consecutive failures" in proc.stderr
    assert "Narrow the ranges (a high λ0 or learning rate diverges) in a new --workdir" in (
        proc.stderr
    )
    proc = _tune(*args)  # resumed: one new trial, which diverges too
    assert proc.returncode == 1
    rows = list(csv.DictReader((tmp_path / "search" / "results.csv").read_text().splitlines()))
    assert [(r["trial_id"], r["status"]) for r in rows] == [(str(i), "FAILED") for i in range(4)]
    runs = (tmp_path / "search" / "trials" / "trial_2" / "runs.jsonl").read_text()
    assert runs.count('"start"') == 1


def test_a_kd_search_checks_its_student_file_before_any_trial(teacher_path, tmp_path):
    # A student file that rescales raw pixels, fed pixels / 255: `train` refuses it where it
    # builds its students; a search by KD alone builds them in its trials only, and trained it
    # (fitnets_tf.tune ran its trial to validation accuracy 0.07).
    from fitnets_tf import experiment
    from fitnets_tf.search import session

    inputs = keras.Input((28, 28, 1))  # synthetic's images
    x = keras.layers.Rescaling(1 / 255, name="rescaling")(inputs)  # not Keras' rescaling_N
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(tmp_path / "student.keras")
    config = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", teacher_path=str(teacher_path), student=str(tmp_path / "student.keras"),
        modes=("kd",), limit=32)  # fmt: skip
    data = experiment.load_data(config)
    record = {"teacher_path": str(teacher_path), "student_path": None}
    with pytest.raises(errors.ConfigError, match=r"rescales its own input \(its layer 'rescaling' "
                                                 r"multiplies by 0.00392157\)"):  # fmt: skip
        session._check_models(config, record, data, print)
    # Stage 1's run checked them, where it trained the hints.
    session._check_models(config, dict(record, student_path="stage1.keras"), data, print)


def test_a_chief_knows_the_data_from_the_teacher_without_reading_it(teacher_path):
    from fitnets_tf.search import session

    # The chief of a distributed search reads no data; the teacher's ends say what it needs.
    assert session._teacher_shape({"teacher_path": str(teacher_path)}) == ((8, 8, 1), 3)


def test_best_flags_training_fewer_epochs_than_the_best_trial_says_so(tmp_path):
    # A flagfile with --kd_epochs=1 searched with --trial_epochs=2: the best trial scored after
    # 2 epochs, and best.flags retrained 1, silently (at chance on a 324-image folder, where
    # the trial reached 0.53).
    best = {"trial_id": "1", "val_accuracy": 0.53, "best_epoch": 2, "epochs": 2,
            "kd_lambda": 0.8, "temperature": 9.0}  # fmt: skip
    short = config_lib.ExperimentConfig().with_values(kd_epochs=1)
    header = tune.best_flagfile(short, best, "t.keras", tmp_path, "best").splitlines()[:3]
    assert header[1] == ("# Note: --kd_epochs=1 in best.flags is fewer than the 2 epoch(s) "
                         "after which the trial scored this: raise it to train at least as long.")
    long = config_lib.ExperimentConfig().with_values(kd_epochs=2)
    assert "Note" not in tune.best_flagfile(long, best, "t.keras", tmp_path, "best")
