"""Tests for fitnets_tf.layer_state: what Keras' preprocessing layers learn in adapt(), kept."""

import keras
import numpy as np
import pytest

from fitnets_tf import batch_norm, layer_state
from fitnets_tf.export import serving
from fitnets_tf.export.fold import fold_batch_norm
from fitnets_tf.models import sources
from fitnets_tf.preprocessing import Preprocessor

IMAGES = np.random.RandomState(0).rand(16, 8, 8, 1).astype("float32") * 40 + 100


def _normalising_net(shape=(8, 8, 1)) -> keras.Model:
    """8×8×1 → Normalization adapted on IMAGES → conv → BN → GAP → 3 logits."""
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(IMAGES)
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(4, 3, name="conv")(norm(inputs))
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="normalising")


def test_adapted_layers_are_those_with_an_adapt_and_nothing_trained():
    assert layer_state.is_adapted(keras.layers.Normalization())
    assert layer_state.is_adapted(Preprocessor("gcn_zca"))
    assert not layer_state.is_adapted(keras.layers.Rescaling(1 / 255))  # nothing adapted
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    dense.adapt = lambda data: None  # one of the user's own, trained: its weights are not data
    assert not layer_state.is_adapted(dense)


def test_copied_state_is_the_one_computed_with():
    # A Normalization computes with constants taken from its weights when they were set
    # (finalize_state): assigning the weights alone leaves it computing with mean 0, variance 1.
    source = _normalising_net().get_layer("norm")
    target = keras.layers.Normalization()
    target.build((None, 8, 8, 1))
    assert layer_state.copy_adapted_state(source, target)
    np.testing.assert_allclose(target(IMAGES), source(IMAGES), atol=1e-5)
    assert not layer_state.copy_adapted_state(source, target)  # nothing new to tell
    # Any adapted layer, by its own saving hooks: fitnets_tf's fitted ZCA too.
    fitted, fresh = Preprocessor("gcn_zca"), Preprocessor("gcn_zca")
    fitted.adapt(IMAGES)
    fresh.build((None, 8, 8, 1))
    assert layer_state.copy_adapted_state(fitted, fresh)
    np.testing.assert_allclose(fresh(IMAGES), fitted(IMAGES), atol=1e-4)


@pytest.mark.parametrize(
    ("copy", "shape", "policy"),
    [
        (lambda model: sources.at_input_shape(model, (8, 8, 1)), (None, None, 1), "float32"),
        (batch_norm.with_fused_batch_norm, (8, 8, 1), "float32"),
        (fold_batch_norm, (8, 8, 1), "float32"),
        (serving.in_float32, (8, 8, 1), "mixed_float16"),
    ],
    ids=["at_input_shape", "with_fused_batch_norm", "fold_batch_norm", "in_float32"],
)
def test_every_copy_of_a_model_computes_with_its_adapted_statistics(copy, shape, policy):
    # Each copied the weights with set_weights, which does not refresh those constants: the
    # copy passed its raw input to the convolution (and folding refused the export as a bug).
    keras.config.set_dtype_policy(policy)
    model = _normalising_net(shape)
    got = copy(model)
    assert got is not model
    expected = keras.ops.convert_to_numpy(model(IMAGES[:4], training=False))
    np.testing.assert_allclose(got(IMAGES[:4], training=False), expected, rtol=1e-2, atol=1e-2)
