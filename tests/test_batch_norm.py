"""Tests for fitnets_tf.batch_norm: Keras' batch norm computed by TensorFlow's fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fitnets_tf import models
from fitnets_tf.batch_norm import FusedBatchNormalization, with_fused_batch_norm
from fitnets_tf.models import sources


def _pair(shape, **kwargs):
    """Keras' layer and the fused one, built for ``shape``, with the same non-trivial weights."""
    keras_bn = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    rng = np.random.default_rng(0)
    for layer in (keras_bn, fused):
        layer.build(shape)
    for a, b in zip(keras_bn.weights, fused.weights, strict=True):
        value = rng.uniform(0.5, 2.0, a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    return keras_bn, fused


def _inputs(shape, seed=1):
    return tf.constant(np.random.default_rng(seed).normal(2.0, 3.0, shape).astype("float32"))


def _step(layer, x, training=True, **kwargs):
    """Output, and gradients of a weighted sum of it with respect to x, γ and β."""
    weights = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training, **kwargs)
        loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
    return y, tape.gradient(loss, [x, *layer.trainable_weights])


def _op_types(layer, x, training=True, **kwargs) -> set:
    graph = tf.function(lambda x: layer(x, training=training, **kwargs)).get_concrete_function(x)
    return {op.type for op in graph.graph.get_operations()}


@pytest.mark.parametrize("shape", [(4, 3, 3, 5), (6, 5)], ids=["conv", "dense"])
@pytest.mark.parametrize("epsilon", [1e-3, 1e-5])
def test_training_step_is_keras_up_to_rounding(shape, epsilon):
    keras_bn, fused = _pair(shape, momentum=0.9, epsilon=epsilon)
    x = _inputs(shape)
    (y_k, grads_k), (y_f, grads_f) = _step(keras_bn, x), _step(fused, x)
    np.testing.assert_allclose(y_f, y_k, rtol=1e-5, atol=1e-5)
    for g_f, g_k in zip(grads_f, grads_k, strict=True):
        np.testing.assert_allclose(g_f, g_k, rtol=1e-4, atol=1e-5)
    # The moving variance averages the biased batch variance, as Keras'.
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(fused, name), getattr(keras_bn, name), rtol=1e-5)
    assert "FusedBatchNormV3" in _op_types(fused, x)


def test_moving_statistics_pinned():
    layer = FusedBatchNormalization(momentum=0.9)
    x = tf.constant([0.0, 2.0, 4.0, 6.0], shape=(4, 1, 1, 1))
    layer(x, training=True)
    # mean 3; biased variance 5 (the kernel's Bessel-corrected 20/3 converted back).
    np.testing.assert_allclose(layer.moving_mean, [0.1 * 3.0], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, [0.9 * 1.0 + 0.1 * 5.0], rtol=1e-6)


@pytest.mark.parametrize("trainable", [True, False])
def test_inference_is_keras_bit_for_bit(trainable):
    shape = (4, 3, 3, 5)
    keras_bn, fused = _pair(shape, epsilon=1e-5)
    fused.trainable = keras_bn.trainable = trainable
    x = _inputs(shape)
    # A frozen layer normalises with its moving statistics even when training, as Keras'.
    for training in (False, not trainable):
        (y_k, grads_k), (y_f, grads_f) = (_step(keras_bn, x, training=training),
                                          _step(fused, x, training=training))  # fmt: skip
        np.testing.assert_array_equal(y_f, y_k)
        for g_f, g_k in zip(grads_f, grads_k, strict=True):
            np.testing.assert_array_equal(g_f, g_k)
        # Not the kernel: its inference-mode gradient has no deterministic GPU version.
        assert "FusedBatchNormV3" not in _op_types(fused, x, training=training)
    np.testing.assert_array_equal(fused.moving_mean, keras_bn.moving_mean)  # not updated


