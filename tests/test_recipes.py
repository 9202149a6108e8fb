"""Training recipes: optimizers by name, schedules in epochs, weight decay, per-stage rates."""

import csv
import math

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from conftest import KillAfter, Killed, tiny_dataset, tiny_model

from fitnets_tf import recipes, search, stages
from fitnets_tf.callbacks import LearningRateLogger
from fitnets_tf.config import ExperimentConfig
from fitnets_tf.errors import ConfigError
from fitnets_tf.run import resume
from fitnets_tf.run.layout import RunLayout

# tiny_dataset(): 32 examples in batches of 8, so 4 optimizer steps per epoch.
STEPS = 4


def rates(optimizer, steps) -> list[float]:
    """The optimizer's learning rate at each of ``steps`` (its ``iterations``)."""
    out = []
    for step in steps:
        optimizer.iterations.assign(step)
        out.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    return out


def test_the_default_is_the_papers_rmsprop_at_a_constant_rate():
    built = stages.Hyperparameters().optimizer()
    expected = keras.optimizers.RMSprop(5e-3, rho=0.9).get_config()
    assert {**built.get_config(), "name": None} == {**expected, "name": None}
    assert ExperimentConfig().hyperparameters() == stages.Hyperparameters()


def test_sgd_cosine_with_warmup_at_pinned_steps():
    hp = stages.Hyperparameters(learning_rate=0.1, optimizer_name="sgd", momentum=0.9,
                                lr_schedule="cosine", warmup_epochs=1)  # fmt: skip
    optimizer = hp.optimizer(epochs=5, steps_per_epoch=10)
    # Warm-up over steps 0-9 (0 at step 0), then 0.1·½(1 + cos(π·(t − 10)/40)) to step 50.
    got = rates(optimizer, [0, 5, 10, 20, 30, 50, 70])
    expected = [0.0, 0.05, 0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.0, 0.0]
    np.testing.assert_allclose(got, expected, atol=1e-7)


@pytest.mark.parametrize(
    ("warmup", "expected"),
    [(0, [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]),
     (1, [0.0, 0.1 / 3, 0.1, 0.01, 0.01, 0.001])],
)  # fmt: skip
def test_step_schedule_changes_at_epoch_boundaries(warmup, expected):
    hp = stages.Hyperparameters(learning_rate=0.1, lr_schedule="step:2,4", warmup_epochs=warmup)
    optimizer = hp.optimizer(epochs=6, steps_per_epoch=3)
    # Steps 0, 1 (warm-up), 5 (last of epoch 1), 6 (first of epoch 2), 11, 12 (first of epoch 4).
    np.testing.assert_allclose(rates(optimizer, [0, 1, 5, 6, 11, 12]), expected, rtol=1e-6)


def test_weight_decay_shrinks_kernels_only():
    inputs = keras.Input((2,))
    dense = keras.layers.Dense(2, name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(dense))
    for v in model.trainable_variables:
        v.assign(np.full(v.shape, 2.0, "float32"))
    # The benchmark's recipe: a zero gradient leaves only the decay, lr · wd · w.
    optimizer = stages.Hyperparameters(learning_rate=0.05, optimizer_name="sgd", momentum=0.9,
                                       weight_decay=5e-4).optimizer()  # fmt: skip
    variables = model.trainable_variables
    optimizer.apply([keras.ops.zeros_like(v) for v in variables], variables)
    after = {v.path: keras.ops.convert_to_numpy(v) for v in variables}
    np.testing.assert_allclose(after["dense/kernel"], 2.0 * (1 - 0.05 * 5e-4), rtol=1e-7)
    for name in ("dense/bias", "bn/gamma", "bn/beta"):
        np.testing.assert_array_equal(after[name], 2.0)


@pytest.mark.parametrize(
    ("name", "options", "kind", "expected"),
    [("rmsprop", dict(momentum=0.5), keras.optimizers.RMSprop, dict(rho=0.9, momentum=0.5)),
     ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=5e-4), keras.optimizers.SGD,
      dict(momentum=0.9, nesterov=True, weight_decay=5e-4)),
     ("adam", {}, keras.optimizers.Adam, dict(beta_1=0.9, weight_decay=None)),
     ("adamw", dict(weight_decay=0.05), keras.optimizers.AdamW, dict(weight_decay=0.05))],
)  # fmt: skip
def test_every_optimizer_builds_with_its_options(name, options, kind, expected):
    hp = stages.Hyperparameters(learning_rate=0.01, optimizer_name=name, **options)
    optimizer = hp.optimizer()
    assert type(optimizer) is kind
    config = optimizer.get_config()
    assert {k: config[k] for k in expected} == pytest.approx(expected)
    assert config["learning_rate"] == pytest.approx(0.01)


