import keras
import numpy as np
import pytest

from fitnets_tf import layers


def _units(layer) -> int:
    return layer.filters if isinstance(layer, layers.MaxoutConv2D) else layer.units


def _set(layer, kernel, bias):
    """Sets weights given in the grouping's (unit-major) order, as files hold them."""
    kernel = np.asarray(kernel, "float32").reshape(layer.kernel.shape)
    layer.kernel.assign(layers.piece_major(kernel, _units(layer), layer.pieces))
    layer.bias.assign(layers.piece_major(np.asarray(bias, "float32"), _units(layer), layer.pieces))


def test_maxout_conv_hand_computed_one_pixel_kernel():
    # Two pieces: z0 = -x, z1 = 0.5x - 1; the output is their max.
    layer = layers.MaxoutConv2D(1, 1, pieces=2)
    x = np.array([1.0, 2.0, 3.0, 4.0], "float32").reshape(1, 2, 2, 1)
    layer.build(x.shape)
    _set(layer, [-1.0, 0.5], [0.0, -1.0])
    np.testing.assert_allclose(layer(x).numpy().ravel(), [-0.5, 0.0, 0.5, 1.0])


def test_maxout_conv_groups_contiguous_pieces():
    # Channel j is the max of linear channels [2j, 2j+1]: sums 10, -10 | 5, 0 + bias 7.
    layer = layers.MaxoutConv2D(2, 2, pieces=2)
    x = np.array([1.0, 2.0, 3.0, 4.0], "float32").reshape(1, 2, 2, 1)
    layer.build(x.shape)
    kernel = np.zeros((2, 2, 1, 4), "float32")
    kernel[..., 0], kernel[..., 1], kernel[..., 2] = 1.0, -1.0, 0.5
    _set(layer, kernel, [0.0, 0.0, 0.0, 7.0])
    np.testing.assert_allclose(layer(x).numpy().reshape(-1), [10.0, 7.0])


def test_maxout_conv_explicit_padding_shape():
    layer = layers.MaxoutConv2D(96, 8, pieces=2, padding=4)
    assert layer.compute_output_shape((None, 32, 32, 3)) == (None, 33, 33, 96)
    assert layer(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 33, 33, 96)


def _grouped_reference(layer, x):
    """The layer's maths as the grouping reads: linear part, reshape, reduce_max (TF's gradient)."""
    units = _units(layer)
    kernel = layers.unit_major(layer.kernel, units, layer.pieces)
    bias = layers.unit_major(layer.bias, units, layer.pieces)
    if isinstance(layer, layers.MaxoutDense):
        z = keras.ops.matmul(x, kernel) + bias
    else:
        pad = layer._explicit_padding()
        z = keras.ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]) if pad else x
        z = keras.ops.conv(z, kernel, padding="valid") + bias
    return layers.maxout(z, units, layer.pieces)


