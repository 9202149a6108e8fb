"""A teacher given as a graph (an ONNX file, a SavedModel folder) under ``hints='auto'``: the
tensors ending its blocks, and the teacher loaded again to fetch the one chosen.

Such a teacher has no layers to choose among; its blocks are found in its graph
(:mod:`~fitnets_tf.models.onnx_features`, :mod:`~fitnets_tf.models.saved_model_features`),
and its hints are tensors, which it fetches only when loaded with them.
"""

from __future__ import annotations

import keras

from fitnets_tf import hint_path
from fitnets_tf.models import onnx_features, saved_model, saved_model_features
from fitnets_tf.models.logits import for_distilling
from fitnets_tf.models.onnx_model import onnx_layer


def _features_module(teacher: keras.Model):
    if onnx_layer(teacher) is not None:
        return onnx_features
    if saved_model.signature_of(teacher) is not None:
        return saved_model_features
    return None


def is_graph(teacher: keras.Model) -> bool:
    """Whether ``teacher`` is an ONNX or SavedModel teacher, whose hints are tensors."""
    return _features_module(teacher) is not None


def block_outputs(teacher: keras.Model) -> list:
    """The :class:`~fitnets_tf.models.onnx_hints.Candidate` tensors ending the blocks of a
    graph teacher, input to output, channels last."""
    return _features_module(teacher).of_teacher(teacher)


def with_hints(teacher: keras.Model, pairs) -> keras.Model:
    """``teacher`` fetching the hint tensors of ``pairs`` (hint, guided): a graph teacher that
    lacks one is loaded again with them; any other teacher is ``teacher`` itself."""
    module = _features_module(teacher)
    return teacher if module is None else module.with_hints(teacher, pairs)


def fetching(teacher: keras.Model, pairs, auto) -> tuple[keras.Model, list]:
    """``teacher`` and ``pairs`` as the Distiller takes them once ``hints='auto'`` has chosen
    (``auto``: its :class:`~fitnets_tf.hint_choice.AutoPair`, None for pairs given): a graph
    teacher fetching the tensor chosen (:func:`with_hints`), the pairs named by its layers.
    Anything else is returned as it is."""
    if auto is None or not is_graph(teacher):
        return teacher, pairs
    teacher = for_distilling(with_hints(teacher, pairs), "teacher")
    return teacher, hint_path.layer_pairs(teacher, pairs)
