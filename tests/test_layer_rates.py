"""A learning rate of their own for the convolutions (the paper's code: 0.05 × the rate)."""

import keras
import numpy as np
import pytest
from conftest import tiny_dataset, tiny_model

from fitnets_tf import Distiller, layer_rates, recipes, stages
from fitnets_tf.config import ExperimentConfig
from fitnets_tf.errors import ConfigError
from fitnets_tf.layers import MaxoutConv2D, MaxoutDense


def conv_dense(seed=0) -> keras.Model:
    """4×4×1 → Conv2D(2, 3) → Flatten → Dense(3)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(h))


def one_step(optimizer, model):
    """The weights before and after one step on a fixed batch, and the step's gradients."""
    x = np.linspace(-1, 1, 2 * 16, dtype="float32").reshape(2, 4, 4, 1)
    y = np.array([0, 2])
    before = [v.numpy().copy() for v in model.trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    import tensorflow as tf  # noqa: PLC0415

    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    after = [v.numpy() for v in model.trainable_variables]
    return before, after, [g.numpy() for g in grads]


def test_rmsprop_scales_the_convolutions_step_not_their_gradient():
    model = conv_dense()
    variables = layer_rates.convolution_variables(model)
    assert [v.path for v in variables] == ["conv/kernel", "conv/bias"]
    optimizer = recipes.build_optimizer("rmsprop", 5e-3, epsilon=1e-10,
                                        scaled_variables=variables, rate_scale=0.05)  # fmt: skip
    before, after, grads = one_step(optimizer, model)
    for i, (w0, w1, g) in enumerate(zip(before, after, grads, strict=True)):
        rate = 5e-3 * (0.05 if i < 2 else 1.0)  # conv kernel, conv bias, then fc
        # RMSProp's first step: v = 0.1·g², w -= rate·g / sqrt(v + ε).
        expected = w0 - rate * g / np.sqrt(0.1 * g.astype("float64") ** 2 + 1e-10)
        np.testing.assert_allclose(w1, expected, rtol=1e-5, atol=1e-9)
    # Scaling the gradients instead would have left RMSProp's step at the full rate: the
    # conv kernel's step is 0.05 of the plain optimizer's (about 1.6e-2 of each weight here).
    plain = conv_dense()
    p0, p1, _ = one_step(recipes.build_optimizer("rmsprop", 5e-3, epsilon=1e-10), plain)
    np.testing.assert_allclose(after[0] - before[0], 0.05 * (p1[0] - p0[0]), rtol=1e-4)
    for scaled, unscaled in zip(after[2:], p1[2:], strict=True):  # the dense layer's: the same
        np.testing.assert_array_equal(scaled, unscaled)


def test_a_scaled_variable_decays_at_its_own_rate():
    # SGD with decoupled decay: w -= rate·wd·w, then w -= rate·g, at 0.05 × 0.1 for the conv.
    model = conv_dense()
    optimizer = recipes.build_optimizer(
        "sgd", 0.1, weight_decay=0.5, rate_scale=0.05,
        scaled_variables=layer_rates.convolution_variables(model),
    )  # fmt: skip
    before, after, grads = one_step(optimizer, model)
    kernel_rate, fc_rate = 0.1 * 0.05, 0.1
    decayed = before[0] - kernel_rate * 0.5 * before[0]
    np.testing.assert_allclose(after[0], decayed - kernel_rate * grads[0], rtol=1e-6)
    np.testing.assert_allclose(after[1], before[1] - kernel_rate * grads[1], rtol=1e-6)  # bias
    fc_decayed = before[2] - fc_rate * 0.5 * before[2]
    np.testing.assert_allclose(after[2], fc_decayed - fc_rate * grads[2], rtol=1e-6)


class Block(keras.layers.Layer):
    """A custom layer holding a convolution Keras lists in none of the model's layers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(2, 1, name="inner")

    def call(self, x):
        return x + self.conv(x)


def test_convolutions_are_found_in_nested_models_and_custom_layers_not_elsewhere():
    inner = keras.Sequential([keras.Input((6, 6, 2)),
                              keras.layers.SeparableConv2D(2, 3, padding="same", name="sep")],
                             name="backbone")  # fmt: skip
    inputs = keras.Input((6, 6, 1))
    h = MaxoutConv2D(2, 3, pieces=2, padding="same", name="maxout")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(inner(Block(name="block")(h)))
    h = MaxoutDense(3, pieces=2, name="maxout_fc")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(h))
    found = sorted(v.path for v in layer_rates.convolution_variables(model))
    assert found == ["backbone/sep/bias", "backbone/sep/depthwise_kernel",
                     "backbone/sep/pointwise_kernel", "block/inner/bias", "block/inner/kernel",
                     "maxout/bias", "maxout/kernel"]  # fmt: skip


def test_the_factors_survive_a_fresh_copy_and_a_saved_model_loads(tmp_path):
    model = conv_dense()
    hparams = stages.Hyperparameters(conv_lr_scale=0.05, epsilon=1e-10)
    optimizer = hparams.optimizer(model=model)
    assert isinstance(optimizer, keras.optimizers.RMSprop) and optimizer.epsilon == 1e-10
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.zeros((2, 4, 4, 1)), np.zeros((2, 3)), verbose=0)
    copy = recipes.unused_optimizer(optimizer)
    assert copy is not optimizer and copy.rate_factors() == optimizer.rate_factors()
    assert sorted(copy.rate_factors().values()) == [0.05, 0.05]
    model.save(tmp_path / "m.keras")  # compiled: the optimizer's class is saved by name
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is layer_rates.RMSprop


def test_a_stage_trains_the_students_convolutions_at_the_scaled_rate():
    # Stage 2 through stages.fit_kd, SGD: the convolutions move 0.05 × as far as without
    # the option after one step, the logits layer as far.
    moved = {}
    for scale in (1.0, 0.05):
        student = tiny_model("student", 4, 1, batch_norm=False)
        d = Distiller(tiny_model("teacher", 6, 0), student, "pool1", "pool1")
        start = [w.copy() for w in student.get_weights()]
        hp = stages.Hyperparameters(optimizer_name="sgd", learning_rate=2.0, conv_lr_scale=scale)
        stages.fit_kd(d, tiny_dataset(batch_size=32, n=32), epochs=1, hparams=hp, verbose=0)
        moved[scale] = [w - s for w, s in zip(student.get_weights(), start, strict=True)]
    names = [v.path for v in student.weights]
    for name, full, scaled in zip(names, moved[1.0], moved[0.05], strict=True):
        factor = 0.05 if name.startswith(("conv1/", "conv2/")) else 1.0
        np.testing.assert_allclose(scaled, factor * full, rtol=1e-3, atol=1e-7, err_msg=name)


def test_refusals_name_the_option():
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="mlp")
    with pytest.raises(ValueError, match="conv_lr_scale=0.05 .* model 'mlp' has none"):
        stages.Hyperparameters(conv_lr_scale=0.05).optimizer(model=dense)
    with pytest.raises(ValueError, match="epsilon=1e-08 is RMSProp's.*sgd has none"):
        recipes.build_optimizer("sgd", 0.1, epsilon=1e-8)
    with pytest.raises(ValueError, match="rate_scale must be a finite number > 0"):
        recipes.build_optimizer("sgd", 0.1, rate_scale=0.0)
    with pytest.raises(ConfigError, match="epsilon=1e-08 is RMSProp's"):
        ExperimentConfig.from_values({"optimizer": "sgd", "epsilon": 1e-8}).validate()
    with pytest.raises(ConfigError, match="conv_lr_scale"):
        ExperimentConfig.from_values({"conv_lr_scale": 0.0}).validate()


def test_the_options_reach_the_stages_hyperparameters():
    config = ExperimentConfig.from_values({"conv_lr_scale": 0.05, "epsilon": 1e-10})
    hparams = config.hyperparameters()
    assert (hparams.conv_lr_scale, hparams.epsilon) == (0.05, 1e-10)
    assert config.hyperparameters(teacher=True).conv_lr_scale == 0.05
    # A stage-1 optimizer of its own runs with Keras' defaults: no ε of another optimizer.
    own = stages.Hyperparameters(epsilon=1e-10, hints_optimizer="adam").stage_one()
    assert own.epsilon is None and own.conv_lr_scale == 1.0