@pytest.mark.parametrize(
    "shape, kwargs, call_kwargs",
    [
        ((4, 5, 3, 3), {"axis": 1}, {}),  # channels first
        ((4, 3, 5), {}, {}),  # rank 3
        ((4, 3, 5), {}, {"mask": tf.constant([[True, True, False]] * 4)}),
        ((4, 3, 3, 5), {"renorm": True}, {}),
        ((4, 3, 3, 5), {"synchronized": True}, {}),
    ],
    ids=["channels_first", "rank3", "mask", "renorm", "synchronized"],
)
def test_falls_back_to_keras_exactly(shape, kwargs, call_kwargs):
    keras_bn, fused = _pair(shape, **kwargs)
    x = _inputs(shape)
    (y_k, grads_k), (y_f, grads_f) = (
        _step(keras_bn, x, **call_kwargs),
        _step(fused, x, **call_kwargs),
    )
    np.testing.assert_array_equal(y_f, y_k)
    for g_f, g_k in zip(grads_f, grads_k, strict=True):
        np.testing.assert_array_equal(g_f, g_k)
    assert "FusedBatchNormV3" not in _op_types(fused, x, **call_kwargs)


def test_without_center_and_scale():
    shape = (4, 3, 3, 5)
    keras_bn, fused = _pair(shape, center=False, scale=False)
    x = _inputs(shape)
    np.testing.assert_allclose(_step(fused, x)[0], _step(keras_bn, x)[0], rtol=1e-5, atol=1e-5)


def test_mixed_precision_keeps_float32_statistics():
    shape = (4, 3, 3, 5)
    keras_bn, fused = _pair(shape, dtype="mixed_bfloat16", momentum=0.9)
    x = tf.cast(_inputs(shape), "bfloat16")
    y_k, y_f = keras_bn(x, training=True), fused(x, training=True)
    assert y_f.dtype == tf.bfloat16 and fused.moving_variance.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y_f, "float32"), tf.cast(y_k, "float32"), atol=0.05)
    np.testing.assert_allclose(fused.moving_variance, keras_bn.moving_variance, rtol=1e-5)


def test_saved_model_file_keeps_the_layer(tmp_path):
    model = models.build("thin_cnn", (28, 28, 1), 10, seed=0)
    assert isinstance(model.get_layer("conv1_bn"), FusedBatchNormalization)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("conv1_bn")) is FusedBatchNormalization
    assert loaded.get_layer("conv1_bn").get_config() == model.get_layer("conv1_bn").get_config()
    x = _inputs((2, 28, 28, 1))
    np.testing.assert_array_equal(loaded(x), model(x))


class _MyNorm(keras.layers.BatchNormalization):
    pass


def _nested_model():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(name="inner_bn")])
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="fc")(inputs)
    x = _MyNorm(name="mine")(keras.layers.BatchNormalization(name="bn")(x))
    model = keras.Model(inputs, inner(x))
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape))
    return model


def test_with_fused_batch_norm_copies_nested_models_and_weights():
    model = _nested_model()
    copy = with_fused_batch_norm(model)
    kinds = {layer.name: type(layer) for layer in copy.layers}
    assert kinds["bn"] is FusedBatchNormalization and kinds["mine"] is _MyNorm
    assert type(copy.layers[-1].get_layer("inner_bn")) is FusedBatchNormalization
    x = _inputs((5, 4))
    for training in (False, True):
        np.testing.assert_allclose(copy(x, training=training), model(x, training=training),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    assert type(model.get_layer("bn")) is keras.layers.BatchNormalization  # the original kept


def test_with_fused_batch_norm_refuses_a_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    with pytest.raises(ValueError, match="subclassed Net.*FusedBatchNormalization"):
        with_fused_batch_norm(Net())


def test_a_student_file_is_rebuilt_with_the_fused_layer_and_a_teacher_file_kept(tmp_path):
    path = tmp_path / "net.keras"
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.BatchNormalization(momentum=0.8, name="bn")(keras.layers.Conv2D(2, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x))).save(path)
    student = sources.resolve(str(path), (6, 6, 1), 3, seed=0, role="student")
    assert type(student.get_layer("bn")) is FusedBatchNormalization
    assert student.get_layer("bn").momentum == 0.8
    teacher = sources.resolve(str(path), (6, 6, 1), 3, keep_weights=True)
    assert type(teacher.get_layer("bn")) is keras.layers.BatchNormalization  # used as saved


def test_trains_the_same_under_xla():
    def fit(jit_compile):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3),
                                  FusedBatchNormalization(momentum=0.5), keras.layers.Flatten(),
                                  keras.layers.Dense(2)])  # fmt: skip
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
        x = np.random.default_rng(0).normal(size=(16, 6, 6, 1)).astype("float32")
        model.fit(x, np.ones((16, 2), "float32"), batch_size=8, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    for plain, compiled in zip(fit(False), fit(True), strict=True):
        np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-6)
