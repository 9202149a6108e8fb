"""What a stage's checkpoint holds: the variables it trains, and dropout's seed states.

Epoch and mid-epoch checkpoints (:mod:`fitnets_tf.run.resume`, :mod:`fitnets_tf.run.mid_epoch`)
hold the same variables, so either restores a stage.
"""

from __future__ import annotations

import keras
import numpy as np

from fitnets_tf.distiller import Distiller


def trackables(model: keras.Model) -> dict:
    """What a stage trains, as variable lists for ``tf.train.Checkpoint``.

    Keras 3 models are not traversed by ``tf.train.Checkpoint``, so the variables are listed
    explicitly, in their (stable) build order: weights, BatchNorm statistics and the
    seed-generator states of dropout layers, then the optimizer's. A Distiller's frozen teacher
    is left out: it never changes.
    """
    if isinstance(model, Distiller):
        variables = list(model.student.variables) + [model.kd_lambda]
        for regressor in model.regressors:
            variables += list(regressor.variables)
    else:
        variables = list(model.variables)
    return {"model": variables, "optimizer": list(model.optimizer.variables)}


def seed_states(model: keras.Model) -> list:
    """The states of ``model``'s seed generators (dropout), which ``.keras`` files leave out."""
    weights = {id(w) for w in model.weights}
    return [keras.ops.convert_to_numpy(v).tolist() for v in model.variables if id(v) not in weights]


def restore_seed_states(model: keras.Model, states: list | None) -> None:
    """Sets what :func:`seed_states` returned (None: a record without them; nothing to do)."""
    if not states:
        return
    weights = {id(w) for w in model.weights}
    generators = [v for v in model.variables if id(v) not in weights]
    for variable, state in zip(generators, states, strict=True):
        variable.assign(np.asarray(state, dtype=variable.dtype))
