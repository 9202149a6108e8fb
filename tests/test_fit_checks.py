"""Distiller.fit's checks and guards (fitnets_tf.fit_checks), as a notebook user meets them.

The multi-replica ones (a short last batch, clipping on 2 replicas) run in
distribute_check.py's process: see test_distribute.py.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import quadrant_teacher, tiny_dataset, tiny_model
from keras import ops

import fitnets_tf
from fitnets_tf import callbacks, first_batches, fit_checks
from fitnets_tf.errors import ConfigError


def _distiller(teacher=None):
    teacher = teacher or tiny_model("teacher", width=6, seed=0, pieces=3)
    return fitnets_tf.Distiller(teacher, tiny_model("student", width=4, seed=1))


class _StudentAtEpochEnd(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.student.get_weights())


@pytest.mark.parametrize("kind", ["keras", "fitnets_tf"])
def test_early_stopping_restores_the_best_student_and_leaves_lambda_where_training_did(kind):
    # Judged by λ (annealed 4 -> 2.5 -> 1), epoch 1 is the best. Every weight was restored,
    # λ and τ too: λ went back to 4, where a later fit without LambdaAnnealing then started.
    d = _distiller()
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    early = (keras.callbacks if kind == "keras" else callbacks).EarlyStopping(
        monitor="kd_lambda", mode="max", patience=5, restore_best_weights=True
    )
    seen = _StudentAtEpochEnd()
    given = keras.callbacks.CallbackList([callbacks.LambdaAnnealing(4.0, 1.0, epochs=2), early,
                                          seen], add_history=True, model=d)  # fmt: skip
    listed = list(given.callbacks)
    d.fit(tiny_dataset(), epochs=3, verbose=0, callbacks=given)
    assert early.best_epoch == 0
    for restored, best in zip(d.student.get_weights(), seen.weights[0], strict=True):
        np.testing.assert_array_equal(restored, best)  # the student's best epoch
    assert not np.array_equal(seen.weights[0][0], seen.weights[-1][0])  # (it did change)
    assert float(d.kd_lambda) == 1.0 and float(d.temperature) == 3.0  # where training left them
    assert given.callbacks == listed  # the caller's list as given
    again = d.fit(tiny_dataset(), epochs=1, verbose=0)
    assert again.history["kd_lambda"] == [1.0]


def test_ema_with_early_stopping_that_restores_is_refused_before_training():
    # Keras' fit puts the average in place, then EarlyStopping's on_train_end restores the
    # trained weights of its best epoch over it: the average was discarded without a word.
    for early in (keras.callbacks.EarlyStopping(monitor="loss", restore_best_weights=True),
                  callbacks.EarlyStopping.for_stage("fitnet/kd", patience=2)):  # fmt: skip
        d = _distiller()
        d.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9))
        with pytest.raises(
            ConfigError,
            match=r"use_ema=True: early stopping watches and "
            r"restores the trained weights, not their "
            r"average.*restore_best_weights=False",
        ):
            d.fit(tiny_dataset(), epochs=2, verbose=0, callbacks=[early])
        assert int(d.optimizer.iterations) == 0
    # Stopping alone keeps the average; without EMA, restoring is what was asked.
    stop_only = keras.callbacks.EarlyStopping(monitor="loss", restore_best_weights=False)
    d.fit(tiny_dataset(), epochs=1, verbose=0, callbacks=[stop_only])
    d.compile(optimizer=keras.optimizers.SGD(0.1))
    d.fit(tiny_dataset(), epochs=1, verbose=0, callbacks=[early])


class _SubclassedTeacher(keras.Model):
    def __init__(self, softmax: bool):
        super().__init__(name="subclassed_teacher")
        self.softmax = softmax
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.logits = keras.layers.Dense(3)

    def call(self, x, training=None):
        logits = self.logits(self.pool(x))
        return keras.ops.softmax(logits) if self.softmax else logits


def _unbuilt_sequential(last):
    return keras.Sequential([keras.layers.GlobalAveragePooling2D(), *last], name="seq_teacher")


@pytest.mark.parametrize("teacher, fix", [
    (lambda: _SubclassedTeacher(softmax=True), "return the logits from its call"),
    (lambda: _unbuilt_sequential([keras.layers.Dense(3, activation="softmax")]),
     r"start it with keras.Input\(shape\)"),
    (lambda: _unbuilt_sequential([keras.layers.Dense(3), keras.layers.Activation("softmax")]),
     r"start it with keras.Input\(shape\)"),
])  # fmt: skip
def test_a_teacher_whose_softmax_is_not_in_a_graph_is_refused_at_its_first_batch(teacher, fix):
    # Its probabilities were taken as logits: soft targets near uniform, trained on silently.
    d = _distiller(teacher())
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    before = d.student.get_weights()
    with pytest.raises(
        ConfigError,
        match=r"outputs probabilities: every row of its outputs on "
        rf"the first batch is in \[0, 1\] and sums to 1.*{fix}",
    ):
        d.fit(tiny_dataset(), epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 0
    for a, b in zip(before, d.student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_subclassed_teacher_of_logits_is_checked_once(monkeypatch):
    checks = []
    real = first_batches.check_teacher_logits
    monkeypatch.setattr(first_batches, "check_teacher_logits",
                        lambda *a: checks.append(1) or real(*a))  # fmt: skip
    d = _distiller(_SubclassedTeacher(softmax=False))
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    assert len(checks) == 1


def test_fit_before_compile_names_compile_and_its_phases():
    # It failed inside the callbacks' check with "AttributeError: 'Distiller' object has no
    # attribute 'optimizer'", where a Keras model says to call compile().
    d = _distiller()
    with pytest.raises(ValueError, match=r"compile\(\) before fit.*phase='hints'.*phase='kd'"):
        d.fit(tiny_dataset(), epochs=1, verbose=0)


def _brightness_teacher(rescales: bool = False, normalized: bool = False) -> keras.Model:
    """Class k of 4 by the mean of a (4, 4, 1) image as it was trained: pixels / 255 in
    [k/4, (k+1)/4); ``rescales``: raw pixels, through a first Rescaling(1/255); ``normalized``:
    behind torchvision's Normalize(0.5, 0.2915), the mean and std of :func:`_brightness`."""
    first = [keras.layers.Rescaling(1 / 255)] if rescales else []
    head = keras.layers.Dense(4)
    model = keras.Sequential([keras.Input((4, 4, 1)), *first,
                              keras.layers.GlobalAveragePooling2D(), head])  # fmt: skip
    bias = [0.0, 85.7, 85.7, 0] if normalized else [0.0, -25, -75, -150]
    head.set_weights([np.array([[0.0, 100, 200, 300]]), np.array(bias)])
    return model


