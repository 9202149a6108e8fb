"""Tests for fitnets_tf.export.fold: batch normalization folded for serving."""

import keras
import numpy as np
import pytest

from fitnets_tf.export import serving
from fitnets_tf.export.fold import fold_batch_norm


def _trained_bn(layer: keras.layers.BatchNormalization, seed: int) -> None:
    """Statistics and affine weights far from the identity, as after training."""
    rng = np.random.default_rng(seed)
    channels = layer.moving_mean.shape[0]
    layer.gamma.assign(rng.uniform(0.5, 2.0, channels))
    layer.beta.assign(rng.normal(size=channels))
    layer.moving_mean.assign(rng.normal(size=channels))
    layer.moving_variance.assign(rng.uniform(0.1, 3.0, channels))


def _bn_net(conv_bias: bool = False) -> keras.Model:
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, use_bias=conv_bias, name="conv")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="conv_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="fc")(x)
    x = keras.layers.BatchNormalization(name="fc_bn")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    for i, name in enumerate(("conv_bn", "fc_bn")):
        _trained_bn(model.get_layer(name), seed=i)
    return model


def _images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 6, 6, 2)).astype("float32")


@pytest.mark.parametrize("conv_bias", [False, True])
def test_folded_net_computes_the_same_function_without_batch_norm(conv_bias):
    model = _bn_net(conv_bias)
    before = [w.copy() for w in model.get_weights()]
    folded = fold_batch_norm(model)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in kinds
    assert kinds.count("Identity") == 2
    assert folded.get_layer("conv").use_bias and folded.get_layer("fc").use_bias
    x = _images()
    np.testing.assert_allclose(
        folded(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5
    )
    # The original is untouched.
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_folded_weights_are_the_hand_computed_ones():
    # One 1x1 conv channel: z = 2x + 1; BN: gamma 3, beta 0.5, mean 1, var 4 - eps.
    inputs = keras.Input((1, 1, 1))
    x = keras.layers.Conv2D(1, 1, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(epsilon=0.01, name="bn")(x))
    model.get_layer("conv").set_weights([np.full((1, 1, 1, 1), 2.0), np.array([1.0])])
    model.get_layer("bn").set_weights([np.array(v) for v in ([3.0], [0.5], [1.0], [3.99])])
    kernel, bias = fold_batch_norm(model).get_layer("conv").get_weights()
    # scale = 3 / sqrt(4) = 1.5: kernel 2 * 1.5 = 3, bias (1 - 1) * 1.5 + 0.5 = 0.5.
    np.testing.assert_allclose([kernel.item(), bias.item()], [3.0, 0.5], rtol=1e-6)


def test_what_does_not_fold_is_left_alone():
    inputs = keras.Input((6, 6, 2))
    shared = keras.layers.Conv2D(2, 1, name="shared")(inputs)
    a = keras.layers.BatchNormalization(name="bn_of_shared")(shared)
    b = keras.layers.Conv2D(2, 1, activation="relu", name="activated")(inputs)
    b = keras.layers.BatchNormalization(name="bn_after_relu")(b)
    c = keras.layers.BatchNormalization(name="bn_after_add")(keras.layers.Add()([a, b]))
    outputs = keras.layers.Concatenate()([c, shared])  # `shared` has a second reader
    model = keras.Model(inputs, outputs)
    assert fold_batch_norm(model) is model


def test_a_model_without_batch_norm_is_returned_as_is():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert fold_batch_norm(model) is model


def test_serving_model_is_folded_and_matches_the_student():
    student = _bn_net()
    served = serving.build_serving_model(student)
    inner = [layer for layer in served.layers if isinstance(layer, keras.Model)]
    assert len(inner) == 1
    assert not any(isinstance(x, keras.layers.BatchNormalization) for x in inner[0].layers)
    x = _images()
    expected = keras.ops.softmax(student(x, training=False)).numpy()
    np.testing.assert_allclose(served(x)["probabilities"], expected, rtol=1e-5, atol=1e-6)


def test_a_shared_batch_norm_is_left_alone():
    inputs = keras.Input((6, 6, 2))
    bn = keras.layers.BatchNormalization(name="shared_bn")
    a = bn(keras.layers.Conv2D(2, 1, name="a")(inputs))
    b = bn(keras.layers.Conv2D(2, 1, name="b")(inputs))
    model = keras.Model(inputs, keras.layers.Add()([a, b]))
    assert fold_batch_norm(model) is model


def test_a_model_with_a_shared_layer_is_left_alone():
    # `shared` reads the conv's output in one of its two calls: folding would change what it reads.
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(2, 1, name="conv")(inputs)
    shared = keras.layers.Conv2D(2, 1, name="shared")
    outputs = [keras.layers.BatchNormalization()(conv), shared(conv), shared(inputs)]
    model = keras.Model(inputs, keras.layers.Add()(outputs))
    assert fold_batch_norm(model) is model


def test_a_float32_model_folds_in_float32_under_a_mixed_precision_policy():
    # The default experiment trains in mixed_bfloat16 and serves float32 copies: the folded
    # copy must not take the global policy (it did: its Identity layers rounded to bfloat16).
    model = _bn_net()
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32 afterwards
    folded = fold_batch_norm(model)
    computing = [layer for layer in folded.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert {layer.dtype_policy.compute_dtype for layer in computing} == {"float32"}
    x = _images()
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-5, atol=1e-5)
    # A served model is served as it is (the run's latency step serves a served copy again),
    # and it still clones (a served copy is written as .keras by the exports).
    assert serving.as_served(folded) is folded
    clone = keras.models.clone_model(folded)
    clone.set_weights(folded.get_weights())
    np.testing.assert_allclose(clone(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_folding_mistake_is_caught_before_anything_is_written(monkeypatch):
    from fitnets_tf.errors import ExportVerificationError
    from fitnets_tf.export import fold

    wrong = fold._folded
    monkeypatch.setattr(fold, "_folded", lambda p, bn: [w * 2 for w in wrong(p, bn)])
    with pytest.raises(ExportVerificationError, match="Folding batch normalization changed"):
        fold_batch_norm(_bn_net())
