"""State that no initializer draws: what Keras' preprocessing layers learn in ``adapt()``.

A ``keras.layers.Normalization`` adapted on images (``norm.adapt(images)``, Keras' tutorial
way) holds their mean and variance as non-trainable weights: re-created from its config, it
has mean 0 and variance 1, and passes its input through unchanged. A student file's layers are
re-created with fresh weights (:func:`fitnets_tf.models.sources.reinitialised`); this state is
copied from the file instead, as it is data, not a starting point of training.
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

    Through the layers' own ``save_own_variables`` / ``load_own_variables`` (what a
    ``.keras`` file stores: a lookup layer's vocabulary is no weight), then
    ``finalize_state()``, which Keras' loading calls too: a ``Normalization`` computes with
    constants derived from its weights when they were last set, not with the weights.

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
    target.finalize_state()
    return changed


def _numpy(value) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)