def _brightness(scale: float = 1.0, mean: float = 0.0, std: float = 1.0):
    """32 images, 8 of each class (mean pixel / 255 of 0.1, 0.4, 0.6, 0.9), in one batch.

    Each differs from the others of its class in one pixel, 0.0005 brighter in the two darker
    classes and darker in the two brighter ones: the check counts copies once, and the range
    (0.1 to 0.9), mean (0.5) and std (0.2915) of the images stay as the messages pin them."""
    means = np.repeat([0.1, 0.4, 0.6, 0.9], 8).astype("float32")
    images = np.ones((32, 16), "float32") * means[:, None]
    images[np.arange(32), np.arange(32) % 8] += np.repeat([1, 1, -1, -1], 8) * 0.0005
    images = (images.reshape(32, 4, 4, 1) - mean) / std
    return tf.data.Dataset.from_tensor_slices((images * scale, np.repeat(np.arange(4), 8))).batch(32)


def _brightness_distiller(teacher, **kwargs):
    student = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(4)])  # fmt: skip
    d = fitnets_tf.Distiller(teacher, student, **kwargs)
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    return d


@pytest.mark.parametrize(("teacher", "fed", "message"), [
    # Trained on pixels / 255, fed raw pixels: every image is white to it, class 3.
    (dict(), dict(scale=255.0), r"right on 0.2500 of the first 32 images as fit is "
     r"given them \(values above 1, taken as raw pixels in \[0, 255\]\), but on 1.0000 of the "
     r"same images as pixels / 255: .* dataset.map\(lambda x, y: \(x / 255, y\)\)"),
    # Its own Rescaling(1/255) in front, fed pixels / 255: every image is black, class 0.
    (dict(rescales=True), dict(), r"right on 0.2500 .* \(values in \[0, 1\], taken as pixels "
     r"/ 255\), but on 1.0000 of the same images as raw pixels in \[0, 255\]: .* "
     r"\(x \* 255, y\)"),
    # Trained behind a Normalize, fed pixels / 255: the two darker classes are called class 2.
    (dict(normalized=True), dict(), r"right on 0.5000 .* but on 1.0000 of the same images "
     r"standardised per channel by their own mean \(0.5000\) and std \(0.2915\), .* "
     r"\(\(x - \[0.5000\]\) / \[0.2915\], y\)"),
])  # fmt: skip
def test_a_teacher_fed_other_than_it_was_trained_on_is_refused_at_the_first_batch(
    teacher, fed, message
):
    # A Python user's fit distilled it silently: the CLI alone checked the teacher's scaling.
    d = _brightness_distiller(_brightness_teacher(**teacher))
    with pytest.raises(ConfigError, match=message + r".* check_teacher=False\) skips this check"):
        d.fit(_brightness(**fed), epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 0  # before any training


@pytest.mark.parametrize(("teacher", "fed"), [
    (dict(), dict()), (dict(rescales=True), dict(scale=255.0)),
    (dict(normalized=True), dict(mean=0.5, std=0.2915)),  # standardised: its range checked
])  # fmt: skip
def test_a_teacher_fed_as_it_was_trained_or_unchecked_distils(teacher, fed):
    d = _brightness_distiller(_brightness_teacher(**teacher))
    d.fit(_brightness(**fed), epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 1
    d = _brightness_distiller(_brightness_teacher(), check_teacher=False)
    d.fit(_brightness(scale=255.0), epochs=1, verbose=0)  # wrong, but told not to check
    assert int(d.optimizer.iterations) == 1


def _hint_distiller(teacher, **kwargs):
    """A stage-1 Distiller of :func:`_brightness_teacher`: its pooled mean hints a Dense."""
    student = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(2, name="guided"), keras.layers.Dense(4)])
    d = fitnets_tf.Distiller(teacher, student, hint_layer=teacher.layers[-2].name,
                             guided_layer="guided", regressor="linear", **kwargs)  # fmt: skip
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="hints")
    return d


