import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data, tiny_dataset, tiny_model

from fitnets_tf import losses, stages

HP = stages.Hyperparameters(learning_rate=5e-3, lambda_hold=1)


@pytest.mark.parametrize(
    ("mode", "mode_stages"),
    [("fitnet", ["hints", "kd"]), ("kd", ["kd"]), ("scratch", ["scratch"]),
     ("stagewise_labels", ["guided_labels", "kd"])],
)  # fmt: skip
def test_every_mode_runs_its_stages(mode, mode_stages):
    teacher = tiny_model("teacher", 6, 0)
    student = tiny_model("student", 4, 1)
    seen = []
    histories = stages.train_student(
        mode, teacher, student, tiny_dataset(), tiny_dataset(),
        hparams=HP, hint_layer="pool1", guided_layer="pool1", hints_epochs=1, kd_epochs=3,
        callbacks_for=lambda stage: seen.append(stage) or [], verbose=0,
    )  # fmt: skip
    assert list(histories) == mode_stages == seen
    last = histories[mode_stages[-1]].history
    assert np.all(np.isfinite(last["loss"])) and "val_accuracy" in last
    if mode_stages[-1] == "kd":
        np.testing.assert_allclose(last["kd_lambda"], [4.0, 4.0, 1.0])  # hold 1, then decay



@pytest.mark.parametrize("mode", ["fitnet", "scratch"])
def test_metrics_of_ones_own_replace_accuracy_where_class_outputs_train(mode):
    top2 = keras.metrics.SparseTopKCategoricalAccuracy(2, name="top2")
    histories = stages.train_student(
        mode, tiny_model("teacher", 6, 0), tiny_model("student", 4, 1), tiny_dataset(),
        hparams=HP, hint_layer="pool1", guided_layer="pool1", hints_epochs=1, kd_epochs=1,
        verbose=0, metrics=[top2],
    )  # fmt: skip
    last = list(histories.values())[-1].history
    assert "top2" in last and "accuracy" not in last

def test_stagewise_labels_stage_one_trains_only_up_to_the_guided_layer():
    student = tiny_model("student", 4, 1)
    head = stages.guided_classifier(student, "pool1", 3)
    logits_before = [w.copy() for w in student.get_layer("logits").get_weights()]
    conv1_before = student.get_layer("conv1").get_weights()[0].copy()
    stages.fit_labels(head, tiny_dataset(), epochs=1, hparams=HP, verbose=0)
    assert not np.array_equal(conv1_before, student.get_layer("conv1").get_weights()[0])
    for a, b in zip(logits_before, student.get_layer("logits").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_modes_validate_their_inputs():
    student = tiny_model("student", 4, 1)
    with pytest.raises(ValueError, match="mode"):
        stages.train_student("joint", None, student, tiny_dataset())
    with pytest.raises(ValueError, match="hint_layer"):
        stages.train_student("fitnet", student, student, tiny_dataset())
    with pytest.raises(ValueError, match="teacher"):
        stages.train_student("kd", None, student, tiny_dataset())


def test_fit_labels_trains_a_model_that_ends_in_a_softmax_without_a_logits_warning():
    # A teacher of one's own often ends in Dense(..., activation="softmax"). The loss was
    # from_logits=True, and Keras warned that it "does not represent logits. Was this intended?"
    # (it takes the softmax's input, so the numbers were right; the warning was not).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    x, y = tiny_data(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = stages.fit_labels(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
                                    epochs=1, hparams=stages.Hyperparameters(), verbose=0)  # fmt: skip
    assert not [w for w in caught if "from_logits" in str(w.message)]
    assert np.isfinite(history.history["loss"][0])


def test_a_model_fit_labels_trained_saves_and_loads_with_its_loss(tmp_path):
    # Its loss weighs examples as one device would under several replicas
    # (losses.LabelsCrossentropy, test_distribute.py); saved compiled, it loads so, and on one
    # device it is Keras' sparse cross-entropy to the bit.
    model = tiny_model("m", width=4, seed=0)
    stages.fit_labels(model, tiny_dataset(), epochs=1, hparams=stages.Hyperparameters(),
                      verbose=0)  # fmt: skip
    assert isinstance(model.loss, losses.LabelsCrossentropy)
    x, y = tiny_data(16)
    logits = model(x)
    keras_own = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    assert float(model.loss(y, logits)) == float(keras_own)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, losses.LabelsCrossentropy)
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
