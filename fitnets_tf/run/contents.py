"""What a stage's checkpoint holds: the variables it trains, and dropout's seed states.

Epoch and mid-epoch checkpoints (:mod:`fitnets_tf.run.resume`, :mod:`fitnets_tf.run.mid_epoch`)
hold the same variables, so either restores a stage.
"""

from __future__ import annotations

import keras
import numpy as np

from fitnets_tf.distiller import Distiller
from fitnets_tf.errors import WorkdirError
from fitnets_tf.layers import MaxoutConv2D, MaxoutDense

# The order a stage checkpoint holds maxout columns in, recorded with it. ``tf.train.Checkpoint``
# saves variables as they are held, and the maxout layers used to hold their columns unit-major
# and now hold them piece-major (see fitnets_tf.maxout): a checkpoint without this mark, restored
# into them, would silently regroup every unit's pieces.
MAXOUT_ORDER = "piece_major"


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


def _has_maxout(layer) -> bool:
    if isinstance(layer, (MaxoutConv2D, MaxoutDense)):
        return True
    return any(_has_maxout(sub) for sub in getattr(layer, "layers", ()) if sub is not layer)


def check_maxout_order(record: dict, model: keras.Model, stage: str) -> None:
    """Refuses to restore a stage checkpoint whose maxout columns are in another order.

    Stage records are marked when they are made (``RunState.stage``): one without the mark was
    made, and all its checkpoints written, by a version that held the columns unit-major.
    """
    if not (record.get("epochs_done") or record.get("mid_epoch")):
        return  # nothing to restore
    if record.get("maxout_order", "unit_major") == MAXOUT_ORDER:
        return
    # What the checkpoint holds (see trackables): a Distiller's frozen teacher is not in it.
    saved = [model.student, *model.regressors] if isinstance(model, Distiller) else [model]
    if not any(_has_maxout(part) for part in saved):
        return
    raise WorkdirError(
        f"The checkpoint of stage {stage} was written by an earlier fitnets_tf, which held "
        "maxout weights in another order; this version cannot restore it. Finish the run with "
        "the version that started it, or start it over in a new --workdir (the stages it has "
        "finished are saved as .keras files, which load unchanged)."
    )


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
