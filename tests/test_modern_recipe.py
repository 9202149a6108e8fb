"""A modern recipe's parts: label smoothing, an EMA of the weights, gradient clipping, and
flips of the user's images under --augment. Each is off by default (the runs before them)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import KillAfter, Killed, tiny_data, tiny_dataset, tiny_model

import fitnets_tf
from fitnets_tf import data, losses, recipes, stages, teacher_cache
from fitnets_tf.config import ExperimentConfig
from fitnets_tf.errors import ConfigError
from fitnets_tf.run import mid_epoch, resume
from fitnets_tf.run.layout import RunLayout
from fitnets_tf.run.state_file import check_same_config

STEPS = 4  # tiny_dataset(): 32 examples in batches of 8

# logits [0, ln 3]: P = [0.25, 0.75]; the label is class 1.
LOGITS = np.array([[0.0, math.log(3.0)]], "float32")


# -- label smoothing ---------------------------------------------------------------------------


def test_smoothed_cross_entropy_is_the_hand_computed_value():
    # ε = 0.1, K = 2: target [0.05, 0.95], so H = −(0.05·ln 0.25 + 0.95·ln 0.75).
    expected = -(0.05 * math.log(0.25) + 0.95 * math.log(0.75))  # 0.342613
    got = losses.cross_entropy(np.array([1]), LOGITS, label_smoothing=0.1)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    np.testing.assert_allclose(got, [0.342613], rtol=1e-5)
    one_hot = losses.cross_entropy(np.array([[0.0, 1.0]], "float32"), LOGITS, 0.1)
    np.testing.assert_allclose(one_hot, [expected], rtol=1e-6)
    # 0 is exactly the unsmoothed term.
    np.testing.assert_array_equal(losses.cross_entropy(np.array([1]), LOGITS, 0.0),
                                  losses.cross_entropy(np.array([1]), LOGITS))  # fmt: skip


@pytest.mark.parametrize("softmax", [False, True])
def test_the_labels_loss_of_fit_labels_is_smoothed_the_same_way(softmax):
    expected = -(0.05 * math.log(0.25) + 0.95 * math.log(0.75))
    inputs = keras.Input((2,))
    outputs = keras.layers.Softmax()(inputs) if softmax else inputs
    model = keras.Model(inputs, outputs)
    loss = losses.labels_loss(from_logits=not softmax, label_smoothing=0.1)
    got = float(loss(np.array([1]), model(LOGITS)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert isinstance(losses.labels_loss(True, 0.0), keras.losses.SparseCategoricalCrossentropy)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not below the number of classes"):
        loss(np.array([2]), LOGITS)


def test_the_distiller_smooths_the_labels_term_only(teacher, student):
    x, y = tiny_data(16)
    terms = {}
    for eps in (0.0, 0.2):
        d = fitnets_tf.Distiller(teacher, student, label_smoothing=eps)
        d.compile(optimizer=keras.optimizers.SGD(0.0), phase="kd")
        terms[eps] = d.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    logits = student(x, training=False)
    smoothed = float(np.mean(losses.cross_entropy(y, logits, 0.2)))
    assert terms[0.2]["ce_loss"] == pytest.approx(smoothed, rel=1e-5)
    plain = float(np.mean(losses.cross_entropy(y, logits)))
    assert terms[0.0]["ce_loss"] == pytest.approx(plain, rel=1e-5)
    assert abs(smoothed - plain) > 1e-4  # near-uniform untrained logits: smoothing moves little
    assert terms[0.2]["kd_loss"] == pytest.approx(terms[0.0]["kd_loss"], rel=1e-6)
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ConfigError, match="label_smoothing must be in \\[0, 1\\)"):
            fitnets_tf.Distiller(teacher, student, label_smoothing=bad)


def test_the_students_stages_smooth_and_the_teachers_does_not():
    config = ExperimentConfig().with_values(label_smoothing=0.1, ema_momentum=0.99,
                                            global_clipnorm=2.0)  # fmt: skip
    students, teacher = config.hyperparameters(), config.hyperparameters(teacher=True)
    assert students.label_smoothing == 0.1 and teacher.label_smoothing == 0.0
    assert students.ema_momentum == teacher.ema_momentum == 0.99
    assert students.stage_one().global_clipnorm == teacher.global_clipnorm == 2.0
    own = stages.Hyperparameters(ema_momentum=0.9, hints_optimizer="adam").stage_one()
    assert own.optimizer().use_ema  # stage 1's optimizer of its own averages too
    d = stages.make_distiller(tiny_model("t", 6, 0), tiny_model("s", 4, 1), students)
    assert d.label_smoothing == 0.1


# -- EMA and clipping --------------------------------------------------------------------------


def test_optimizers_are_keras_own_without_ema_or_clipping_by_default():
    plain = recipes.build_optimizer("sgd", 0.1)
    assert not plain.use_ema and plain.global_clipnorm is None and plain.clipnorm is None
    built = recipes.build_optimizer("adamw", 0.1, weight_decay=0.01, ema_momentum=0.999,
                                    global_clipnorm=1.0)  # fmt: skip
    assert built.use_ema and built.ema_momentum == 0.999 and built.global_clipnorm == 1.0
    bad_values = [(dict(ema_momentum=1.0), "ema_momentum must be in"),
                  (dict(global_clipnorm=-1.0), "global_clipnorm must be a finite")]
    for bad, message in bad_values:
        with pytest.raises(ValueError, match=message):
            recipes.build_optimizer("sgd", 0.1, **bad)


def test_global_clipnorm_scales_all_gradients_together():
    # Gradient (3, 4) over two variables: norm 5, clipped to 1: the step is (0.6, 0.8).
    a, b = keras.Variable(0.0), keras.Variable(0.0)
    optimizer = stages.Hyperparameters(optimizer_name="sgd", learning_rate=1.0,
                                       global_clipnorm=1.0).optimizer()  # fmt: skip
    optimizer.apply_gradients([(tf.constant(3.0), a), (tf.constant(4.0), b)])
    assert (float(a), float(b)) == pytest.approx((-0.6, -0.8), rel=1e-6)


HP = stages.Hyperparameters(learning_rate=0.1, optimizer_name="sgd", momentum=0.9,
                            ema_momentum=0.5, label_smoothing=0.1)  # fmt: skip


def _fit(model, workdir, initial_epoch=0, kill_after=None):
    stage_dir = RunLayout(workdir).stage("teacher").root
    stage_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [resume.StageCheckpoint(resume.RunState(workdir, {}), "teacher", stage_dir,
                                        log=lambda m: None)]  # fmt: skip
    callbacks += [KillAfter(kill_after)] if kill_after else []
    stages.fit_labels(model, tiny_dataset(), epochs=3, initial_epoch=initial_epoch, hparams=HP,
                      callbacks=callbacks, verbose=0, steps_per_epoch=STEPS)  # fmt: skip


def _averages(model):
    return [v.numpy() for v in model.optimizer._model_variables_moving_average]


def test_a_resumed_stage_restores_the_averages_and_ends_with_them(tmp_path):
    tf.config.experimental.enable_op_determinism()
    straight = tiny_model("m", 4, 0)
    _fit(straight, tmp_path / "a")
    with pytest.raises(Killed):
        _fit(tiny_model("m", 4, 0), tmp_path / "b", kill_after=2)
    resumed = tiny_model("m", 4, 7)  # other weights: the checkpoint restores them and the averages
    _fit(resumed, tmp_path / "b", initial_epoch=2)
    for a, b in zip(_averages(straight), _averages(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # fit ended with the weights replaced by their averages, in both runs.
    for w, avg in zip(resumed.trainable_weights, _averages(resumed), strict=True):
        np.testing.assert_array_equal(w.numpy(), avg)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_stage_resumed_mid_epoch_trains_on_from_the_weights_not_their_averages():
    # fit_from_step's first fit ends inside the training: Keras finalized the weights there
    # (the averages put in their place), and the second fit trained on from the averages.
    tf.config.experimental.enable_op_determinism()
    straight, split = tiny_model("m", 4, 0), tiny_model("m", 4, 0)
    for model in (straight, split):
        model.compile(optimizer=HP.optimizer(), loss=losses.labels_loss(True, 0.1))
    straight.fit(tiny_dataset(), epochs=2, verbose=0, shuffle=False)
    mid_epoch.fit_from_step(split, tiny_dataset(), epochs=2, initial_epoch=0, initial_step=0,
                            callbacks=[], verbose=0, shuffle=False)  # fmt: skip
    for a, b in zip(straight.get_weights(), split.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert "finalize_variable_values" not in vars(split.optimizer)  # the method is back


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [(dict(label_smoothing=1.0), "label_smoothing must be in"),
     (dict(ema_momentum=1.0), "ema_momentum must be in"),
     (dict(global_clipnorm=-1.0), "global_clipnorm"),
     (dict(ema_momentum=0.99, early_stopping_patience=3), "restores the trained weights"),
     (dict(flip="on"), "--flip=on decides --augment's flips, and --augment is off"),
     (dict(flip="sometimes"), "flip")],
)  # fmt: skip
def test_config_refuses_what_would_fail_or_do_nothing(values, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig().with_values(**values).validate()


def test_a_run_recorded_before_these_options_is_the_same_configuration(tmp_path):
    today = ExperimentConfig().fingerprint()
    new = ("label_smoothing", "ema_momentum", "global_clipnorm", "flip")
    older = {k: v for k, v in today.items() if k not in new}
    check_same_config(older, today, tmp_path)  # no difference: the defaults are what it used
    with pytest.raises(fitnets_tf.errors.ConfigMismatchError, match="label_smoothing: 0.0 there"):
        check_same_config(older, ExperimentConfig().with_values(label_smoothing=0.1)
                          .fingerprint(), tmp_path)  # fmt: skip


# -- flips of the user's images ----------------------------------------------------------------


def _npz(tmp_path, n=40):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=images, y_train=np.arange(n) % 3,
             x_test=images[:8], y_test=np.arange(8) % 3)  # fmt: skip
    return f"npz:{tmp_path / 'd.npz'}"


def test_flip_overrides_the_datasets_rule(tmp_path):
    name = _npz(tmp_path)
    assert data.load(name, augment=True).augmentation == dict(crop_padding=8, flip=False)
    assert data.load(name, augment=True, flip=True).augmentation["flip"] is True
    # Crops off, flips on: still augmenting (the teacher's cache must know it).
    assert data.load(name, augment=True, crop_padding=0, flip=True).augmenting
    assert data.load("synthetic", augment=True, flip=False, limit=16).augmentation["flip"] is False


def test_the_teacher_cache_gives_each_flipped_user_image_the_logits_of_its_mirror(tmp_path):
    datasets = data.load(_npz(tmp_path), augment=True, crop_padding=0, flip=True, batch_size=12)
    teacher = tiny_model("teacher", 6, 0, pieces=3)
    train, _ = teacher_cache.cache_datasets(teacher, datasets)
    images, _ = datasets.train_examples
    flipped = 0
    for inputs, _ in train:
        views = inputs["images"].numpy()
        # crop_padding=0: each view is a training image or its mirror, whose logits it carries.
        np.testing.assert_allclose(inputs["teacher_logits"], teacher(views, training=False),
                                   atol=1e-5)  # fmt: skip
        flipped += sum(not np.equal(images, v).all(axis=(1, 2, 3)).any() for v in views)
    assert 0 < flipped < datasets.num_train_examples  # both ways occur
