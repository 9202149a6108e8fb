"""fitnets_tf's own layers and nets are channels last, whatever Keras' global image data format.

A notebook may call ``keras.config.set_image_data_format("channels_first")`` (PyTorch's
layout) for models of its own. Every Keras layer built later without a ``data_format`` takes
that setting: the registered nets, the maxout layers and the hint regressor used to, and then
failed at their first call, or (the CIFAR ResNets) ran on a (32, 32, 3) image as 32 channels of
32 × 3 pixels, without a word.
"""

import keras
import numpy as np
import pytest
from conftest import tiny_dataset, tiny_model

import fitnets_tf
from fitnets_tf import hint_choice, models, stages
from fitnets_tf.errors import HintShapeError


@pytest.fixture
def channels_first():
    keras.config.set_image_data_format("channels_first")
    try:
        yield
    finally:
        keras.config.set_image_data_format("channels_last")


def _outputs(name, shape):
    model = models.build(name, shape, 10, seed=0)
    x = np.random.default_rng(0).random((2, *shape)).astype("float32")
    return model.output.shape, np.asarray(model(x, training=False))


@pytest.mark.parametrize(
    ("name", "shape"),
    [("mnist_fitnet", (28, 28, 1)), ("thin_cnn", (28, 28, 1)), ("resnet8x4", (32, 32, 3)),
     ("wrn_16_1", (32, 32, 3)), ("vgg8", (32, 32, 3))],
)  # fmt: skip
def test_a_registered_net_is_the_same_under_a_channels_first_setting(name, shape):
    expected_shape, expected = _outputs(name, shape)
    keras.config.set_image_data_format("channels_first")
    try:
        got_shape, got = _outputs(name, shape)
    finally:
        keras.config.set_image_data_format("channels_last")
    assert got_shape == expected_shape == (None, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("regressor", "kind"), [("auto", "MaxoutConv2D"), ("linear", "Conv2D")])
def test_hints_train_channels_last_models_under_a_channels_first_setting(
    channels_first, regressor, kind
):
    # The models were built before the setting changed; the regressor is built after it.
    keras.config.set_image_data_format("channels_last")
    teacher = tiny_model("teacher", width=6, seed=0, pieces=3)
    student = tiny_model("student", width=4, seed=1)
    keras.config.set_image_data_format("channels_first")
    d = fitnets_tf.Distiller(teacher, student, "pool1", "conv1", regressor=regressor)
    assert type(d.regressor).__name__ == kind
    assert d.regressor.compute_output_shape((None, 8, 8, 4)) == (None, 4, 4, 6)
    d.compile(optimizer=keras.optimizers.SGD(0.01), phase="hints")
    history = d.fit(tiny_dataset(), epochs=2, verbose=0).history
    assert np.isfinite(history["hint_loss"]).all()
    assert history["hint_loss"][1] < history["hint_loss"][0]


def test_the_stagewise_head_pools_a_channels_last_map(channels_first):
    keras.config.set_image_data_format("channels_last")
    student = tiny_model("student", width=4, seed=1)
    keras.config.set_image_data_format("channels_first")
    head = stages.guided_classifier(student, "conv1", 3, seed=0)  # (8, 8, 4)
    assert head.output.shape == (None, 3)
    assert head.get_layer("guided_labels_logits").kernel.shape == (4, 3)  # the map's channels


def _channels_first_model(name: str, width: int, seed: int) -> keras.Model:
    """(1, 8, 8) → conv → pool → conv → GAP → logits, every layer channels first."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((1, 8, 8))
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                            data_format="channels_first", name=f"{name}_conv1")(inputs)  # fmt: skip
    h = keras.layers.MaxPooling2D(2, data_format="channels_first", name=f"{name}_pool1")(h)
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                            data_format="channels_first", name=f"{name}_conv2")(h)  # fmt: skip
    h = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name=f"{name}_logits")(h), name=name)


@pytest.mark.parametrize("hints", ["auto", [("t_pool1", "s_conv1")]])
def test_hints_between_channels_first_models_are_refused_naming_the_layout(hints):
    # Their (C, H, W) maps were read as (H, W, C): t_pool1's (6, 4, 4) as a 6x4 map of 4
    # channels, refused as larger than s_conv1's (4, 8, 8), "a 4x8 map", which it is not.
    teacher, student = _channels_first_model("t", 6, 0), _channels_first_model("s", 4, 1)
    match = (r"teacher 't' computes channels first \(data_format='channels_first': t_conv1, "
             r"t_pool1, t_conv2.*Build it channels last.*or distil it by KD alone")  # fmt: skip
    with pytest.raises(HintShapeError, match=match):
        fitnets_tf.Distiller(teacher, student, hints=hints)
    described = hint_choice.describe_models(teacher, student)
    assert "hints=auto cannot choose a pair: Hints need channels-last" in described


def test_channels_first_models_distil_by_kd_alone():
    teacher, student = _channels_first_model("t", 6, 0), _channels_first_model("s", 4, 1)
    d = fitnets_tf.Distiller(teacher, student)
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    x = np.random.default_rng(0).random((16, 1, 8, 8)).astype("float32")
    history = d.fit(x, np.arange(16) % 3, batch_size=8, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][1] < history["loss"][0]


def _tiny_application(input_shape=None, classes=1000, weights=None, classifier_activation=None):
    """A constructor as keras.applications' are: its layers take the global data format."""
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(h))


def test_an_application_is_built_channels_last_under_a_channels_first_setting(
    channels_first, monkeypatch
):
    # ~/.keras/keras.json's "image_data_format": "channels_first" (a CLI user's machine) gave
    # an application that setting: (8, 8, 3) images read as 8 channels of 8 × 3.
    from fitnets_tf.models import sources

    monkeypatch.setattr(keras.applications, "TinyNet", _tiny_application, raising=False)
    model = sources.resolve("keras.applications.TinyNet", (8, 8, 3), 4, seed=0)
    assert keras.config.image_data_format() == "channels_first"  # the setting given back
    assert {model.get_layer(n).data_format for n in ("conv", "pool")} == {"channels_last"}
    assert model.get_layer("conv").kernel.shape == (3, 3, 3, 4)  # 3 channels in, not 8
    assert model(np.zeros((2, 8, 8, 3), "float32")).shape == (2, 4)


@pytest.mark.slow  # MobileNetV3Small built and re-created: 4.4 to 8.5 s here beside training runs
def test_mobilenet_v3_small_is_built_channels_last_under_a_channels_first_setting(channels_first):
    # It refused (32, 32, 3) images, as 32 channels of 32 × 3: "Input size must be at least
    # 32x32".
    from fitnets_tf.models import sources

    student = sources.resolve("keras.applications.MobileNetV3Small", (32, 32, 3), 4, seed=0)
    formats = {layer.data_format for layer in student.layers if hasattr(layer, "data_format")}
    assert formats == {"channels_last"}
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    assert student(x).shape == (2, 4)