def test_batches_too_small_to_refuse_alone_are_read_together_up_to_the_checks_images():
    # Batches of 8: 8 images one scaling gets right and the other wrong have odds 0.5^8 =
    # 0.004, above 1e-4, and the first batch alone could never be refused. The check reads
    # batches up to its 512 images (here the 32 there are), from the one start of the pipeline
    # Keras makes to build: 2 starts for a 1-epoch fit, as before.
    starts = []

    def images():
        starts.append(1)
        yield from _brightness(scale=255.0).unbatch().as_numpy_iterator()

    signature = (tf.TensorSpec((4, 4, 1), tf.float32), tf.TensorSpec((), tf.int64))
    dataset = tf.data.Dataset.from_generator(images, output_signature=signature).batch(8)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(4))  # Keras' 4 steps
    message = (r"right on 0.2500 of the first 32 images as fit is given them \(values above 1, "
               r"taken as raw pixels in \[0, 255\]\), but on 1.0000 of the same images as "
               r"pixels / 255")  # fmt: skip
    d = _brightness_distiller(_brightness_teacher())
    with pytest.raises(ConfigError, match=message):
        d.fit(dataset, epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 0 and len(starts) == 1  # no training start
    x, y = next(iter(_brightness(scale=255.0)))
    d = _brightness_distiller(_brightness_teacher())
    with pytest.raises(ConfigError, match=message):  # arrays, batched by fit
        d.fit(x.numpy(), y.numpy(), batch_size=8, epochs=1, verbose=0)
    d = _brightness_distiller(_brightness_teacher())
    starts.clear()
    d.fit(dataset.map(lambda x, y: (x / 255, y)), epochs=1, verbose=0)  # fed right: trains
    assert int(d.optimizer.iterations) == 4 and len(starts) == 2


def test_a_hint_stage_is_checked_with_labels_and_says_once_it_cannot_without(capsys):
    # A hint stage given images alone trained a whole stage 1 on a teacher fed raw pixels
    # without a word: the check waited for stage 2's labels.
    d = _hint_distiller(_brightness_teacher())
    with pytest.raises(ConfigError, match=r"right on 0.2500 of the first 32 images"):
        d.fit(_brightness(scale=255.0), epochs=1, verbose=0)  # labels: the hint stage ignores
    assert int(d.optimizer.iterations) == 0
    d = _hint_distiller(_brightness_teacher())
    images = _brightness(scale=255.0).map(lambda x, y: x)
    d.fit(images, epochs=1, verbose=0)
    d.fit(images, epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert out.count("Distiller.fit checks the teacher on images with labels") == 1
    assert "this hint stage's images come without labels: it trains unchecked" in out
    assert "give fit (images, labels) here too" in out


def test_a_hint_stage_without_labels_reads_one_batch_for_the_check():
    # Images alone cannot be checked: the check read batches up to its 512 images (every
    # batch of a small epoch) before it found the first had no labels, at every fit.
    read = []

    def images():
        for x in _brightness(scale=255.0).map(lambda x, y: x).unbatch().as_numpy_iterator():
            read.append(1)
            yield x

    dataset = tf.data.Dataset.from_generator(
        images, output_signature=tf.TensorSpec((4, 4, 1), tf.float32)).batch(8)  # fmt: skip
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(4))
    _hint_distiller(_brightness_teacher()).fit(dataset, epochs=1, verbose=0)
    # 8 images for the check's one batch (tf.data may read ahead a batch), 32 to train.
    assert 32 + 8 <= len(read) <= 32 + 16


def test_a_python_generator_loses_no_batch_to_the_check(capsys):
    # A generator does not start again: the check reads only the first batch, which Keras
    # keeps for training (first_batches tells a generator by its Keras adapter's name). Read
    # more, and the epoch would run out of batches.
    x, y = (v.numpy() for v in next(iter(_brightness())))
    given = []

    def batches():
        for i in range(0, 32, 8):
            given.append(i)
            yield x[i:i + 8], y[i:i + 8]

    d = _brightness_distiller(_brightness_teacher())
    d.fit(batches(), steps_per_epoch=4, epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 4 and given == [0, 8, 16, 24]
    # 8 images, too few to refuse: said, with how a generator's are checked.
    assert ("hold 8 distinct labelled images" in (out := capsys.readouterr().out)
            and "the first batch alone of a Python generator: yield batches of 14 or more" in out)


def test_standardised_images_are_checked_from_the_pixels_their_range_recovers():
    # Standardised by Normalize(0.5, 0.2915) for a teacher trained on pixels / 255: images
    # with negative values passed unchecked, whatever the teacher knew. Their range per channel
    # (-1.3722 to 1.3722) is taken as the pixels' (0 to 1): x * 0.3644 + 0.5000.
    d = _brightness_distiller(_brightness_teacher())
    with pytest.raises(ConfigError, match=(
        r"right on 0.5000 of the first 32 images as fit is given them \(negative values, "
        r"taken as standardised: x \* 0.3644 \+ 0.5000 spans \[0, 1\] like pixels / 255\), "
        r"but on 1.0000 of the same images as pixels / 255: .* "
        r"dataset.map\(lambda x, y: \(\(x \* 0.3644 \+ 0.5000\), y\)\)")):  # fmt: skip
        d.fit(_brightness(mean=0.5, std=0.2915), epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 0


def test_a_teacher_with_another_class_order_is_refused_with_the_labels_map():
    # Labels one class on (label k is the teacher's class k - 1), as a PyTorch ImageFolder's
    # sorted order gives another: it was distilled without a word.
    d = _brightness_distiller(_brightness_teacher())
    shifted = _brightness().map(lambda x, y: (x, (y + 1) % 4))
    with pytest.raises(ConfigError, match=(
        r"calls classes by other labels than this data's: on the first images \(accuracy "
        r"0.0000\), label 0 is its class 3 for 8 of 8 images; .* relabel the data in the "
        r"teacher's: dataset.map\(lambda x, y: \(x, tf.gather\(\[3, 0, 1, 2\], y\)\)\) "
        r"\(a PyTorch ImageFolder's .* Distiller\(..., check_teacher=False\) skips")):
        d.fit(shifted, epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 0
    # One-hot labels: the map gathered the label ids from one-hot rows ("Value passed to
    # parameter 'indices' has DataType float32"). Their columns move instead, and train.
    one_hot = _brightness().map(lambda x, y: (x, tf.one_hot((y + 1) % 4, 4)))
    d = _brightness_distiller(_brightness_teacher())
    with pytest.raises(ConfigError, match=r"dataset.map\(lambda x, y: \(x, tf.gather\(y, "
                       r"\[1, 2, 3, 0\], axis=-1\)\)\)") as refused:  # fmt: skip
        d.fit(one_hot, epochs=1, verbose=0)
    fixed = one_hot.map(lambda x, y: (x, tf.gather(y, [1, 2, 3, 0], axis=-1)))
    d = _brightness_distiller(_brightness_teacher())
    d.fit(fixed, epochs=1, verbose=0)
    assert "relabel" in str(refused.value) and int(d.optimizer.iterations) == 1
    for switch in ("check_teacher", "check_scaling"):  # the older name, kept
        d = _brightness_distiller(_brightness_teacher(), **{switch: False})
        d.fit(shifted, epochs=1, verbose=0)
        assert int(d.optimizer.iterations) == 1


def test_a_teacher_near_chance_is_warned_of_once(capsys):
    # One answer, class 0, for every image: right on a quarter, as the command line warns.
    teacher = _brightness_teacher()
    teacher.layers[-1].set_weights([np.zeros((1, 4)), np.array([1.0, 0, 0, 0])])
    d = _brightness_distiller(teacher)
    d.fit(_brightness(), epochs=1, verbose=0)
    d.fit(_brightness(), epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert out.count("warning: the teacher 'sequential") == 1
    assert ("is right on 0.2500 of the first 32 images fit is given (chance 0.2500), so it has "
            "little to teach. Was it trained with this data's class order and on images scaled "
            "the same way?") in out
    assert int(d.optimizer.iterations) == 2


def test_a_teacher_of_feature_vectors_is_checked_for_its_class_order_not_for_scaling():
    # (batch, features) inputs failed inside the scaling check with numpy's "AxisError: axis
    # 2 is out of bounds for array of dimension 2": it reads channels of images.
    def mlp(name):
        inputs = keras.Input((20,))
        return keras.Model(inputs, keras.layers.Dense(3)(inputs), name=name)

    x, y = np.random.RandomState(0).rand(64, 20).astype("float32"), np.arange(64) % 3
    for features in (x, x - 0.5):
        d = fitnets_tf.Distiller(mlp("teacher"), mlp("student"))
        d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
        d.fit(features, y, batch_size=32, epochs=1, verbose=0)
        assert int(d.optimizer.iterations) == 2


def test_an_empty_dataset_is_left_to_keras_to_say():
    # The teacher's checks read the first batch there was none of: a bare StopIteration.
    empty = tiny_dataset().take(0)
    d = _distiller()
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    with pytest.warns(UserWarning, match="Your input ran out of data"):
        d.fit(empty, epochs=1, verbose=0)


def test_keras_average_starts_at_the_weights_after_the_first_step():
    # The maths short_average warns by: w = 1, 2, 3 after three steps of SGD(1) on a gradient
    # of -1; the average 1, then 0.5·1 + 0.5·2 = 1.5, then 0.5·1.5 + 0.5·3 = 2.25, in which
    # the first step's weights keep 0.5^(3 - 1) = 0.25.
    w = keras.Variable(0.0)
    optimizer = keras.optimizers.SGD(1.0, use_ema=True, ema_momentum=0.5)
    for _ in range(3):
        optimizer.apply([keras.ops.convert_to_tensor(-1.0)], [w])
    optimizer.finalize_variable_values([w])
    assert float(w) == 2.25


def test_an_average_over_too_few_steps_names_its_share_and_the_fix():
    assert fit_checks.short_average(0.99, 20) == (
        "ema_momentum=0.99 over a stage of 20 steps: the average the stage ends with keeps "
        "82.6% of the weights after its first step (momentum^(steps - 1)), more than 1%. Train "
        "it at least 460 steps, or lower ema_momentum to at most 0.7847 (0: no average).")
    assert "keeps 1.0% " in fit_checks.short_average(0.99, 459)  # 0.99^458 = 0.01002
    assert fit_checks.short_average(0.99, 460) is None  # 0.99^459 = 0.00992
    assert fit_checks.short_average(0.7847, 20) is None and fit_checks.short_average(0.0, 1) is None


def test_a_distiller_stage_too_short_for_its_average_is_told_before_training(capsys):
    # 4 batches × 2 epochs = 8 steps at momentum 0.9: the student it ended with was 48% the
    # weights after its first step (0.9^7), without a word.
    d = _distiller()
    d.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9), phase="kd")

    class Trained(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            print("training begins")

    d.fit(tiny_dataset(), epochs=2, verbose=0, callbacks=[Trained()])
    out = capsys.readouterr().out
    assert "ema_momentum=0.9 over a stage of 8 steps: the average the stage ends with keeps " \
        "47.8% of the weights" in out
    assert out.index("over a stage of") < out.index("training begins")
    d.fit(tiny_dataset(), epochs=1, verbose=0)  # the same average, 4 steps on: 12
    assert "over a stage of 12 steps" in capsys.readouterr().out


def test_the_steps_of_an_average_are_the_stages():
    told = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit_checks, "note", told.append)
        optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9)
        # A stage resumed at its epoch 3 restores its average later: its 5 epochs of 4 batches.
        fit_checks.check_average_steps(optimizer, dict(x=tiny_dataset(), epochs=5,
                                                       initial_epoch=3))  # fmt: skip
        # Arrays: 30 of 40 examples trained on, in batches of 8; steps_per_epoch when given.
        x = np.zeros((40, 2), "float32")
        fit_checks.check_average_steps(optimizer, dict(x=x, validation_split=0.25, batch_size=8))
        fit_checks.check_average_steps(optimizer, dict(x=x, epochs=3, steps_per_epoch=2))
        fit_checks.check_average_steps(keras.optimizers.SGD(0.1), dict(x=x))  # no average
        fit_checks.check_average_steps(optimizer, dict(x=x, epochs=100))  # 0.9^499: nothing
    assert [message.split(":")[0] for message in told] == [
        f"ema_momentum=0.9 over a stage of {n} steps" for n in (20, 4, 6)]


def test_a_labels_stage_too_short_for_its_average_is_told():
    # The teacher's and scratch's stages train through Keras' fit, not the Distiller's.
    from fitnets_tf import stages

    told = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit_checks, "note", told.append)
        stages.fit_labels(tiny_model("m", width=4, seed=0), tiny_dataset(), epochs=2,
                          hparams=stages.Hyperparameters(ema_momentum=0.999), verbose=0)  # fmt: skip
    assert len(told) == 1 and "ema_momentum=0.999 over a stage of 8 steps" in told[0]


def test_an_average_of_momentum_one_is_the_first_steps_weights_for_good():
    assert fit_checks.short_average(1.0, 10**6) == (
        "ema_momentum=1: the average the stage ends with is its weights after the first step, "
        "however long it trains. Give a momentum below 1.")


def test_steps_not_a_multiple_of_steps_per_execution_are_refused_before_training():
    # Keras 3.15 runs whole executions: steps_per_epoch=3 under steps_per_execution=2 trained 4
    # steps an epoch, silently (a schedule, λ by steps and an EMA's count planned for 3).
    d = _distiller()
    d.compile(optimizer="sgd", phase="kd", steps_per_execution=2)
    repeated = tiny_dataset(batch_size=8, n=32).repeat()
    with pytest.raises(ConfigError, match=r"steps_per_epoch=3 .* steps_per_execution=2.*4 steps"):
        d.fit(repeated, steps_per_epoch=3, epochs=2, verbose=0)
    # Validation too: validation_steps=3 averaged the losses of 4 batches.
    with pytest.raises(ConfigError, match=r"validation_steps=3 is not a multiple"):
        d.fit(repeated, steps_per_epoch=4, validation_data=repeated, validation_steps=3)
    assert int(d.optimizer.iterations.numpy()) == 0
    d.fit(repeated, steps_per_epoch=4, epochs=2, verbose=0)
    assert int(d.optimizer.iterations.numpy()) == 8
    # A finite dataset ends the last execution itself: 3 batches an epoch are 3 steps.
    d.fit(tiny_dataset(batch_size=8, n=24), epochs=2, verbose=0)
    assert int(d.optimizer.iterations.numpy()) == 8 + 6


@pytest.mark.parametrize("method", ["evaluate", "predict"])
def test_evaluate_and_predict_steps_not_a_multiple_of_steps_per_execution_are_refused(method):
    # The same rule as fit's: evaluate(steps=3) under steps_per_execution=2 averaged 4
    # batches, and predict(steps=3) returned 32 rows for 24 images, silently.
    d = _distiller()
    d.compile(optimizer="sgd", phase="kd", steps_per_execution=2)
    repeated = tiny_dataset(batch_size=8, n=32).repeat()
    if method == "predict":
        repeated = repeated.map(lambda x, y: x)
    run = getattr(d, method)
    with pytest.raises(ConfigError, match=r"^steps=3 is not a multiple of steps_per_execution=2: "
                                          r"Keras runs whole executions, so 4 steps would run"):
        run(repeated, steps=3, verbose=0)
    with pytest.raises(ConfigError, match=r"^steps=3 is not a multiple"):
        # Positionally too, as keras.Model's signatures take it.
        run(repeated, *((None, 0, 3) if method == "predict" else (None, None, 0, None, 3)))
    done = run(repeated, steps=4, verbose=0)
    if method == "predict":
        assert done.shape == (32, 3)
    # A finite dataset ends the last execution itself: 3 batches are 3 steps.
    finite = tiny_dataset(batch_size=8, n=24)
    if method == "predict":
        assert d.predict(finite.map(lambda x, y: x), verbose=0).shape == (24, 3)
    else:
        d.evaluate(finite, verbose=0)


def _two_class_teacher() -> keras.Model:
    """Class 1 for a (4, 4, 1) image of mean above 0.5, class 0 below."""
    inputs = keras.Input((4, 4, 1))
    head = keras.layers.Dense(2)
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(inputs)))
    head.set_weights([np.array([[-10.0, 10.0]]), np.array([5.0, -5.0])])
    return model


