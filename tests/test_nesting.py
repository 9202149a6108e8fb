"""Models nested in models (a backbone in a Sequential, a block that is a model): their layers
are hint and guided layers like any other (fitnets_tf.models.nesting)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fitnets_tf
from fitnets_tf import hint_choice, teacher_cache
from fitnets_tf.errors import ConfigError
from fitnets_tf.models import count_multiplications, nesting, sources


def _backbone(name: str, prefix: str) -> keras.Model:
    """8×8×3 → conv (8×8×4) → BN → ReLU → pool (4×4×4): a backbone as applications build one."""
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name=f"{prefix}conv")(inputs)
    h = keras.layers.BatchNormalization(name=f"{prefix}bn")(h)
    h = keras.layers.ReLU(name=f"{prefix}relu")(h)
    return keras.Model(inputs, keras.layers.MaxPooling2D(name=f"{prefix}pool")(h), name=name)


def _teacher(seed=0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 3)), _backbone("backbone", "t_"),
                             keras.layers.GlobalAveragePooling2D(name="t_gap"),
                             keras.layers.Dense(3, name="t_logits")], name="teacher")  # fmt: skip


def _student(seed=1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="images")
    h = _backbone("block", "s_")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="s_gap")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="s_logits")(h), name="student")


X = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")


def test_flattened_shares_layers_and_computes_the_same():
    teacher = _teacher()
    flat = nesting.flattened(teacher)
    assert [layer.name for layer in flat.layers[1:]] == [
        "t_conv", "t_bn", "t_relu", "t_pool", "t_gap", "t_logits"]  # fmt: skip
    assert flat.get_layer("t_conv") is teacher.layers[0].get_layer("t_conv")
    for training in (False, True):
        np.testing.assert_allclose(flat(X, training=training), teacher(X, training=training),
                                   rtol=1e-6)  # fmt: skip
    assert nesting.flattened(flat) is flat  # nothing nested: itself
    assert count_multiplications(flat) == count_multiplications(teacher) == 8 * 8 * 4 * 27 + 3 * 4


def test_distiller_taps_layers_inside_nested_models():
    teacher, student = _teacher(), _student()
    d = fitnets_tf.Distiller(teacher, student, hint_layer="t_pool", guided_layer="s_relu")
    backbone = teacher.layers[0]
    np.testing.assert_allclose(d._taps.teacher_hint(X), backbone(X), rtol=1e-6)
    assert d.regressor.kernel.shape == (5, 5, 4, 4)  # N_g - N_h + 1 = 8 - 4 + 1
    # The user's own student is the one trained: the layers are shared, not copied.
    before = student.get_layer("block").get_layer("s_conv").kernel.numpy().copy()
    d.compile(keras.optimizers.SGD(0.1), phase="hints")
    d.fit(tf.data.Dataset.from_tensor_slices((X, np.arange(4) % 3)).batch(4), verbose=0)
    assert not np.allclose(student.get_layer("block").get_layer("s_conv").kernel, before)


def test_hints_auto_and_the_teacher_cache_see_nested_layers():
    teacher, student = _teacher(), _student()
    d = fitnets_tf.Distiller(teacher, student, hints="auto")
    assert d.hints == [("t_pool", "s_pool")]
    assert "t_relu" in hint_choice.describe_layers(d.teacher)
    outputs = teacher_cache.outputs_function(d.teacher, "t_pool")(tf.constant(X))
    np.testing.assert_allclose(outputs["teacher_hint"], teacher.layers[0](X), rtol=1e-6)
    assert teacher_cache.hint_bytes(d.teacher, "t_pool", 10) == 4 * 4 * 4 * 4 * 10


def test_naming_the_nested_model_itself_names_its_output_layer():
    with pytest.raises(ConfigError, match="'backbone' is a model nested in 'teacher'.*its "
                                          "output is the layer 't_pool'"):  # fmt: skip
        fitnets_tf.Distiller(_teacher(), _student(), hint_layer="backbone", guided_layer="s_relu")


def test_a_file_model_is_flattened_for_the_command_line(tmp_path):
    path = str(tmp_path / "teacher.keras")
    _teacher().save(path)
    teacher = sources.resolve(path, (8, 8, 3), 3, keep_weights=True, role="teacher")
    assert "t_relu" in [layer.name for layer in teacher.layers]


def test_repeated_names_stay_nested_and_the_error_says_why():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = _backbone("first", "x_")(inputs)
    h = keras.layers.Conv2D(3, 1, name="to_rgb")(h)
    h = keras.layers.UpSampling2D(name="up")(h)
    h = _backbone("second", "x_")(h)  # the same layer names again
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    teacher = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="twice")
    assert nesting.flattened(teacher) is teacher
    with pytest.raises(ConfigError, match="nested model 'first'.*repeat: x_bn, x_conv"):
        fitnets_tf.Distiller(teacher, _student(), hint_layer="x_relu", guided_layer="s_pool")
    with pytest.raises(ConfigError, match="'second' .* is a nested model"):
        fitnets_tf.Distiller(teacher, _student(), hint_layer="second", guided_layer="s_pool")


def test_the_regressor_takes_the_non_linearity_of_a_hint_inside_a_backbone():
    # The hint is a pooling of a ReLU(6.) (MobileNets' activation) inside a nested model: the
    # pooling's parent was hidden by its two calls (nested graph and flattened), and a ReLU6
    # read as a plain ReLU, so the regressor came out linear, then unbounded.
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="t_conv")(inputs)
    h = keras.layers.ReLU(6.0, name="t_relu6")(h)
    backbone = keras.Model(inputs, keras.layers.MaxPooling2D(name="t_pool")(h), name="backbone")
    teacher = keras.Sequential([keras.Input((8, 8, 3)), backbone,
                                keras.layers.GlobalAveragePooling2D(name="t_gap"),
                                keras.layers.Dense(3, name="t_logits")], name="teacher")  # fmt: skip
    d = fitnets_tf.Distiller(teacher, _student(), hint_layer="t_pool", guided_layer="s_relu")
    assert keras.activations.serialize(d.regressor.activation) == "relu6"


def test_a_flattened_student_folds_its_batch_norm_for_serving():
    # Its layers were called in the nested model's graph too: the fold took them for shared
    # layers and folded nothing, so a run timed its nested student unfolded.
    from fitnets_tf.export.fold import fold_batch_norm

    student = nesting.flattened(_student())
    folded = fold_batch_norm(student)
    assert "s_bn" in [layer.name for layer in student.layers]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    np.testing.assert_allclose(folded(X), student(X), rtol=1e-5, atol=1e-6)


def test_a_softmax_inside_a_nested_classifier_is_left_out():
    # keras.Sequential([Rescaling, keras.applications.MobileNetV2(classes=10)]): the softmax is
    # the application's last layer. Unseen, KD took its probabilities for logits; seen but
    # read from the application's own graph, the teacher's logits were "not connected".
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.GlobalAveragePooling2D(name="t_gap")(_backbone("backbone", "t_")(inputs))
    classifier = keras.Model(inputs, keras.layers.Dense(3, activation="softmax",
                                                        name="predictions")(h), name="app")  # fmt: skip
    teacher = keras.Sequential([keras.Input((8, 8, 3)), classifier], name="teacher")
    d = fitnets_tf.Distiller(teacher, _student(), kd_lambda=1.0)  # KD only
    probabilities = teacher(X).numpy()
    np.testing.assert_allclose(keras.ops.softmax(d.teacher(X)), probabilities, rtol=1e-5)
    assert not np.allclose(d.teacher(X), probabilities)
