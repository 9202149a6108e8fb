"""A user's own models and habits in the Distiller: regularizers, an optimizer used twice,
inputs as a one-element list, λ and τ set as attributes, the given teacher frozen."""

import keras
import numpy as np
import pytest
from conftest import tiny_data, tiny_model

import fitnets_tf
from fitnets_tf.errors import ConfigError


def _regularized_student(seed: int = 1) -> keras.Model:
    """8×8×1 → conv1 (L2 0.5) → pool1 → conv2 (activity L1 0.01) → GAP → logits (L2 0.5)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1",
                            kernel_regularizer=keras.regularizers.L2(0.5))(inputs)  # fmt: skip
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2",
                            activity_regularizer=keras.regularizers.L1(0.01))(h)  # fmt: skip
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(3, name="logits",
                                 kernel_regularizer=keras.regularizers.L2(0.5))(h)  # fmt: skip
    return keras.Model(inputs, outputs, name="student")


def test_a_students_regularizers_are_in_the_loss_of_both_phases(teacher):
    x, y = tiny_data(8)
    student = _regularized_student()
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1", kd_lambda=2.0)
    d.compile(optimizer="sgd", phase="kd")
    logs = d.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    student(x)  # the activity regularizer's loss is that of the last call: this batch's
    penalty = float(sum(student.losses))
    assert penalty > 0.1
    expected = logs["ce_loss"] + 2.0 * logs["kd_loss"] + penalty
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    # Stage 1 trains the layers up to the guided one: conv1's weight penalty only.
    d.compile(optimizer="sgd", phase="hints")
    logs = d.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    conv1 = student.get_layer("conv1")
    np.testing.assert_allclose(
        logs["loss"] - logs["hint_loss"], float(conv1.kernel_regularizer(conv1.kernel)), rtol=1e-5
    )


def test_a_kd_step_with_lambda_zero_is_keras_own_step_with_the_penalty(teacher):
    # λ = 0 leaves the cross-entropy: the Distiller's SGD step must then be Keras' own fit
    # step of the same student, regularizers included.
    x, y = tiny_data(8)
    ours, theirs = _regularized_student(), _regularized_student()
    d = fitnets_tf.Distiller(teacher, ours, kd_lambda=0.0)
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    d.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    theirs.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    theirs.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    kernel = ours.get_layer("logits").kernel
    assert not np.allclose(kernel, _regularized_student().get_layer("logits").kernel)


def test_an_optimizer_used_in_stage_1_keeps_its_settings_in_stage_2(teacher, student):
    x, y = tiny_data(8)

    class Halving(keras.optimizers.schedules.LearningRateSchedule):  # not registered
        def __call__(self, step):
            return 0.1 * 0.5 ** keras.ops.cast(step, "float32")

        def get_config(self):
            return {}

    made = {0.1: keras.optimizers.SGD(Halving()),
            0.02: keras.optimizers.Adam(learning_rate=lambda: 0.02)}  # fmt: skip
    for rate, optimizer in made.items():
        d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
        d.compile(optimizer=optimizer, phase="hints")
        d.fit(x, y, batch_size=8, verbose=0)
        d.compile(optimizer=optimizer, phase="kd")  # a copy: its slots were stage 1's
        assert d.optimizer is not optimizer and type(d.optimizer) is type(optimizer)
        assert int(d.optimizer.iterations) == 0
        np.testing.assert_allclose(float(d.optimizer.learning_rate), rate)
        d.fit(x, y, batch_size=8, verbose=0)


def test_the_weight_decay_exclusions_survive_the_copy(teacher, student):
    x, y = tiny_data(8)
    optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    d.compile(optimizer=optimizer, phase="hints")
    d.fit(x, y, batch_size=8, verbose=0)
    d.compile(optimizer=optimizer, phase="kd")
    logits = student.get_layer("logits")
    assert not d.optimizer._use_weight_decay(logits.bias)
    assert d.optimizer._use_weight_decay(logits.kernel)


def test_one_input_given_as_a_list_is_the_input(teacher, student):
    x, y = tiny_data(8)
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    for phase in ("hints", "kd"):
        d.compile(optimizer="sgd", phase=phase)
        as_list = d.evaluate([x], y, batch_size=8, verbose=0, return_dict=True)
        assert as_list == d.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)


def test_lambda_and_temperature_set_as_attributes_reach_the_step(teacher, student):
    x, y = tiny_data(8)
    d = fitnets_tf.Distiller(teacher, student, kd_lambda=4.0)
    variable = d.kd_lambda
    d.compile(optimizer="sgd", phase="kd")
    d.evaluate(x, y, batch_size=8, verbose=0)  # traced with λ = 4
    d.kd_lambda, d.temperature = 0, np.float32(1.0)
    assert d.kd_lambda is variable and float(d.temperature) == 1.0
    logs = d.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert logs["loss"] == logs["ce_loss"]
    with pytest.raises(ConfigError, match="`temperature` must be a number > 0"):
        d.temperature = 0.0


def test_the_given_teacher_is_frozen_when_its_softmax_is_left_out(student):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3, name="pool1")(inputs)
    )
    teacher = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    fitnets_tf.Distiller(teacher, tiny_model("s", 4, 1))
    assert not teacher.trainable and not teacher.trainable_weights


def test_an_optimizer_that_cannot_be_copied_is_named_with_the_fix(teacher, student):
    class Unserializable(keras.optimizers.schedules.LearningRateSchedule):  # no get_config
        def __call__(self, step):
            return 0.1

    x, y = tiny_data(8)
    optimizer = keras.optimizers.SGD(Unserializable())
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    d.compile(optimizer=optimizer, phase="hints")
    d.fit(x, y, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="has been used already.*Pass a new optimizer instead"):
        d.compile(optimizer=optimizer, phase="kd")


def test_a_subclassed_student_of_one_logit_is_refused_at_its_first_step(teacher):
    # Its output size is known once called: the step's trace refuses it, where the softmax
    # over one logit would make every loss 0 (under jit_compile, silently).
    class Binary(keras.Model):
        def __init__(self):
            super().__init__(name="binary")
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.out = keras.layers.Dense(1)

        def call(self, x):
            return self.out(self.pool(x))

    x, y = tiny_data(8)
    d = fitnets_tf.Distiller(teacher, Binary())
    d.compile(optimizer="sgd", phase="kd", jit_compile=True)
    with pytest.raises(ConfigError, match="The student 'binary' gives 1 output, but distillat"):
        d.fit(x, y % 1, batch_size=8, verbose=0)


def _score_map(name: str) -> keras.Model:
    """8×8×1 → pool1 → a (4, 4, 3) map of per-pixel scores: ends in 3 like logits."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.MaxPooling2D(2, name="pool1")(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(h), name=name)


def test_a_model_whose_output_is_a_map_is_refused_before_any_step(teacher, student):
    # Only the last axis was checked: the hint stage trained, then KD's first step failed with
    # "Incompatible shapes: [8] vs. [8,4,4]".
    for role, pair in (("student", (teacher, _score_map("s_map"))),
                       ("teacher", (_score_map("t_map"), student))):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"The {role} '._map' outputs shape \(None, 4, 4, "
                           r"3\), but distillation needs class logits of shape \(batch, "
                           r"classes\)"):  # fmt: skip
            fitnets_tf.Distiller(*pair, "pool1", "pool1")


def test_a_subclassed_student_giving_a_map_is_refused_at_its_first_step(teacher):
    class Map(keras.Model):
        def __init__(self):
            super().__init__(name="map")
            self.out = keras.layers.Conv2D(3, 1)

        def call(self, x):
            return self.out(x)

    x, y = tiny_data(8)
    d = fitnets_tf.Distiller(teacher, Map())
    d.compile(optimizer="sgd", phase="kd")
    with pytest.raises(ConfigError, match=r"The student 'map' outputs shape \(8, 8, 8, 3\)"):
        d.fit(x, y, batch_size=8, verbose=0)