def test_a_good_teacher_of_two_classes_is_not_called_near_chance(capsys):
    # "Near chance" was under twice chance: 1.0 with two classes, so a teacher right on 0.875
    # of its images was warned of as having "little to teach". Right on 0.625 it is (under
    # 0.75, halfway from chance to 1).
    means = np.linspace(0.05, 0.95, 32).astype("float32")
    x = np.ones((32, 4, 4, 1), "float32") * means[:, None, None, None]
    y = (means > 0.5).astype("int64")
    y[[0, 1, 30, 31]] = 1 - y[[0, 1, 30, 31]]  # 28 of 32 right, 16 of each label
    student = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(2)])  # fmt: skip
    d = fitnets_tf.Distiller(_two_class_teacher(), student)
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""
    y[[2, 3, 4, 5, 26, 27, 28, 29]] = 1 - y[[2, 3, 4, 5, 26, 27, 28, 29]]  # 20 right
    d = fitnets_tf.Distiller(_two_class_teacher(), student)
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert "is right on 0.6250 of the first 32 images fit is given (chance 0.5000)" in (
        capsys.readouterr().out)


def test_evaluate_and_validation_data_do_not_take_fits_check_of_the_teacher(capsys):
    # Keras' evaluate (and fit's validation, through it) starts its iterator as fit does: the
    # check meant for fit's first images ran there, said "as fit is given them" of evaluate's
    # images, was then done for good, and a hint stage's validation said that its images
    # "come without labels: it trains unchecked".
    d = _brightness_distiller(_brightness_teacher())
    d.evaluate(_brightness(scale=255.0), verbose=0)  # wrongly fed: not fit's check to refuse
    with pytest.raises(ConfigError, match=r"right on 0.2500 of the first 32 images as fit"):
        d.fit(_brightness(scale=255.0), epochs=1, verbose=0)
    d = _hint_distiller(_brightness_teacher())
    d.evaluate(_brightness().map(lambda x, y: x), verbose=0)
    assert capsys.readouterr().out == ""
    # Images alone to train on, labelled validation images: refused after an epoch of
    # training, at the validation, as fit's first images. Now the check waits, as it says.
    d.fit(_brightness().map(lambda x, y: x), validation_data=_brightness(scale=255.0),
          epochs=2, verbose=0)  # fmt: skip
    assert int(d.optimizer.iterations) == 2
    assert capsys.readouterr().out.count("this hint stage's images come without labels") == 1


