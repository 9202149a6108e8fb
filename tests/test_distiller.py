import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data, tiny_dataset, tiny_model

import fitnets_tf
from fitnets_tf import layers, losses, notes
from fitnets_tf.errors import ConfigError
from fitnets_tf.regressor import HintShapeError


def _values(variables):
    return [np.array(v) for v in variables]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_call_is_the_student(teacher, student):
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    x, _ = tiny_data(4)
    np.testing.assert_allclose(d(x), student(x))
    assert d.built  # save_weights/checkpoints work before the first fit


def test_auto_regressor_follows_the_paper_rule(teacher, student):
    d = fitnets_tf.Distiller(teacher, student, hint_layer="pool1", guided_layer="conv1")
    # guided 8×8×4 → hint 4×4×6: k = 8 − 4 + 1 = 5, maxout with the teacher's 3 pieces,
    # because the hint (pool1) looks through the pooling to conv1's maxout.
    assert isinstance(d.regressor, layers.MaxoutConv2D)
    assert d.regressor.kernel_size == (5, 5) and d.regressor.pieces == 3
    assert d.regressor.kernel.shape == (5, 5, 4, 6 * 3)
    assert d.regressor.ties == "share"


def test_a_maxout_regressor_takes_the_hints_tie_rule():
    teacher = fitnets_tf.models.build("mnist_teacher", (28, 28, 1), 10, maxout_ties="one")
    thin = fitnets_tf.models.build("mnist_fitnet", (28, 28, 1), 10)
    d = fitnets_tf.Distiller(teacher, thin, hint_layer="pool2", guided_layer="pool4")
    assert isinstance(d.regressor, layers.MaxoutConv2D) and d.regressor.ties == "one"


def test_linear_and_activation_regressors():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(5, 3, activation="relu", name="hint")(inputs)
    logits = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(h))
    teacher = keras.Model(inputs, logits)
    student = tiny_model("s", 4, 1)
    relu = fitnets_tf.Distiller(teacher, student, "hint", "conv1").regressor
    assert isinstance(relu, keras.layers.Conv2D) and relu.activation.__name__ == "relu"
    assert relu.kernel_size == (3, 3)  # 8 − 6 + 1
    linear = fitnets_tf.Distiller(teacher, student, "hint", "conv1", regressor="linear").regressor
    assert isinstance(linear, keras.layers.Conv2D) and linear.activation.__name__ == "linear"