def test_library_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="adam takes no momentum"):
        recipes.build_optimizer("adam", 0.01, momentum=0.9)
    with pytest.raises(ValueError, match="Received: name='lamb'"):
        recipes.build_optimizer("lamb", 0.01)
    with pytest.raises(ValueError, match="needs the stage's `epochs` and `steps_per_epoch`"):
        stages.Hyperparameters(lr_schedule="cosine").optimizer()
    unknown_length = tiny_dataset().filter(lambda x, y: True)  # tf.data cannot count it
    with pytest.raises(ValueError, match="steps_per_epoch=None"):
        stages.fit_labels(tiny_model("m", 4, 0), unknown_length, epochs=1, verbose=0,
                          hparams=stages.Hyperparameters(lr_schedule="cosine"))  # fmt: skip


@pytest.mark.parametrize(
    ("values", "message"),
    [(dict(lr_schedule="step:180,150"), "'step:180,150': step: takes epochs >= 1 in increasing"),
     (dict(lr_schedule="step:-10,150"), "'step:-10,150': step: takes epochs >= 1"),
     (dict(teacher_lr_schedule="step:"), "'step:': step: takes epochs"),
     (dict(hints_lr_schedule="linear"), "unknown learning-rate schedule 'linear'"),
     (dict(momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
     (dict(momentum=-0.1), r"momentum must be in \[0, 1\), got -0.1"),
     (dict(optimizer="lamb"), "unknown optimizer 'lamb'"),
     (dict(optimizer="adam", momentum=0.9), "adam takes no momentum"),
     (dict(optimizer="sgd", nesterov=True), "nesterov needs optimizer sgd with momentum > 0"),
     (dict(optimizer="adamw"), "adamw needs weight_decay > 0"),
     (dict(optimizer="adam", weight_decay=1e-4), "use adamw"),
     (dict(lr_decay=0.0), "lr_decay must be > 0"),
     (dict(warmup_epochs=10, kd_epochs=10), "warmup_epochs=10 is not shorter than kd_epochs=10")],
)  # fmt: skip
def test_config_validation_refuses_bad_recipes(values, message):
    config = ExperimentConfig().with_values(**values)
    with pytest.raises(ConfigError, match=message):
        config.validate()


@pytest.mark.parametrize(
    ("values", "message"),
    [(dict(weight_decay=math.nan), "weight_decay must be a finite number, got nan"),
     (dict(kd_lambda=math.nan), "kd_lambda must be a finite number"),
     (dict(learning_rate=math.inf), "learning_rate must be a finite number, got inf"),
     (dict(temperature=math.inf), "temperature must be a finite number"),
     (dict(hints=("pool2:pool4",), hint_weights=(math.inf,)), "hint_weights must be numbers > 0"),
     (dict(rho=1.0), r"rho must be in \[0, 1\), got 1.0"),
     # Accepted, then stage 1 failed after the teacher trained: its own optimizer has no decay.
     (dict(optimizer="sgd", hints_optimizer="adamw"), "use hints_optimizer adam"),
     (dict(optimizer="sgd", momentum=0.9, mode_stagewise=True, hints_optimizer="adamw"),
      "hints_optimizer adamw differs from optimizer sgd"),
     # Accepted, then Keras' EarlyStopping only warned, every epoch, and never stopped.
     (dict(early_stopping_patience=3, retrain_on_all=True), "early_stopping_patience watches"),
     (dict(early_stopping_patience=3, validation_size=0), "drop one or the other"),
     # Accepted, and silently unused by every stage.
     (dict(optimizer="sgd", rho=0.95), "rho=0.95 is RMSProp's decay, which sgd does not have"),
     (dict(lr_decay=0.5), r"lr_decay=0.5 scales step schedules only.*give a step schedule"),
     (dict(regressor_max_norm=0.9, modes=("kd", "scratch")),
      r"only --mode=fitnet trains \(--mode=kd,scratch\): drop --regressor_max_norm")],
)  # fmt: skip
def test_config_validation_refuses_what_would_fail_or_do_nothing_later(values, message):
    if values.pop("mode_stagewise", False):
        values["modes"] = ("stagewise_labels",)
    config = ExperimentConfig().with_values(**values)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_what_is_still_accepted_around_those_refusals():
    ok = ExperimentConfig().with_values
    ok(rho=0.0).validate()
    ok(optimizer="adamw", weight_decay=0.05, hints_optimizer="adamw").validate()
    ok(optimizer="sgd", hints_optimizer="adamw", modes=("kd",)).validate()  # no stage 1
    ok(early_stopping_patience=3).validate()
    ok(early_stopping_patience=3, validation_size=5).validate()
    ok(optimizer="sgd", rho=0.9).validate()  # the default value: nothing was asked for
    ok(lr_decay=0.5, lr_schedule="step:3").validate()
    ok(lr_decay=0.5, hints_lr_schedule="step:1").validate()  # stage 1 runs in the default modes
    ok(regressor_max_norm=0.9, modes=("kd", "fitnet")).validate()  # fitnet trains a regressor
    # A folder's validation/ or an npz file's x_val is kept with --validation_size=0.
    own = ok(early_stopping_patience=3, validation_size=0, dataset="npz:missing.npz")
    with pytest.raises(ConfigError) as refused:  # for the missing file only
        own.validate()
    assert "missing.npz" in str(refused.value) and "early_stopping" not in str(refused.value)


@pytest.mark.parametrize(
    ("hparams", "build", "message"),
    [(dict(learning_rate=-0.1), {}, "learning_rate must be a finite number > 0, got -0.1"),
     (dict(learning_rate=math.nan), {}, "learning_rate must be a finite number > 0"),
     (dict(optimizer_name="sgd", weight_decay=-1e-3), {}, "weight_decay must be a finite"),
     (dict(rho=1.0), {}, r"rho must be in \[0, 1\)"),
     (dict(optimizer_name="adam", rho=0.5), {}, "rho=0.5 is RMSProp's decay, which adam does"),
     (dict(lr_schedule="step:1", lr_decay=0.0), dict(epochs=2, steps_per_epoch=2),
      r"lr_decay must be a finite number in \(0, 1\]"),
     (dict(warmup_epochs=-1), dict(epochs=2, steps_per_epoch=2), "warmup_epochs must be an int"),
     (dict(warmup_epochs=1.5), dict(epochs=2, steps_per_epoch=2), "got 1.5")],
)  # fmt: skip
def test_hyperparameters_used_directly_refuse_bad_values_by_name(hparams, build, message):
    # These built an optimizer that trains uphill or blows up (ρ = 1), or failed inside Keras
    # with another number ("warmup_steps must be an int >= 1. Received: -2").
    with pytest.raises(ValueError, match=message):
        stages.Hyperparameters(**hparams).optimizer(**build)


def test_a_stage_one_adamw_of_its_own_is_refused_by_name_from_python():
    hparams = stages.Hyperparameters(optimizer_name="sgd", hints_optimizer="adamw")
    with pytest.raises(ValueError, match="hints_optimizer='adamw', optimizer_name='sgd'"):
        hparams.stage_one()


def test_warmup_is_checked_only_against_stages_that_run():
    ExperimentConfig().with_values(warmup_epochs=4, kd_epochs=5).validate()
    # kd mode has no stage 1; a given teacher is not trained.
    ExperimentConfig().with_values(modes=("kd",), warmup_epochs=6, hints_epochs=2, kd_epochs=8,
                                   teacher_path="teacher.keras", teacher_epochs=3).validate()  # fmt: skip


STEP = "step:150,180,210"  # the CIFAR-100 benchmark's


def test_stage_one_may_have_its_own_optimizer_with_keras_defaults():
    config = ExperimentConfig().with_values(
        optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=1e-2, warmup_epochs=1,
        hints_optimizer="adam", hints_learning_rate=1e-3, hints_epochs=1, kd_epochs=3,
    )  # fmt: skip
    config.validate()  # a 1-epoch stage 1 on another optimizer does not warm up: no conflict
    stage_one = config.hyperparameters().stage_one()
    assert (stage_one.optimizer_name, stage_one.learning_rate) == ("adam", 1e-3)
    assert (stage_one.momentum, stage_one.nesterov, stage_one.weight_decay) == (0.0, False, 0.0)
    assert stage_one.warmup_epochs == 0
    optimizer = stage_one.optimizer(epochs=1, steps_per_epoch=10)
    assert isinstance(optimizer, keras.optimizers.Adam) and not optimizer.weight_decay
    same = config.with_values(hints_optimizer="sgd").hyperparameters().stage_one()
    assert (same.optimizer_name, same.momentum, same.weight_decay) == ("sgd", 0.9, 1e-2)


def test_each_stage_gets_its_own_rate_and_schedule():
    config = ExperimentConfig().with_values(
        optimizer="sgd", momentum=0.9, learning_rate=0.05, lr_schedule=STEP,
        teacher_learning_rate=0.1, hints_learning_rate=0.01, hints_lr_schedule="cosine",
    )  # fmt: skip
    students, teacher = config.hyperparameters(), config.hyperparameters(teacher=True)
    assert (students.learning_rate, students.lr_schedule) == (0.05, STEP)
    stage_one = students.stage_one()
    assert (stage_one.learning_rate, stage_one.lr_schedule) == (0.01, "cosine")
    assert (teacher.learning_rate, teacher.lr_schedule) == (0.1, STEP)
    assert teacher.optimizer_name == students.optimizer_name == "sgd" and teacher.momentum == 0.9
    # The tuner's trials start from the same Hyperparameters, recipe included.
    trial = search.SearchSpace().hyperparameters(keras_tuner.HyperParameters(), students)
    assert (trial.optimizer_name, trial.lr_schedule, trial.momentum) == ("sgd", STEP, 0.9)


@pytest.mark.parametrize(
    ("mode", "stage_one"), [("fitnet", "hints"), ("stagewise_labels", "guided_labels")]
)
def test_train_student_runs_stage_one_at_its_own_rate(mode, stage_one):
    hp = stages.Hyperparameters(learning_rate=0.02, hints_learning_rate=0.01)
    histories = stages.train_student(
        mode, tiny_model("teacher", 6, 0), tiny_model("student", 4, 1), tiny_dataset(),
        hparams=hp, hint_layer="pool1", guided_layer="pool1", hints_epochs=1, kd_epochs=1,
        callbacks_for=lambda stage: [LearningRateLogger()], verbose=0,
    )  # fmt: skip
    assert histories[stage_one].history["learning_rate"] == pytest.approx([0.01])
    assert histories["kd"].history["learning_rate"] == pytest.approx([0.02])


@pytest.mark.parametrize(
    ("schedule", "expected"),
    # cosine over 12 steps, read at each epoch's first step (0, 4, 8): 0.1·½(1 + cos(π·t/12)).
    [("cosine", [0.1, 0.075, 0.025]), ("step:2", [0.1, 0.1, 0.01])],
)  # fmt: skip
def test_csv_log_follows_the_schedule(tmp_path, schedule, expected):
    hp = stages.Hyperparameters(learning_rate=0.1, optimizer_name="sgd", lr_schedule=schedule)
    path = tmp_path / "log.csv"
    # No steps_per_epoch: fit_labels counts the dataset's batches.
    stages.fit_labels(tiny_model("m", 4, 0), tiny_dataset(), epochs=3, hparams=hp, verbose=0,
                      callbacks=[LearningRateLogger(), keras.callbacks.CSVLogger(str(path))])  # fmt: skip
    with open(path) as f:
        logged = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    np.testing.assert_allclose(logged, expected, rtol=1e-6)


def _fit(model, workdir, initial_epoch=0, checkpoint=True, kill_after=None):
    """A 3-epoch stage of SGD with momentum and a cosine schedule."""
    hp = stages.Hyperparameters(learning_rate=0.1, optimizer_name="sgd", momentum=0.9,
                                lr_schedule="cosine")  # fmt: skip
    callbacks = [LearningRateLogger()]
    if checkpoint:
        stage_dir = RunLayout(workdir).stage("teacher").root  # where the run state looks
        stage_dir.mkdir(parents=True, exist_ok=True)
        state = resume.RunState(workdir, {})
        callbacks.append(resume.StageCheckpoint(state, "teacher", stage_dir, log=lambda m: None))
    callbacks += [KillAfter(kill_after)] if kill_after else []
    history = stages.fit_labels(model, tiny_dataset(), epochs=3, initial_epoch=initial_epoch,
                                hparams=hp, callbacks=callbacks, verbose=0, steps_per_epoch=STEPS)  # fmt: skip
    return history.history["learning_rate"]


def test_resumed_stage_continues_the_schedule(tmp_path):
    tf.config.experimental.enable_op_determinism()
    straight = tiny_model("m", 4, 0)
    assert _fit(straight, tmp_path / "a") == pytest.approx([0.1, 0.075, 0.025])

    with pytest.raises(Killed):
        _fit(tiny_model("m", 4, 0), tmp_path / "b", kill_after=2)
    resumed = tiny_model("m", 4, 7)  # new weights and a new optimizer: the checkpoint restores both
    assert _fit(resumed, tmp_path / "b", initial_epoch=2) == pytest.approx([0.025])
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 3 * STEPS
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Without the restored step count the schedule would start over.
    unrestored = _fit(tiny_model("m", 4, 0), tmp_path / "c", initial_epoch=2, checkpoint=False)
    assert unrestored == pytest.approx([0.1])


@pytest.mark.parametrize("schedule", ["step:2", "cosine", "constant"])
def test_a_model_compiled_with_a_schedule_saves_and_loads(tmp_path, schedule):
    hp = stages.Hyperparameters(learning_rate=0.1, lr_schedule=schedule, warmup_epochs=1)
    model = tiny_model("m", 4, 0)
    model.compile(optimizer=hp.optimizer(epochs=4, steps_per_epoch=5), loss="mse")
    model.optimizer.build(model.trainable_variables)
    # A user's own model.save keeps the optimizer and its schedule (a run's files hold neither:
    # io.save_model), and keras.saving.load_model compiles them back.
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(rates(loaded.optimizer, [0, 2, 7, 12]),
                               rates(model.optimizer, [0, 2, 7, 12]), rtol=1e-6)  # fmt: skip
