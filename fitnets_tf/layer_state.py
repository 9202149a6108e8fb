"""State that no initializer draws: what Keras' preprocessing layers learn in ``adapt()``.

A ``keras.layers.Normalization`` adapted on images (``norm.adapt(images)``, Keras' tutorial
way) holds their mean and variance as non-trainable weights: re-created from its config, it
has mean 0 and variance 1, and passes its input through unchanged. A student file's layers are
re-created with fresh weights (:func:`fitnets_tf.models.sources.reinitialised`); this state is
copied from the file instead, as it is data, not a starting point of training. A model copied
with ``clone_model`` (built for the data's image size, its batch norm fused, folded or in
float32 for export) keeps it through :func:`set_weights`.
"""

from __future__ import annotations

import keras
import numpy as np


def is_adapted(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` holds state fitted by ``adapt()`` and nothing trained: Keras'
    ``Normalization``, lookup and text layers, fitnets_tf's
    :class:`~fitnets_tf.preprocessing.Preprocessor`.

    A layer with an ``adapt`` method and trainable weights (one of the user's own) is not: its
    trained weights would be copied with the rest, and the run's seed would not decide them.
    """
    return callable(getattr(layer, "adapt", None)) and not layer.trainable_weights


def copy_adapted_state(source: keras.layers.Layer, target: keras.layers.Layer) -> bool:
    """Copies ``source``'s adapted state into ``target``, a built layer of the same config.

    Through the layers' own ``save_own_variables`` / ``load_own_variables``, as a ``.keras``
    file stores and loads it: a lookup layer's vocabulary is no weight, and a
    ``Normalization`` refreshes the constants it computes with only there (see
    :func:`set_weights`).

    Returns:
        Whether the state copied differs from ``target``'s before (a fresh layer's): False for
        a layer never adapted, which there is nothing to tell of.
    """
    given, fresh = {}, {}
    source.save_own_variables(given)
    target.save_own_variables(fresh)
    given = {key: _numpy(value) for key, value in given.items()}
    changed = given.keys() != fresh.keys() or any(
        not np.array_equal(value, _numpy(fresh[key])) for key, value in given.items()
    )
    target.load_own_variables(given)
    return changed


def _numpy(value) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def set_weights(target: keras.layers.Layer, weights: list) -> None:
    """``target.set_weights(weights)`` (a model or a layer), its ``Normalization`` layers then
    refreshed as Keras' loading refreshes them.

    A ``Normalization`` computes with constants taken from its mean and variance when they
    were last loaded or adapted (``finalize_state()``), and ``set_weights`` does not refresh
    them (keras-team/keras#20147): a copy made by ``clone_model`` passed its raw input on, as
    with mean 0 and variance 1. Only this layer: another's ``finalize_state()`` rebuilds its
    state from what it accumulated in ``adapt()``, which a copy has not (a ``Discretization``
    would lose its bins).
    """
    target.set_weights(weights)
    _refresh(target)


def _refresh(layer: keras.layers.Layer) -> None:
    if isinstance(layer, keras.layers.Normalization):
        layer.finalize_state()
    for inner in layer.layers if isinstance(layer, keras.Model) else ():
        _refresh(inner)