def _quadrants(scale: float) -> tf.data.Dataset:
    """32 images, 8 of each class: its quadrant 0.9 (as pixels / 255), the others 0.1. Each
    differs from the others of its class in two pixels of its class's quadrant, 0.01 * (1 +
    i // 4) apart and of the same mean: the check counts copies once, the logits stay."""
    images = np.full((32, 4, 4, 1), 0.1, "float32")
    for i in range(32):
        row, col = divmod(i % 4, 2)
        images[i, 2 * row:2 * row + 2, 2 * col:2 * col + 2] = 0.9
        images[i, 2 * row, 2 * col] += 0.005 * (1 + i // 4)
        images[i, 2 * row + 1, 2 * col + 1] -= 0.005 * (1 + i // 4)
    return tf.data.Dataset.from_tensor_slices((images * scale, np.arange(32) % 4)).batch(32)


def test_a_scale_free_teacher_fed_raw_pixels_is_warned_of_its_one_hot_soft_targets(capsys):
    # Trained on pixels / 255 (logits 5 times the quadrants' means: 4.0 apart), fed raw pixels:
    # right on every image either way, so the sign test passed it, but its logits were 1020
    # apart and its soft targets at τ=3 one-hot: KD taught the labels alone, without a word.
    d = _brightness_distiller(quadrant_teacher(5.0))
    d.fit(_quadrants(255.0), epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert ("top two logits of the teacher 'quadrants' are 1020 apart (median) on the first 32 "
            "images as fit is given them (values above 1, taken as raw pixels in [0, 255]), 255 "
            "times as far as on the same images as pixels / 255 (4.00): at τ=3 its soft targets "
            "are near one-hot (mean top probability 1.0000; 0.5584 as pixels / 255)") in out
    assert "(here 1.0000; 1.0000 as pixels / 255)" in out
    assert "dataset.map(lambda x, y: (x / 255, y))" in out and int(d.optimizer.iterations) == 1
    # Fed as trained: pixels / 255; or raw pixels to one trained on them (logits 5 / 255 times
    # the pixels: 4.0 apart as given, 255 times closer as pixels / 255): nothing said.
    for teacher, scale in ((quadrant_teacher(5.0), 1.0), (quadrant_teacher(5.0 / 255), 255.0)):
        d = _brightness_distiller(teacher)
        d.fit(_quadrants(scale), epochs=1, verbose=0)
        assert capsys.readouterr().out == ""


def test_a_scale_free_teacher_trained_on_raw_pixels_fed_pixels_over_255_is_warned_of(capsys):
    # Trained on raw pixels (logits 5 / 255 times the quadrants' means), fed pixels / 255:
    # right on every image either way, but its logits were 0.016 apart and its soft targets at
    # τ=3 near uniform: KD taught nearly nothing, without a word.
    d = _brightness_distiller(quadrant_teacher(5.0 / 255))
    d.fit(_quadrants(1.0), epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert ("top two logits of the teacher 'quadrants' are 0.016 apart (median) on the first 32 "
            "images as fit is given them (values in [0, 1], taken as pixels / 255), 255 times "
            "closer than on the same images as raw pixels (4.00): at τ=3 its soft targets are "
            "near uniform (mean top probability 0.2510; 0.5584 as raw pixels)") in out
    assert "(here 1.0000; 1.0000 as raw pixels)" in out
    assert "dataset.map(lambda x, y: (x * 255, y))" in out and int(d.optimizer.iterations) == 1
    # A teacher trained on pixels / 255 whose logits are close (0.4 apart) and would be only
    # 255 times as far as raw pixels: above the flat gap, nothing said.
    d = _brightness_distiller(quadrant_teacher(0.5))
    d.fit(_quadrants(1.0), epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


class _TrainingBatches(keras.layers.Layer):
    """Records the batch size of each call in training mode (batch statistics)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes = []

    def call(self, x, training=None):
        if training:
            self.sizes.append(int(x.shape[0]))
        return x


def test_the_batch_norm_check_of_a_teacher_near_chance_reads_batches_of_64():
    # Near chance, a teacher with BatchNormalization is scored once more with batch statistics
    # (lagging moving averages): all of fit's first images went through it as one training-mode
    # batch, 512 images of 224x224x3 in MobileNetV2's activations at once. 100 images here.
    recorder = _TrainingBatches()
    head = keras.layers.Dense(4)
    teacher = keras.Sequential([keras.Input((4, 4, 1)), recorder, keras.layers.BatchNormalization(),
                                keras.layers.GlobalAveragePooling2D(), head])  # fmt: skip
    head.set_weights([np.zeros((1, 4)), np.array([1.0, 0, 0, 0])])  # class 0: near chance
    x = np.random.default_rng(0).random((100, 4, 4, 1)).astype("float32")
    d = _brightness_distiller(teacher)
    d.fit(x, np.arange(100) % 4, batch_size=100, epochs=1, verbose=0)
    assert recorder.sizes == [64, 36]


class _CountedImages(keras.layers.Layer):
    """Counts the images the model is given, in graphs too."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     dtype="int64", name="count")  # fmt: skip

    def call(self, x):
        self.count.assign_add(ops.cast(ops.shape(x)[0], "int64"))
        return x


def test_the_scaling_check_runs_the_teacher_once_per_scaling_and_keeps_one_copy_at_a_time():
    # fit's check ran the teacher twice on the images as given (their logits, then again for
    # the sign test), and made every other scaling of them before trying the first: 8 copies
    # of the images at its peak, 2.5 GB for 512 images of 224x224x3.
    import tracemalloc

    counter = _CountedImages()
    inputs = keras.Input((32, 32, 3))
    teacher = keras.Model(inputs, keras.layers.Dense(10)(
        keras.layers.GlobalAveragePooling2D()(counter(inputs))))  # fmt: skip
    student = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                                keras.layers.Dense(10)])  # fmt: skip
    d = fitnets_tf.Distiller(teacher, student, check_teacher=False)
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    x = np.random.default_rng(0).random((512, 32, 32, 3)).astype("float32")
    y = np.arange(512) % 10
    from fitnets_tf import fed_teacher

    fed_teacher.check_fed_teacher(d, [(x, y)])  # traced, imported: what a first call adds
    # As given, then raw pixels, ImageNet's and the images' own standardisation: 4 x 512.
    assert int(counter.count.numpy()) == 4 * 512
    tracemalloc.start()
    try:
        fed_teacher.check_fed_teacher(d, [(x, y)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * x.nbytes  # 8.0 copies of the images before, 4.0 now


def test_copies_of_an_image_are_counted_once_by_the_teachers_check(capsys):
    # 8 images repeated (an overfit test, steps_per_epoch over a tiny dataset) were read as
    # 512: the teacher's 2 answers of label 0 as class 1, and of label 1 as class 0, counted 64
    # times each, refused it as trained with another class order "for 128 of 128 images".
    # 8 distinct images are too few for any of the tests to refuse: it trains, told that the
    # teacher was not checked.
    means = np.array([0.4, 0.41, 0.1, 0.11, 0.6, 0.61, 0.9, 0.91], "float32")
    x = np.ones((8, 4, 4, 1), "float32") * means[:, None, None, None]
    eight = tf.data.Dataset.from_tensor_slices((x, np.repeat(np.arange(4), 2)))
    d = _brightness_distiller(_brightness_teacher())
    d.fit(eight.repeat().batch(8), steps_per_epoch=2, epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 2
    assert "the first batches it read hold 8 distinct labelled images" in capsys.readouterr().out
    # Distinct images repeated: each counted once, the first 32 of the 512 read, and refused.
    d = _brightness_distiller(_brightness_teacher())
    with pytest.raises(ConfigError, match=r"right on 0.2500 of the first 32 images as fit is "
                                          r"given them \(values above 1"):  # fmt: skip
        d.fit(_brightness(scale=255.0).unbatch().repeat().batch(8), steps_per_epoch=4,
              epochs=1, verbose=0)  # fmt: skip
    assert int(d.optimizer.iterations) == 0


def test_the_teachers_check_keeps_the_first_of_each_image_and_label_in_order():
    from fitnets_tf import fed_teacher

    x = np.zeros((6, 2, 2, 1), "float32")
    x[[1, 3], 0, 0, 0] = 1.0  # images 0, 2, 4, 5 alike; 1 and 3 alike
    y = np.array([0, 1, 0, 1, 2, 0])  # image 4: the same image as 0, another label
    teacher = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(3)])  # fmt: skip
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    images, labels, one_hot, logits = fed_teacher._images_and_labels(batches, teacher)
    np.testing.assert_array_equal(images, x[[0, 1, 4]])
    np.testing.assert_array_equal(labels, [0, 1, 2])
    assert not one_hot and logits is None


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    x, y = next(iter(dataset))
    return x.numpy(), y.numpy()


class _Batches(keras.utils.PyDataset):
    """A PyDataset of ``(x, y)`` in batches of 8."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y) // 8

    def __getitem__(self, i):
        return self.x[8 * i:8 * i + 8], self.y[8 * i:8 * i + 8]


def _fit_forms(dataset) -> dict:
    """``d.fit``'s arguments giving ``dataset`` (one batch of ``(x, y)``) in each form a user
    gives data in: arrays (their images in a dict too), a dataset of 3-tuples or of dict
    inputs, a Python generator, a PyDataset."""
    x, y = _arrays(dataset)

    def generator():  # one batch of all: of a generator, the check reads the first alone
        while True:
            yield x, y

    return {
        "arrays": dict(x=x, y=y, batch_size=32),
        "dict arrays": dict(x={"images": x}, y=y, batch_size=32),
        "weighted dataset": dict(x=dataset.map(lambda x, y: (x, y, tf.ones_like(y, "float32")))),
        "dict dataset": dict(x=dataset.map(lambda x, y: ({"images": x}, y))),
        "generator": dict(x=generator(), steps_per_epoch=1),
        "pydataset": dict(x=_Batches(x, y)),
    }


_SCALED = {
    "arrays": "d.fit(x / 255, y, ...)",
    "dict arrays": "d.fit({**x, 'images': x['images'] / 255}, y, ...)",
    "weighted dataset": "dataset.map(lambda x, y, w: (x / 255, y, w))",
    "dict dataset": "dataset.map(lambda x, y: ({**x, 'images': x['images'] / 255}, y))",
    "generator": "yield (x / 255, y) for each batch from the generator",
    "pydataset": "return (x / 255, y) from the PyDataset's __getitem__",
}


@pytest.mark.parametrize("form", list(_SCALED))
def test_the_teachers_scaling_fix_is_said_in_the_form_fit_was_given(form):
    # Every fix read "dataset.map(lambda x, y: (x / 255, y))", whatever fit was given: no
    # code of a user who called d.fit(x_train, y_train) or gave a generator.
    d = _brightness_distiller(_brightness_teacher())
    with pytest.raises(ConfigError, match=r"right on 0.2500 of the first 32 images") as refused:
        d.fit(**_fit_forms(_brightness(scale=255.0))[form], epochs=1, verbose=0)
    assert f"(e.g. {_SCALED[form]})." in str(refused.value)
    assert int(d.optimizer.iterations) == 0


def _said_map(message: str):
    """The ``dataset.map`` a message says, as the function it names."""
    return eval(re.search(r"dataset\.map\((lambda .*?)\)\)", message).group(1) + ")",
                {"tf": tf, "np": np})  # fmt: skip


def test_the_said_maps_of_a_dataset_of_triples_or_of_dicts_feed_the_teacher_right():
    forms = _fit_forms(_brightness(scale=255.0))
    for form in ("weighted dataset", "dict dataset"):
        d = _brightness_distiller(_brightness_teacher())
        with pytest.raises(ConfigError) as refused:
            d.fit(forms[form]["x"], epochs=1, verbose=0)
        d = _brightness_distiller(_brightness_teacher())
        d.fit(forms[form]["x"].map(_said_map(str(refused.value))), epochs=1, verbose=0)
        assert int(d.optimizer.iterations) == 1


_RELABELLED = {
    "arrays": "y = np.take([3, 0, 1, 2], y) before d.fit(x, y, ...)",
    "dict arrays": "y = np.take([3, 0, 1, 2], y) before d.fit(x, y, ...)",
    "weighted dataset": "dataset.map(lambda x, y, w: (x, tf.gather([3, 0, 1, 2], y), w))",
    "dict dataset": "dataset.map(lambda x, y: (x, tf.gather([3, 0, 1, 2], y)))",
    "generator": "yield (x, np.take([3, 0, 1, 2], y)) for each batch from the generator",
    "pydataset": "return (x, np.take([3, 0, 1, 2], y)) from the PyDataset's __getitem__",
}


@pytest.mark.parametrize("form", list(_RELABELLED))
def test_the_teachers_relabelling_is_said_in_the_form_fit_was_given(form):
    d = _brightness_distiller(_brightness_teacher())
    shifted = _brightness().map(lambda x, y: (x, (y + 1) % 4))
    with pytest.raises(ConfigError, match="calls classes by other labels") as refused:
        d.fit(**_fit_forms(shifted)[form], epochs=1, verbose=0)
    assert f"relabel the data in the teacher's: {_RELABELLED[form]} (a PyTorch" in str(
        refused.value)
    assert int(d.optimizer.iterations) == 0


def test_relabelled_arrays_as_said_train_one_hot_too():
    x, y = _arrays(_brightness().map(lambda x, y: (x, (y + 1) % 4)))
    for labels in (y, np.eye(4)[y]):
        d = _brightness_distiller(_brightness_teacher())
        with pytest.raises(ConfigError) as refused:
            d.fit(x, labels, batch_size=32, epochs=1, verbose=0)
        said = re.search(r"y = (np.take\(.*?\)) before d.fit", str(refused.value)).group(1)
        d = _brightness_distiller(_brightness_teacher())
        d.fit(x, eval(said, {"np": np, "y": labels}), batch_size=32, epochs=1, verbose=0)
        assert int(d.optimizer.iterations) == 1
    assert said == "np.take(y, [1, 2, 3, 0], axis=-1)"


def test_a_scale_free_teacher_given_raw_pixel_arrays_is_told_the_arrays_fix(capsys):
    d = _brightness_distiller(quadrant_teacher(5.0))
    x, y = _arrays(_quadrants(255.0))
    d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert "are 1020 apart (median)" in out and "(e.g. d.fit(x / 255, y, ...))" in out


class _Calls(keras.layers.Layer):
    """Counts the teacher's calls on images, eager or traced."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     dtype="int64", name="count")  # fmt: skip

    def call(self, x):
        self.count.assign_add(1)
        return x


def _counted(teacher) -> tuple[keras.Model, _Calls]:
    calls = _Calls(name="calls")
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, teacher(calls(inputs)), name="counted"), calls


def _cached(dataset, teacher) -> tf.data.Dataset:
    """``dataset`` with ``teacher``'s logits cached beside its images (teacher_cache's form)."""
    return dataset.map(lambda x, y: ({"images": x, "teacher_logits": teacher(x)}, y))


def test_cached_logits_are_what_the_teachers_check_judges_without_calling_the_teacher():
    # With cached logits (what teaches in that fit), the check ran the live teacher: a cache of
    # another class order trained unchecked, and a right cache was refused for the teacher.
    right, shifted = _brightness_teacher(), _brightness_teacher()
    head = shifted.layers[-1]
    head.set_weights([np.roll(w, 1, axis=-1) for w in head.get_weights()])  # class k + 1
    teacher, calls = _counted(_brightness_teacher())
    d = _brightness_distiller(teacher)
    with pytest.raises(ConfigError, match=(
        r"^The teacher, by its cached logits \(fit's 'teacher_logits'\), calls classes by other "
        r"labels than this data's: on the first images \(accuracy 0.0000\), label 0 is its "
        r"class 1 for 8 of 8 images; .* Give the teacher trained with this data's order \(its "
        r"logits cached again\), or relabel the data in the teacher's: dataset.map\(lambda x, "
        r"y: \(x, tf.gather\(\[1, 2, 3, 0\], y\)\)\)")):  # fmt: skip
        d.fit(_cached(_brightness(), shifted), epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 0 and int(calls.count.numpy()) == 0
    # The live teacher of another order, its right logits cached: the cache teaches, and trains.
    teacher, calls = _counted(shifted)
    d = _brightness_distiller(teacher)
    d.fit(_cached(_brightness(), right), epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 1 and int(calls.count.numpy()) == 0


def test_cached_logits_255_times_off_are_warned_of_by_their_gap(capsys):
    # The teacher given raw pixels when its logits were cached: 1020 apart, one-hot soft
    # targets. The teacher is not called, so the gap alone tells.
    teacher = quadrant_teacher(5.0)
    raw = _quadrants(255.0)
    d = _brightness_distiller(quadrant_teacher(5.0))
    d.fit(_cached(raw, teacher), epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert ("warning: the top two of the teacher 'quadrants''s cached logits are 1020 apart "
            "(median) on the first 32 images fit is given: at τ=3 their soft targets are near "
            "one-hot (mean top probability 1.0000)") in out
    assert "scaling of the images it was given cannot be checked here" in out
    d = _brightness_distiller(quadrant_teacher(5.0))
    d.fit(_cached(_quadrants(1.0), teacher), epochs=1, verbose=0)  # cached as trained: quiet
    assert capsys.readouterr().out == "" and int(d.optimizer.iterations) == 1


def _first(dataset, count: int) -> tf.data.Dataset:
    x, y = _arrays(dataset)
    return tf.data.Dataset.from_tensor_slices((x[:count], y[:count])).batch(32)


def test_too_few_distinct_images_to_refuse_say_once_the_teacher_was_not_checked(capsys):
    # 13 images of classes 0 and 1, raw pixels to a teacher trained on pixels / 255: every
    # answer class 3, and 13 right as pixels / 255 (a sign test's p = 0.5^13 = 1.2e-4): no
    # check could refuse, and fit passed them without a word, as if the teacher was checked.
    d = _brightness_distiller(_brightness_teacher())
    few = _first(_brightness(scale=255.0), 13)
    d.fit(few, epochs=1, verbose=0)
    d.fit(few, epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert out.count("Distiller.fit did not check the teacher") == 1
    assert ("the first batches it read hold 13 distinct labelled images, and its checks (the "
            "teacher's class order, its accuracy, the scaling it was trained on) refuse none on "
            "fewer than 14. It checks at the next fit given 14 or more (up to 512 are read). "
            "Distiller(..., check_teacher=False) skips this check.") in out
    assert int(d.optimizer.iterations) == 2
    with pytest.raises(ConfigError, match=r"right on 0.0000 of the first 14 images"):
        d.fit(_first(_brightness(scale=255.0), 14), epochs=1, verbose=0)  # checked, at 14
    d = _brightness_distiller(_brightness_teacher(), check_teacher=False)
    d.fit(few, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_no_renaming_of_classes_is_refused_on_fewer_than_14_images():
    from fitnets_tf import class_order, fed_teacher

    assert fed_teacher.FEWEST_REFUSABLE == 14
    for classes in range(2, 11):
        labels = np.arange(13) % classes
        for shift in range(1, classes):
            assert class_order.relabelling((labels + shift) % classes, labels, classes) is None


def test_fixes_for_other_sources_of_batches_and_weighted_or_one_hot_ones():
    from fitnets_tf.fit_inputs import FitInputs

    # A PyTorch DataLoader (Keras takes it): neither a generator's yield nor a dataset's map.
    assert FitInputs("batches").images_fix("x / 255") == "give fit each batch as (x / 255, y)"
    weighted = FitInputs("generator", weighted=True, keyed=True, one_hot=True)
    assert weighted.images_fix("x * 255") == (
        "yield ({**x, 'images': x['images'] * 255}, y, w) for each batch from the generator")
    assert weighted.labels_fix([3, 0, 1, 2]) == (
        "yield (x, np.take(y, [1, 2, 3, 0], axis=-1), w) for each batch from the generator")
    assert FitInputs("arrays", keyed=True).labels_fix([1, 0]) == (
        "y = np.take([1, 0], y) before d.fit(x, y, ...)")


def test_the_said_relabelling_runs_on_uint8_or_float_labels():
    # keras.datasets' labels are uint8: the said tf.gather([...], y) failed on them in the
    # dataset's map (TypeError: its indices int32 or int64), and np.take on float labels.
    x, y = _arrays(_brightness().map(lambda x, y: (x, (y + 1) % 4)))
    for labels in (y.astype("uint8"), y.astype("float32")):
        dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(32)
        for form in ("dataset", "arrays"):
            given = dict(x=dataset) if form == "dataset" else dict(x=x, y=labels, batch_size=32)
            d = _brightness_distiller(_brightness_teacher())
            with pytest.raises(ConfigError) as refused:
                d.fit(**given, epochs=1, verbose=0)
            d = _brightness_distiller(_brightness_teacher())
            if form == "dataset":
                said = re.search(r"teacher's: dataset\.map\((lambda .*?)\) \(a PyTorch",
                                 str(refused.value)).group(1)
                d.fit(dataset.map(eval(said, {"tf": tf})), epochs=1, verbose=0)
            else:
                said = re.search(r"y = (np.take\(.*?\)) before", str(refused.value)).group(1)
                relabelled = eval(said, {"np": np, "y": labels})
                np.testing.assert_array_equal(relabelled, (y - 1) % 4)  # the teacher's order
                d.fit(x, relabelled, batch_size=32, epochs=1, verbose=0)
            assert int(d.optimizer.iterations) == 1


def test_cached_logits_255_times_too_close_are_warned_of_by_their_gap(capsys):
    # The README's "under 0.25: warned" for a cache, untested: a teacher trained on raw pixels
    # given pixels / 255 when its logits were cached (0.016 apart, right on every image).
    teacher = quadrant_teacher(5.0 / 255)
    d = _brightness_distiller(quadrant_teacher(5.0 / 255))
    d.fit(_cached(_quadrants(1.0), teacher), epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert ("warning: the top two of the teacher 'quadrants''s cached logits are 0.016 apart "
            "(median) on the first 32 images fit is given: at τ=3 their soft targets are near "
            "uniform (mean top probability 0.2510)") in out
    assert "if the teacher was given pixels / 255 when its logits were cached" in out
    assert int(d.optimizer.iterations) == 1


def test_the_said_relabelling_moves_class_weight_s_keys_too():
    # fit(..., class_weight={label: weight}) relabelled as said kept the weights on the old
    # labels: each class weighted as another, without a word.
    x, y = _arrays(_brightness().map(lambda x, y: (x, (y + 1) % 4)))
    class_weight = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    d = _brightness_distiller(_brightness_teacher())
    with pytest.raises(ConfigError) as refused:
        d.fit(x, y, batch_size=32, class_weight=class_weight, epochs=1, verbose=0)
    said = re.search(r"class_weight = (\{.*?\}) before", str(refused.value)).group(1)
    # Label k is the teacher's class k - 1: its weight goes along.
    assert eval(said, {"class_weight": class_weight}) == {3: 1.0, 0: 2.0, 1: 3.0, 2: 4.0}


def test_a_fit_on_cached_logits_leaves_the_teacher_to_check_at_a_fit_without_them(capsys):
    # The cache judged, the teacher was taken as checked: a later fit on its own answers, fed
    # raw pixels it was not trained on, trained unchecked.
    d = _brightness_distiller(_brightness_teacher())
    d.fit(_cached(_brightness(), _brightness_teacher()), epochs=1, verbose=0)
    with pytest.raises(ConfigError, match=r"right on 0.2500 of the first 32 images as fit is "):
        d.fit(_brightness(scale=255.0), epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 1
    # Each fit on a cache judges it (another cache may differ), its warning said once.
    teacher = quadrant_teacher(5.0)
    d = _brightness_distiller(quadrant_teacher(5.0))
    for _ in range(2):
        d.fit(_cached(_quadrants(255.0), teacher), epochs=1, verbose=0)
    assert capsys.readouterr().out.count("cached logits are 1020 apart") == 1