def _outputs_and_gradients(layer, x, upstream, fn=None):
    """``fn(x)`` (default: the layer's call) and its gradients for the layer's kernel and bias,
    and for ``x``, given the ``upstream`` gradient."""
    tf = pytest.importorskip("tensorflow")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = (fn or layer)(xt)
    grads = tape.gradient(out, [layer.kernel, layer.bias, xt], output_gradients=upstream)
    return [out.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize(
    "layer, shape",
    [
        (layers.MaxoutConv2D(3, 3, pieces=2, padding=1), (2, 5, 5, 2)),
        (layers.MaxoutConv2D(2, 2, pieces=4), (2, 4, 4, 3)),
        (layers.MaxoutDense(3, pieces=3), (4, 5)),
    ],
)
def test_maxout_outputs_and_gradients_are_reduce_maxs_ties_included(layer, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    x[0] = 0.0  # zero inputs and zero biases: every piece ties, as on MNIST's background at init
    layer.build(shape)
    upstream = rng.normal(size=layer.compute_output_shape(shape)).astype("float32")

    ours = _outputs_and_gradients(layer, x, upstream)
    reference = _outputs_and_gradients(layer, x, upstream, lambda xt: _grouped_reference(layer, xt))
    assert (ours[0][0] == 0).all()  # the tied example's outputs
    np.testing.assert_array_equal(ours[0], reference[0])
    np.testing.assert_array_equal(ours[1], reference[1])
    # The bias's and the input's gradients sum the same terms (of order 1) in another order
    # (the channels sit elsewhere): they may differ by a float32 rounding of those terms.
    for a, b in zip(ours[2:], reference[2:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


MAXOUTS = [
    (lambda **k: layers.MaxoutConv2D(3, 3, pieces=2, padding=1, **k), (2, 5, 5, 2)),
    (lambda **k: layers.MaxoutConv2D(2, 2, pieces=4, **k), (2, 4, 4, 3)),
    (lambda **k: layers.MaxoutDense(3, pieces=3, **k), (4, 5)),
]


def _pair_of(make, shape, ties_input):
    """The same weights with each tie rule; ``ties_input``: every example all zeros."""
    rng = np.random.default_rng(0)
    x = np.zeros(shape, "float32") if ties_input else rng.normal(size=shape).astype("float32")
    share, one = make(), make(ties="one")
    share.build(shape), one.build(shape)
    one.set_weights(share.get_weights())
    upstream = rng.normal(size=share.compute_output_shape(shape)).astype("float32")
    return [_outputs_and_gradients(layer, x, upstream) for layer in (share, one)], upstream


@pytest.mark.parametrize(("make", "shape"), MAXOUTS)
def test_ties_one_is_the_same_function_and_gradient_where_no_piece_ties(make, shape):
    (share, one), _ = _pair_of(make, shape, ties_input=False)
    np.testing.assert_array_equal(one[0], share[0])
    for a, b in zip(one[1:], share[1:], strict=True):  # the same terms, summed in another order
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("make", "shape"), MAXOUTS)
def test_ties_one_gives_a_tie_whole_to_one_piece(make, shape):
    # Zero inputs and zero biases: every piece of every unit ties, as on MNIST's background.
    (share, one), upstream = _pair_of(make, shape, ties_input=True)
    np.testing.assert_array_equal(one[0], share[0])
    units = upstream.shape[-1]
    share_bias, one_bias = (g[2].reshape(-1, units) for g in (share, one))  # (pieces, units)
    total = upstream.reshape(-1, units).sum(axis=0)
    np.testing.assert_allclose(share_bias, np.broadcast_to(total / len(share_bias), share_bias.shape),
                               rtol=1e-6)  # fmt: skip
    assert ((one_bias != 0).sum(axis=0) == 1).all()  # one piece per unit takes it ...
    np.testing.assert_allclose(one_bias.sum(axis=0), total, rtol=1e-6)  # ... whole


def test_blockwise_maxout_is_the_same_function():
    tf = pytest.importorskip("tensorflow")
    from fitnets_tf import maxout

    layer = layers.MaxoutConv2D(3, 2, pieces=3)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 2)).astype("float32")
    x[0] = 0.0  # ties
    default = layer(x).numpy()
    with maxout.blockwise():
        traced = tf.function(lambda t: layer(t)).get_concrete_function(tf.TensorSpec(x.shape))
    op_types = {op.type for op in traced.graph.get_operations()}
    assert "Maximum" in op_types and "Max" not in op_types
    np.testing.assert_array_equal(traced(tf.constant(x)).numpy(), default)
    assert not maxout._BLOCKWISE.get()  # only within the block


def test_maxout_dense_hand_computed():
    layer = layers.MaxoutDense(2, pieces=2)
    layer.build((None, 2))
    _set(layer, [[1, 0, -1, 2], [0, 1, 1, 0]], [0, 0, 0, -5])
    np.testing.assert_allclose(layer(np.array([[1.0, 2.0]], "float32")).numpy(), [[2.0, 1.0]])


def test_ceil_max_pooling_covers_the_edge():
    x = np.arange(25, dtype="float32").reshape(1, 5, 5, 1)
    pool = layers.CeilMaxPooling2D(2, 2)
    out = pool(x).numpy()[0, ..., 0]
    assert out.shape == (3, 3)  # Keras' floor mode gives 2×2
    np.testing.assert_allclose(out[[0, 0, 2, 2], [0, 2, 0, 2]], [6, 9, 21, 24])
    # The padding never wins, even when every real value is very negative.
    np.testing.assert_allclose(pool(-x - 1e6).numpy()[0, 2, 2, 0], -1e6 - 24)
    # cuda-convnet: 33 → pool 4/2 → 16 (Keras' valid pooling: 15).
    assert pool.__class__(4, 2).compute_output_shape((None, 33, 33, 8)) == (None, 16, 16, 8)


def test_max_norm_is_applied_per_kernel():
    layer = layers.MaxoutConv2D(2, 3, pieces=2, max_norm=0.9)
    layer.build((None, 5, 5, 4))
    constrained = layer.kernel.constraint(keras.ops.ones(layer.kernel.shape))
    norms = np.sqrt((np.asarray(constrained) ** 2).sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(norms, 0.9, rtol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        layers.MaxoutConv2D(3, (3, 2), pieces=3, strides=2, padding=1, max_norm=0.9, name="c"),
        layers.MaxoutDense(4, pieces=5, max_norm=1.9, name="d"),
        layers.MaxoutDense(4, pieces=2, ties="one", name="t"),
        layers.CeilMaxPooling2D(4, 2, name="p"),
    ],
)
def test_get_config_round_trip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_a_config_written_before_ties_shares_them():
    config = layers.MaxoutConv2D(3, 2, ties="one").get_config()
    del config["ties"]  # as files of earlier versions hold it
    assert layers.MaxoutConv2D.from_config(config).ties == "share"


def test_saved_model_with_custom_layers_reloads_in_safe_mode(tmp_path):
    inputs = keras.Input((9, 9, 2))
    h = layers.MaxoutConv2D(3, 3, padding=1, max_norm=0.9)(inputs)
    h = layers.CeilMaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    outputs = layers.MaxoutDense(4, pieces=3)(h)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.RandomState(0).rand(2, 9, 9, 2).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (layers.MaxoutConv2D(2, 2, pieces=3), (None, 4, 4, 2)),
        (layers.MaxoutDense(3, pieces=2), (None, 5)),
    ],
)
def test_weights_are_piece_major_in_memory_and_unit_major_in_files(layer, shape):
    layer.build(shape)
    units, pieces = _units(layer), layer.pieces
    # Unit-major column j * pieces + k (unit j, piece k) holds 10 j + k.
    unit, piece = np.divmod(np.arange(units * pieces), pieces)
    columns = (10 * unit + piece).astype("float32")
    _set(layer, np.broadcast_to(columns, layer.kernel.shape), columns)
    piece_major = 10 * np.tile(np.arange(units), pieces) + np.repeat(np.arange(pieces), units)
    np.testing.assert_array_equal(layer.bias.numpy(), piece_major)
    store = {}
    layer.save_own_variables(store)
    np.testing.assert_array_equal(store["1"], columns)
    np.testing.assert_array_equal(store["0"], np.broadcast_to(columns, layer.kernel.shape))
    # A file read back (or one written by a version that held the columns unit-major).
    clone = layer.__class__.from_config(layer.get_config())
    clone.build(shape)
    clone.load_own_variables(store)
    np.testing.assert_array_equal(clone.kernel.numpy(), layer.kernel.numpy())
    np.testing.assert_array_equal(clone.bias.numpy(), layer.bias.numpy())


def test_a_seeded_layer_draws_its_weights_in_the_groupings_order():
    # The initializer's draw, in unit-major order, is what the layer computes with: seeded
    # models compute the functions they computed when the columns were held unit-major.
    init = keras.initializers.RandomUniform(-1.0, 1.0, seed=3)
    layer = layers.MaxoutConv2D(3, 2, pieces=2, kernel_initializer=init, bias_initializer=init)
    layer.build((None, 4, 4, 2))
    drawn = keras.initializers.RandomUniform(-1.0, 1.0, seed=3)((2, 2, 2, 6))
    np.testing.assert_array_equal(layers.unit_major(layer.kernel, 3, 2), drawn)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: layers.MaxoutConv2D(0, 3), "filters"),
        (lambda: layers.MaxoutConv2D(4, 3, pieces=0), "pieces"),
        (lambda: layers.MaxoutConv2D(4, 3, padding="full"), "padding"),
        (lambda: layers.MaxoutDense(4, max_norm=-1.0), "max_norm"),
        (lambda: layers.MaxoutConv2D(4, 3, ties="first"), "ties"),
        (lambda: layers.CeilMaxPooling2D((2, 2, 2)), "pool_size"),
    ],
)
def test_bad_arguments_name_the_argument(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