@pytest.mark.parametrize(
    ("hint", "activation"),
    [
        # Values below 0, which a ReLU regressor never reaches (an irreducible hint loss).
        (lambda: keras.layers.ReLU(negative_slope=0.3, name="hint"), "linear"),
        (lambda: keras.layers.ReLU(6.0, negative_slope=0.1, name="hint"), "linear"),
        (lambda: keras.layers.LeakyReLU(0.3, name="hint"), "linear"),
        (lambda: keras.layers.Activation(tf.nn.leaky_relu, name="hint"), "leaky_relu"),
        # A function Keras has no activation of that name for: its range is unknown.
        (lambda: keras.layers.Activation(lambda x: keras.activations.relu(x, negative_slope=0.3),
                                         name="hint"), "linear"),  # fmt: skip
        # Within [0, max_value]: a ReLU reaches it; ReLU6 is bounded as MobileNets' hint is.
        (lambda: keras.layers.ReLU(6.0, name="hint"), "relu6"),
        (lambda: keras.layers.ReLU(2.0, threshold=0.5, name="hint"), "relu"),
        (lambda: keras.layers.Activation(tf.nn.relu6, name="hint"), "relu6"),
    ],
    ids=["relu_slope", "relu6_slope", "leaky_relu_layer", "tf_leaky_relu", "lambda", "relu6",
         "relu_bounded_threshold", "tf_relu6"],
)  # fmt: skip
def test_the_regressor_reaches_every_value_of_the_hint(hint, activation):
    inputs = keras.Input((8, 8, 1))
    h = hint()(keras.layers.Conv2D(5, 3, name="conv")(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    regressor = fitnets_tf.Distiller(teacher, tiny_model("s", 4, 1), "hint", "conv1").regressor
    assert isinstance(regressor, keras.layers.Conv2D)
    assert regressor.activation.__name__ == activation and regressor.kernel_size == (3, 3)


@pytest.mark.parametrize(
    ("hint", "guided", "match"),
    [
        ("conv1", "pool1", "hint map is larger than the guided map"),  # 8×8 hint, 4×4 guided
        ("logits", "conv1", "ranks differ"),
        ("nope", "conv1", "Unknown hint_layer 'nope'.*Valid layer names: .*conv1"),
        ("conv1", "nope", "Unknown guided_layer 'nope'"),
    ],
)
def test_unmatchable_layers_fail_at_construction(teacher, student, hint, guided, match):
    with pytest.raises(ValueError, match=match) as info:
        fitnets_tf.Distiller(teacher, student, hint_layer=hint, guided_layer=guided)
    if "Unknown" not in match:
        assert isinstance(info.value, HintShapeError)
        for text in (hint, guided, "Teacher layers:", "Student layers:"):
            assert text in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"temperature": 0.0}, "temperature"), ({"kd_lambda": -1.0}, "kd_lambda"),
     ({"hint_layer": "pool1"}, "both")],
)  # fmt: skip
def test_bad_hyperparameters(teacher, student, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fitnets_tf.Distiller(teacher, student, **kwargs)


def test_compile_rejects_unknown_phase_and_hints_without_layers(teacher, student):
    d = fitnets_tf.Distiller(teacher, student)
    with pytest.raises(ValueError, match="phase"):
        d.compile(phase="joint")
    # It named hint_layer and guided_layer only, not the hints= of several pairs or "auto".
    with pytest.raises(ValueError, match=r"needs hint pairs.*hints=\[\(hint_layer, guided_layer"
                       r"\), \.\.\.\], hints='auto', or hint_layer and guided_layer"):
        d.compile(phase="hints")


def test_hint_loss_is_logged_as_the_paper_defines_it(teacher, student):
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    d.compile(optimizer="sgd", phase="hints")
    x, y = tiny_data(16)
    logs = d.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    hint = keras.Model(teacher.input, teacher.get_layer("pool1").output)(x)
    guided = keras.Model(student.input, student.get_layer("pool1").output)(x)
    diff = np.asarray(hint) - np.asarray(d.regressor(guided))
    expected = 0.5 * (diff**2).reshape(16, -1).sum(axis=1).mean()
    assert set(logs) == {"loss", "hint_loss"}
    np.testing.assert_allclose(logs["hint_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)


def test_kd_loss_is_the_real_total(teacher, student):
    d = fitnets_tf.Distiller(teacher, student, temperature=2.0, kd_lambda=3.0)
    d.compile(optimizer="sgd", phase="kd", metrics=["accuracy"])
    x, y = tiny_data(16)
    logs = d.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    ce = np.mean(losses.cross_entropy(y, student(x)))
    kd = np.mean(losses.kd_loss(teacher(x), student(x), 2.0))
    np.testing.assert_allclose(logs["ce_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(logs["kd_loss"], kd, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], ce + 3.0 * kd, rtol=1e-5)
    assert set(logs) == {"loss", "ce_loss", "kd_loss", "accuracy"}  # λ, τ: training logs only


def _with_softmax(model):
    return keras.Model(model.inputs, keras.layers.Softmax(name="probs")(model.output), name="p")


def test_notes_follow_keras_logging_switch(teacher, student, capsys, caplog):
    # After keras.config.disable_interactive_logging() Keras logs through absl: so do the notes.
    keras.config.disable_interactive_logging()
    try:
        with caplog.at_level(logging.INFO, logger="absl"):
            fitnets_tf.Distiller(_with_softmax(teacher), student, temperature=2.0)
    finally:
        keras.config.enable_interactive_logging()
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records] == [
        "The teacher 'p' ends in a softmax: the Distiller uses its logits."
    ]


def test_notes_are_told_once_inside_a_once_scope(teacher, student, capsys):
    # A search builds a Distiller per trial on the same teacher file: its note, once a search
    # (fitnets_tf.search.session.tune and experiment.run hold the scope), not once a trial.
    soft = _with_softmax(teacher)
    with notes.once():
        for _ in range(3):
            fitnets_tf.Distiller(soft, student, temperature=2.0)
        with notes.once():  # a run inside the search (its stage 1) shares the search's scope
            fitnets_tf.Distiller(soft, student, temperature=2.0)
    fitnets_tf.Distiller(soft, student, temperature=2.0)  # outside: told again
    assert capsys.readouterr().out.count("teacher 'p' ends in a softmax") == 2


def test_a_final_softmax_is_left_out_so_kd_reads_logits(teacher, student, capsys):
    d = fitnets_tf.Distiller(_with_softmax(teacher), _with_softmax(student), temperature=2.0)
    out = capsys.readouterr().out
    assert "teacher 'p' ends in a softmax" in out and "student 'p' ends in a softmax" in out
    d.compile(optimizer="sgd", phase="kd")
    x, y = tiny_data(16)
    logs = d.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    # The same losses as the models without their softmax (the layers are shared).
    kd = np.mean(losses.kd_loss(teacher(x), student(x), 2.0))
    np.testing.assert_allclose(logs["kd_loss"], kd, rtol=1e-5)
    np.testing.assert_allclose(d.student(x), student(x))


def test_a_student_whose_dense_layer_has_the_softmax_is_refused(teacher, student):
    fused = keras.Model(student.inputs, keras.layers.Dense(3, activation="softmax")(
        student.get_layer("gap").output), name="fused")  # fmt: skip
    with pytest.raises(ConfigError, match="student 'fused' ends in a layer with a softmax"):
        fitnets_tf.Distiller(teacher, fused)
    # A teacher's is fine: a frozen copy of its last layer computes the same logits.
    d = fitnets_tf.Distiller(keras.Model(teacher.inputs, keras.layers.Dense(3, activation="softmax")(
        teacher.get_layer("gap").output)), student)  # fmt: skip
    assert d.teacher.layers[-1].activation is keras.activations.linear


def _out(h, activation=None):
    return keras.layers.Dense(3, activation=activation, name="out")(h)


# A softmax as the user may write it: not always keras.activations.softmax, which alone was found.
_SOFTMAX_HEADS = {
    "Dense(activation=tf.nn.softmax)": lambda h: _out(h, tf.nn.softmax),
    "Dense(activation=keras.ops.softmax)": lambda h: _out(h, keras.ops.softmax),
    "Activation(tf.nn.softmax)": lambda h: keras.layers.Activation(tf.nn.softmax)(_out(h)),
    "keras.ops.softmax": lambda h: keras.ops.softmax(_out(h)),
    "Lambda(tf.math.softmax)": lambda h: keras.layers.Lambda(tf.math.softmax)(_out(h)),
}


def _flat_model(head, name: str) -> keras.Model:
    """2 features → ``head`` (its Dense "out": W = [[1, 2, 3], [-1, 0, 4]], b = [.5, 0, -.5])."""
    inputs = keras.Input((2,))
    model = keras.Model(inputs, head(inputs), name=name)
    kernel, bias = np.array([[1, 2, 3], [-1, 0, 4]], "float32"), np.array([0.5, 0, -0.5], "float32")
    model.get_layer("out").set_weights([kernel, bias])
    return model


@pytest.mark.parametrize("head", list(_SOFTMAX_HEADS))
def test_a_final_softmax_is_left_out_whatever_function_applies_it(head):
    # tf.nn.softmax's probabilities were taken for logits: soft targets near uniform at τ = 3.
    teacher = _flat_model(_SOFTMAX_HEADS[head], "t")
    d = fitnets_tf.Distiller(teacher, _flat_model(_out, "s"))
    x = np.array([[1, 1], [0, 2]], "float32")
    # x·W + b: [0 + .5, 2, 7 − .5] and [−2 + .5, 0, 8 − .5], the Dense's weights kept.
    np.testing.assert_allclose(d.teacher(x), [[0.5, 2.0, 6.5], [-1.5, 0.0, 7.5]], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.softmax(d.teacher(x)), teacher(x), rtol=1e-5)


@pytest.mark.parametrize("head", ["Dense(activation=tf.nn.softmax)",
                                  "Dense(activation=keras.ops.softmax)"])  # fmt: skip
def test_a_student_whose_dense_layer_has_any_softmax_is_refused(head):
    # Its logits would come from a copy of the Dense, which training would update instead.
    with pytest.raises(ConfigError, match="student 's' ends in a layer with a softmax"):
        fitnets_tf.Distiller(_flat_model(_out, "t"), _flat_model(_SOFTMAX_HEADS[head], "s"))


@pytest.mark.parametrize("head", ["Activation(tf.nn.softmax)", "keras.ops.softmax",
                                  "Lambda(tf.math.softmax)"])  # fmt: skip
def test_a_student_ending_in_a_softmax_of_its_own_trains_its_logits(head):
    student = _flat_model(_SOFTMAX_HEADS[head], "s")
    d = fitnets_tf.Distiller(_flat_model(_out, "t"), student)
    assert d.student.layers[-1] is student.get_layer("out")  # the student's own layer
    x = np.array([[1, 1]], "float32")
    np.testing.assert_allclose(d.student(x), [[0.5, 2.0, 6.5]], rtol=1e-6)


def test_labels_outside_the_classes_fail_the_step_instead_of_training_silently(teacher, student):
    # one_hot makes an out-of-range id a row of zeros: no loss, and no error, before the check.
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd")
    x, y = tiny_data(16)
    for bad, match in ((y + 1, "not below the number of classes"), (y - 1, "is negative")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            d.fit(x, bad, batch_size=16, epochs=1, verbose=0)
    d.fit(x, y, batch_size=16, epochs=1, verbose=0)  # in range: trains


def test_a_dataset_of_other_dicts_is_refused_naming_its_keys(teacher, student):
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd")
    x, y = tiny_data(16)
    tfds_style = tf.data.Dataset.from_tensor_slices(({"image": x}, y)).batch(8)
    with pytest.raises(ValueError, match=r"received a dict with keys \['image'\].*ds.map"):
        d.fit(tfds_style, epochs=1, verbose=0)


def test_saving_a_distiller_whole_is_refused_before_writing(teacher, student, tmp_path):
    d = fitnets_tf.Distiller(teacher, student)
    with pytest.raises(NotImplementedError, match=r"distiller.student.save"):
        d.save(tmp_path / "d.keras")
    assert list(tmp_path.iterdir()) == []


def test_keras_own_ways_to_save_a_distiller_whole_say_what_to_save(teacher, student, tmp_path):
    # keras.saving.save_model(d), d.to_json() and d.get_config() asked the user to implement
    # get_config(), and d.export() said "never called" after fit and predict: each now names
    # what can be saved, before any file is written.
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd")
    x, y = tiny_data(16)
    d.fit(x, y, batch_size=8, epochs=1, verbose=0)
    d.predict(x, verbose=0)
    attempts = [lambda: keras.saving.save_model(d, tmp_path / "d.keras"), d.to_json, d.get_config]
    for attempt in attempts:
        with pytest.raises(NotImplementedError, match=r"distiller.student.save"):
            attempt()
    with pytest.raises(NotImplementedError, match=r"export_student\(distiller.student"):
        d.export(tmp_path / "d_export")
    # Keras' save_model opened its file before it asked for the config: it left an empty file.
    assert list(tmp_path.iterdir()) == []


def test_keras_save_model_of_a_distiller_leaves_what_was_at_the_path_untouched(
    teacher, student, tmp_path
):
    # keras.saving.save_model(d, path) opened path for writing, then asked d for its config,
    # refused: the user's earlier save there was emptied, or a corrupt file appeared.
    d = fitnets_tf.Distiller(teacher, student)
    earlier = tmp_path / "model.keras"
    keras.saving.save_model(d.student, earlier)
    before = earlier.read_bytes()
    with pytest.raises(NotImplementedError, match=r"distiller.student.save"):
        keras.saving.save_model(d, earlier)
    assert earlier.read_bytes() == before
    keras.saving.load_model(earlier)  # still the student saved there
    # Nor a new file or a folder (zipped=False).
    with pytest.raises(NotImplementedError, match=r"distiller.student.save"):
        keras.saving.save_model(d, tmp_path / "new.keras")
    with pytest.raises(NotImplementedError, match=r"distiller.student.save"):
        keras.saving.save_model(d, tmp_path / "folder", zipped=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    assert d.built  # what Keras reads elsewhere is as before


def test_a_model_checkpoint_saving_the_model_is_refused_before_training(teacher, student, tmp_path):
    # Keras' ModelCheckpoint calls model.save at the first epoch's end: refused then, after an
    # epoch of training. Now before the first step, naming the fix; weights-only ones train.
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd")
    whole = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"))
    with pytest.raises(ValueError, match=r"'.*best.keras'\) saves the whole.*save_weights_only"):
        d.fit(tiny_dataset(), epochs=1, verbose=0, callbacks=[whole])
    assert int(d.optimizer.iterations.numpy()) == 0 and list(tmp_path.iterdir()) == []
    path = str(tmp_path / "best.weights.h5")
    weights = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    d.fit(tiny_dataset(), epochs=1, verbose=0, callbacks=[weights])
    assert (tmp_path / "best.weights.h5").exists()


def test_a_loss_given_to_compile_is_refused_naming_it(teacher, student):
    d = fitnets_tf.Distiller(teacher, student)
    with pytest.raises(ValueError, match="do not pass `loss`"):
        d.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"own loss: pass none.*'sparse_categorical_crossentropy'"):
        d.compile("sgd", "sparse_categorical_crossentropy")  # as Model.compile(optimizer, loss)


def test_teacher_and_student_of_other_class_counts_are_refused(teacher):
    five = tiny_model("student", width=4, seed=1, classes=5)
    with pytest.raises(ConfigError, match="gives 3 classes and the student 'student' 5"):
        fitnets_tf.Distiller(teacher, five)


@pytest.mark.parametrize(("teacher_classes", "student_classes", "refused"),
                         [(1, 1, "teacher"), (1, 3, "teacher"), (3, 1, "student")])  # fmt: skip
def test_one_logit_models_are_refused_at_construction(teacher_classes, student_classes, refused):
    # Keras' binary classifier, Dense(1, activation="sigmoid"): a softmax over one logit is 1,
    # so every loss was 0 (or a label 1 failed the step as a class the model does not have).
    t = tiny_model("teacher", width=6, seed=0, pieces=3, classes=teacher_classes)
    if teacher_classes == 1:
        head = keras.layers.Dense(1, activation="sigmoid", name="prob")
        t = keras.Model(t.inputs, head(t.get_layer("gap").output), name="teacher")
    s = tiny_model("student", width=4, seed=1, classes=student_classes)
    match = f"The {refused} '{refused}' gives 1 output, but distillation needs at least 2 class"
    with pytest.raises(ConfigError, match=match) as info:
        fitnets_tf.Distiller(t, s, hint_layer="pool1", guided_layer="pool1")
    assert "keras.layers.Dense(2) with no activation, trained on labels 0 and 1" in str(info.value)


def test_tau_squared_scales_the_soft_term(teacher, student):
    x, y = tiny_data(16)
    results = {}
    for flag in (False, True):
        d = fitnets_tf.Distiller(teacher, student, temperature=2.0, tau_squared=flag)
        d.compile(optimizer="sgd", phase="kd")
        results[flag] = d.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)["kd_loss"]
    np.testing.assert_allclose(results[True], 4.0 * results[False], rtol=1e-5)


def test_phases_train_the_right_weights(teacher, student):
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    teacher_before = _values(teacher.weights)  # includes BN moving statistics
    guided = ["conv1"]
    rest = ["conv2", "bn", "logits"]

    def weights(names):
        return _values([w for n in names for w in student.get_layer(n).weights])

    guided_before, rest_before = weights(guided), weights(rest)
    d.compile(optimizer=keras.optimizers.RMSprop(5e-3), phase="hints")
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    assert not _same(guided_before, weights(guided))  # stage 1 trains up to the guided layer
    assert _same(rest_before, weights(rest))  # ... and nothing after it
    guided_after_hints = weights(guided)
    regressor_after_hints = _values(d.regressor.weights)

    optimizer = keras.optimizers.RMSprop(5e-3)
    d.compile(optimizer=optimizer, phase="kd")
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    assert int(d.optimizer.iterations) == 4  # a fresh optimizer: stage 1's 4 steps don't carry
    assert not _same(guided_after_hints, weights(guided))  # stage 2 starts from stage 1's weights
    assert _same(regressor_after_hints, _values(d.regressor.weights))  # the regressor is dropped
    assert not any(v is w for v in d.trainable_variables for w in d.regressor.weights)
    assert _same(teacher_before, _values(teacher.weights))  # frozen teacher, BN stats included

    d.compile(optimizer=optimizer, phase="kd")  # an already used optimizer is copied, not reused
    assert d.optimizer is not optimizer and int(d.optimizer.iterations) == 0


def test_a_reused_optimizer_starts_the_next_phase_at_the_rate_it_was_given(teacher, student):
    # ReduceLROnPlateau assigns stage 1's rate variable: that is stage 1's, not a setting.
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    optimizer = keras.optimizers.RMSprop(0.01)
    d.compile(optimizer=optimizer, phase="hints")
    lower = keras.callbacks.ReduceLROnPlateau("loss", factor=0.1, patience=0, min_delta=1e9)
    d.fit(tiny_dataset(), epochs=2, verbose=0, callbacks=[lower])
    assert np.isclose(float(optimizer.learning_rate), 1e-3)
    d.compile(optimizer=optimizer, phase="kd")
    assert float(d.optimizer.learning_rate) == np.float32(0.01)
    d.fit(tiny_dataset(), epochs=2, verbose=0, callbacks=[lower])
    d.compile(optimizer=d.optimizer, phase="kd")  # the copy given back: the same
    assert float(d.optimizer.learning_rate) == np.float32(0.01)


def test_custom_regressor_layer(teacher, student):
    custom = keras.layers.Conv2D(6, 1, name="my_regressor")
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1", regressor=custom)
    assert d.regressor is custom
    with pytest.raises(ValueError, match="maps the guided layer"):
        fitnets_tf.Distiller(
            teacher, student, "pool1", "pool1", regressor=keras.layers.Conv2D(5, 1)
        )


def test_mixed_float16_uses_loss_scaling(teacher, student):
    keras.config.set_dtype_policy("mixed_float16")
    t, s = tiny_model("t16", 6, 0, pieces=3), tiny_model("s16", 4, 1)
    d = fitnets_tf.Distiller(t, s, "pool1", "pool1")
    for phase in ("hints", "kd"):
        d.compile(optimizer=keras.optimizers.RMSprop(5e-3), phase=phase)
        assert isinstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
        history = d.fit(tiny_dataset(), epochs=2, verbose=0).history
        assert np.all(np.isfinite(history["loss"]))
    assert keras.backend.standardize_dtype(s.get_layer("conv1").compute_dtype) == "float16"


def test_a_mixed_float16_student_gets_loss_scaling_whatever_the_policy_is_now(teacher):
    # Built under mixed_float16, then the policy set back (a later cell, keras-tuner's
    # clear_session): the Distiller took float32 from the global policy, and Keras only scales
    # the loss of a model whose own policy is mixed_float16, so float16 gradients underflowed.
    keras.config.set_dtype_policy("mixed_float16")
    student = tiny_model("s16", 4, 1)
    keras.config.set_dtype_policy("float32")
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    for phase in ("hints", "kd"):
        d.compile(optimizer="rmsprop", phase=phase)
        assert isinstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
        history = d.fit(tiny_dataset(), epochs=1, verbose=0).history
        assert np.all(np.isfinite(history["loss"]))
    float32 = fitnets_tf.Distiller(teacher, tiny_model("s32", 4, 1), "pool1", "pool1")
    float32.compile(optimizer="rmsprop", phase="kd")
    assert not isinstance(float32.optimizer, keras.optimizers.LossScaleOptimizer)


@pytest.mark.parametrize("phase", ["hints", "kd"])
def test_jit_compile_matches_graph_mode(phase):
    logs = {}
    for jit in (False, True):
        t, s = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
        d = fitnets_tf.Distiller(t, s, "pool1", "pool1")
        d.compile(optimizer=keras.optimizers.SGD(0.1), phase=phase, jit_compile=jit)
        logs[jit] = d.fit(tiny_dataset(), epochs=2, verbose=0).history["loss"]
    np.testing.assert_allclose(logs[True], logs[False], rtol=1e-4)


def test_kd_with_a_subclassed_teacher(student):
    class Teacher(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.out = keras.layers.Dense(3)

        def call(self, x):
            return self.out(self.flat(x))

    d = fitnets_tf.Distiller(Teacher(), student)
    d.compile(optimizer="sgd", phase="kd")
    assert np.isfinite(d.fit(tiny_dataset(), epochs=1, verbose=0).history["loss"][0])
    # With hints, its layers are the graph its call records (fitnets_tf.models.traced), named
    # like any model's; it was refused as not Functional.
    teacher = Teacher()
    with pytest.raises(ConfigError, match=rf"Unknown hint_layer 'dense' in model "
                                          rf"'{teacher.name}' .*Valid layer names: "
                                          rf"{teacher.name}_input, {teacher.flat.name}, "
                                          rf"{teacher.out.name}\."):  # fmt: skip
        fitnets_tf.Distiller(teacher, student, "dense", "conv1")


class UserNet(keras.Model):
    """A user's own subclassed model: no inputs, no layers known before its first call."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = keras.layers.Conv2D(width, 3, activation="relu")
        self.flat = keras.layers.Flatten()
        self.out = keras.layers.Dense(3)

    def call(self, x, training=None):
        return self.out(self.flat(self.conv(x)))


@pytest.mark.parametrize("subclassed_teacher", [False, True])
def test_kd_trains_a_subclassed_student(teacher, subclassed_teacher):
    # As the hint phase's error promises: a subclassed student works for KD, with a Functional
    # teacher (built at construction) or a subclassed one too (built by the first batch).
    if subclassed_teacher:
        keras.utils.set_random_seed(0)
        teacher = UserNet(6)
    keras.utils.set_random_seed(1)
    student = UserNet(4)
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd", metrics=["accuracy"])
    assert student.built is not subclassed_teacher  # built on the Functional teacher's input
    history = d.fit(tiny_dataset(), epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["loss"][1] < history["loss"][0]
    assert len(student.trainable_variables) == 4 and d.optimizer.iterations.numpy() == 8
    assert d.predict(tiny_data()[0], verbose=0).shape == (32, 3)


def test_sample_weights_weight_the_examples(teacher, student):
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="sgd", phase="kd")
    x, y = tiny_data(8)
    w = np.array([1, 0, 0, 0, 0, 0, 0, 0], "float32")
    logs = d.evaluate(x, y, sample_weight=w, batch_size=8, return_dict=True, verbose=0)
    expected = losses.cross_entropy(y[:1], student(x[:1]))[0] / 8
    np.testing.assert_allclose(logs["ce_loss"], expected, rtol=1e-5)


def test_weights_checkpoint_round_trip(tmp_path, teacher, student):
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    d.save_weights(tmp_path / "d.weights.h5")
    before = _values(d.weights)
    d.compile(optimizer="sgd", phase="hints")
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    d.load_weights(tmp_path / "d.weights.h5")
    assert _same(before, _values(d.weights))


def test_save_weights_keeps_the_phases_optimizer_state(tmp_path, teacher, student):
    # What the refusal of d.save() says save_weights keeps: λ, τ and the optimizer's state too.
    d = fitnets_tf.Distiller(teacher, student, temperature=2.0)
    d.compile(optimizer="rmsprop", phase="kd")
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    d.kd_lambda = 2.5
    d.save_weights(tmp_path / "d.weights.h5")
    again = fitnets_tf.Distiller(tiny_model("teacher", 6, 5, 3), tiny_model("student", 4, 6))
    again.compile(optimizer="rmsprop", phase="kd")
    again.load_weights(tmp_path / "d.weights.h5")
    assert int(again.optimizer.iterations.numpy()) == 4
    assert _same(_values(again.optimizer.variables), _values(d.optimizer.variables))
    assert _same(_values(again.student.weights), _values(d.student.weights))
    assert float(again.kd_lambda.numpy()) == 2.5 and float(again.temperature.numpy()) == 2.0


def test_loading_before_compile_says_the_optimizer_state_was_not_restored(
    tmp_path, teacher, student, capsys
):
    # load_weights before compile (build, load, compile, fit: a natural resume) restored the
    # student but not the file's optimizer, which compile then made afresh: the resumed fit
    # started at step 0 (slots and schedule), its weights apart from an uninterrupted run's,
    # without a word. Loaded after compile, it is restored, and nothing is said.
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer="adam", phase="kd")
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    d.save_weights(tmp_path / "d.weights.h5")
    capsys.readouterr()
    late = fitnets_tf.Distiller(tiny_model("teacher", 6, 5, 3), tiny_model("student", 4, 6))
    late.load_weights(tmp_path / "d.weights.h5")
    said = capsys.readouterr().out
    assert "optimizer state of 4 steps" in said and "compile(optimizer, phase=...) first" in said
    assert _same(_values(late.student.weights), _values(d.student.weights))
    early = fitnets_tf.Distiller(tiny_model("teacher", 6, 5, 3), tiny_model("student", 4, 6))
    early.compile(optimizer="adam", phase="kd")
    early.load_weights(tmp_path / "d.weights.h5")
    assert int(early.optimizer.iterations.numpy()) == 4 and capsys.readouterr().out == ""


def test_cached_teacher_logits_replace_the_teacher_pass(teacher, student):
    x, y = tiny_data(16)
    d = fitnets_tf.Distiller(teacher, student, temperature=2.0)
    d.compile(optimizer="sgd", phase="kd")
    live = d.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    cached = {"images": x, "teacher_logits": np.asarray(teacher(x))}
    logs = d.evaluate(cached, y, batch_size=16, return_dict=True, verbose=0)
    for key in ("loss", "ce_loss", "kd_loss"):
        np.testing.assert_allclose(logs[key], live[key], rtol=1e-5)
    np.testing.assert_allclose(d(cached), student(x))


def _flat_net(input_shape, outputs=(3,), inputs=1):
    """Images (and extra inputs) → flatten → one Dense per entry of ``outputs``."""
    ins = [keras.Input(input_shape)] + [keras.Input((2,)) for _ in range(inputs - 1)]
    h = keras.layers.Flatten()(ins[0])
    outs = [keras.layers.Dense(n)(h) for n in outputs]
    return keras.Model(ins if inputs > 1 else ins[0], outs if len(outs) > 1 else outs[0])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: _flat_net((10, 10, 1)), r"inputs of shape \(8, 8, 1\) and the student .*\(10, 10, 1\)"),
        (lambda: _flat_net((1, 8, 8)), r"\(8, 8, 1\) and the student .*\(1, 8, 8\).*channels last"),
        (lambda: _flat_net((8, 8, 1), outputs=(3, 2)), "student .* 1 input.* and 2 output.*one of each"),
        (lambda: _flat_net((8, 8, 1), inputs=2), "student .* 2 input.* and 1 output.*one of each"),
    ],
)  # fmt: skip
def test_models_that_cannot_share_a_batch_are_refused_when_built(teacher, make, match):
    # Before, each passed construction and failed in the first step with a shape error from
    # inside Keras ("Dimension 1 in both shapes must be equal" for two outputs).
    with pytest.raises(ConfigError, match=match):
        fitnets_tf.Distiller(teacher, make())


def test_a_teacher_with_two_outputs_is_refused_and_any_size_fits(teacher, student):
    with pytest.raises(ConfigError, match="teacher .* 1 input.* and 2 output"):
        fitnets_tf.Distiller(_flat_net((8, 8, 1), outputs=(3, 3)), student)
    # None is any size: a fully convolutional student takes the teacher's images.
    inputs = keras.Input((None, None, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    fitnets_tf.Distiller(teacher, keras.Model(inputs, keras.layers.Dense(3)(h)))


def test_an_open_size_student_is_hinted_once_built_for_the_images(teacher):
    # A hint pair needs the guided map's size (the regressor's kernel is N_g - N_h + 1); the
    # message named no way to give it one from Python.
    inputs = keras.Input((None, None, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", name="guided")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    open_student = keras.Model(inputs, keras.layers.Dense(3)(h))
    with pytest.raises(HintShapeError, match=r"unknown.*at_input_shape\(model, \(H, W, C\)\)"):
        fitnets_tf.Distiller(teacher, open_student, "pool1", "guided")
    student = fitnets_tf.models.at_input_shape(open_student, (8, 8, 1))
    assert student.get_layer("guided").output.shape == (None, 8, 8, 4)
    np.testing.assert_array_equal(student.get_weights()[0], open_student.get_weights()[0])
    d = fitnets_tf.Distiller(teacher, student, "pool1", "guided")
    # onto pool1's 4x4x6 with the paper's valid kernel of 8 - 4 + 1 = 5
    assert tuple(d.regressor(tf.zeros((1, 8, 8, 4))).shape) == (1, 4, 4, 6)


def test_numpy_scalars_are_numbers_and_strings_are_named(teacher, student):
    # A value from np.linspace or a results table is a NumPy scalar (np.float32 is not a float).
    d = fitnets_tf.Distiller(teacher, student, temperature=np.float32(2.0),
                             kd_lambda=np.int64(3))  # fmt: skip
    assert float(d.temperature) == 2.0 and float(d.kd_lambda) == 3.0
    with pytest.raises(ConfigError, match=r"`kd_lambda` must be a number >= 0.*'4'"):
        fitnets_tf.Distiller(teacher, student, kd_lambda="4")  # was a TypeError from '>='


def test_an_unbuilt_sequential_student_is_not_called_subclassed(teacher):
    seq = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(3, name="out")])
    with pytest.raises(TypeError, match="Sequential model without an input.*keras.Input"):
        fitnets_tf.Distiller(teacher, seq, hint_layer="pool1", guided_layer="out")


def test_a_dataset_that_is_not_batched_is_named(teacher, student):
    # Keras took the image's first axis for the batch and failed inside a pooling layer
    # ("Negative dimension size caused by subtracting 2 from 1").
    x, y = tiny_data(8)
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    for phase in ("hints", "kd"):
        d.compile(optimizer="sgd", phase=phase)
        with pytest.raises(ValueError, match=r"one image of shape \(8, 8, 1\).*ds.batch"):
            d.fit(tf.data.Dataset.from_tensor_slices((x, y)), epochs=1, verbose=0)


class _AfterFirstStep(keras.callbacks.Callback):
    def __init__(self, variables):
        super().__init__()
        self.variables, self.values = variables, None

    def on_train_batch_end(self, batch, logs=None):
        if self.values is None:
            self.values = _values(self.variables)

    def on_epoch_end(self, epoch, logs=None):
        self.trained_to = _values(self.variables)  # before fit's end puts the averages in


@pytest.mark.parametrize("phase", ["hints", "kd"])
def test_optimizer_ema_replaces_the_phases_variables_by_their_averages(teacher, student, phase):
    # ema_momentum=1: the average is the value after the first step, for every later step. In
    # stage 1 Keras' fit paired the averages with every weight: a shape error (conv2's kernel
    # is not the regressor's), or a later student layer overwritten.
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    d.compile(optimizer=keras.optimizers.RMSprop(0.01, use_ema=True, ema_momentum=1.0),
              phase=phase)  # fmt: skip
    trained = student.trainable_weights
    if phase == "hints":
        trained = [*student.get_layer("conv1").weights, *d.regressor.weights]
    later = [w for layer in student.layers[3:] for w in layer.weights]  # conv2 onwards
    assert [id(w) for w in d.trainable_weights] == [id(w) for w in trained]
    assert len(d.trainable_weights) + len(d.non_trainable_weights) == len(d.weights)
    untrained, first_step = _values(later), _AfterFirstStep(trained)
    d.fit(tiny_dataset(), epochs=1, verbose=0, callbacks=[first_step])
    assert not _same(first_step.trained_to, first_step.values)
    assert _same(_values(trained), first_step.values)
    assert d.optimizer.iterations.numpy() == 4
    if phase == "hints":
        assert _same(_values(later), untrained)


@pytest.mark.parametrize("phase", ["hints", "kd"])
def test_a_teacher_unfrozen_after_the_distiller_was_built_is_not_trained(teacher, student, phase):
    # A notebook that builds the Distiller first, then sets teacher.trainable = True to train
    # the teacher: Keras' fit ended a use_ema run by writing the student's averages into the
    # teacher's weights, paired by position ("Cannot assign ... Shape mismatch" here, silently
    # where the shapes agree).
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    teacher.trainable = True
    d.compile(optimizer=keras.optimizers.RMSprop(0.01, use_ema=True, ema_momentum=1.0),
              phase=phase)  # fmt: skip
    assert [id(w) for w in d.trainable_weights] == [id(w) for w in d._phase_variables()]
    before = _values(teacher.weights)
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    assert _same(_values(teacher.weights), before)


def _regressor_kernel_norms(regressor, kind, hints, max_norm, axis):
    """The norms of each regressor kernel (of each output column along ``axis``) after one
    stage-1 step: the paper's code constrains them after every update."""
    teacher, student = tiny_model("teacher", 6, 0, pieces=3), tiny_model("student", 4, 1)
    d = fitnets_tf.Distiller(teacher, student, hints=hints, regressor=regressor,
                             regressor_initializer=keras.initializers.Constant(0.1),
                             regressor_max_norm=max_norm)  # fmt: skip
    assert isinstance(d.regressor, kind)
    d.compile(optimizer=keras.optimizers.SGD(1e-4), phase="hints")
    d.fit(tiny_dataset(n=8), epochs=1, verbose=0, shuffle=False)
    return np.sqrt((np.asarray(d.regressor.kernel) ** 2).sum(axis=axis))


@pytest.mark.parametrize(
    "regressor, kind, hints, axis, initial",
    [
        # guided conv1 8×8×4 → hint pool1 4×4×6: a 5×5 kernel on 4 channels, 0.1 everywhere:
        # each output channel's kernel (over rows, columns and input channels, pylearn2's
        # max_kernel_norm, as the students' MaxoutConv2D) has norm sqrt(100·0.01) = 1.
        ("auto", layers.MaxoutConv2D, [("pool1", "conv1")], (0, 1, 2), 1.0),
        ("linear", keras.layers.Conv2D, [("pool1", "conv1")], (0, 1, 2), 1.0),
        # A flat pair: each of the dense regressor's columns (max_col_norm), sqrt(4·0.01).
        ("linear", keras.layers.Dense, [("gap", "gap")], 0, 0.2),
    ],
)
def test_regressor_max_norm_bounds_every_kernel_after_a_step(regressor, kind, hints, axis, initial):
    free = _regressor_kernel_norms(regressor, kind, hints, None, axis)
    np.testing.assert_allclose(free, initial, rtol=0.02)  # one small step: about where it began
    bound = 0.9 * initial  # below: the constraint bites on every kernel
    bounded = _regressor_kernel_norms(regressor, kind, hints, bound, axis)
    np.testing.assert_allclose(bounded, bound, rtol=1e-5)


def test_regressor_max_norm_is_refused_for_a_regressor_of_ones_own(teacher, student):
    with pytest.raises(ConfigError, match="kernel_constraint"):
        fitnets_tf.Distiller(teacher, student, "pool1", "pool1", regressor_max_norm=0.9,
                             regressor=keras.layers.Conv2D(6, 1))  # fmt: skip
    with pytest.raises(ConfigError, match="regressor_max_norm"):
        fitnets_tf.Distiller(teacher, student, "pool1", "pool1", regressor_max_norm=-1.0)


def test_a_bounded_regressor_says_so_in_hints_json_and_the_log(teacher, student):
    from fitnets_tf.regressor import describe, describe_line

    bounded = fitnets_tf.Distiller(teacher, student, "pool1", "conv1", regressor_max_norm=0.9)
    described = describe(bounded.regressor)
    assert described == {"layer": "MaxoutConv2D", "kernel_size": [5, 5], "channels": 6,
                         "activation": "maxout (3 pieces)", "max_norm": 0.9}  # fmt: skip
    assert describe_line("pool1:conv1", described) == (
        "regressor pool1:conv1: MaxoutConv2D, 5x5 kernel, 6 channels, maxout (3 pieces), "
        "kernel norms <= 0.9"
    )
    linear = fitnets_tf.Distiller(teacher, student, "pool1", "conv1", regressor="linear",
                                  regressor_max_norm=np.float32(0.5)).regressor  # fmt: skip
    assert describe(linear)["max_norm"] == 0.5
    free = fitnets_tf.Distiller(teacher, student, "pool1", "conv1").regressor
    assert "max_norm" not in describe(free)  # hints.json as before the bound
