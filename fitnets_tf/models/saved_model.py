"""A trained teacher given as a TensorFlow SavedModel folder, distilled through its signature.

A SavedModel (``tf.saved_model.save``, Keras' ``model.export``, a TensorFlow 2 training
pipeline's, a previous run's ``student_saved_model/``) keeps functions, not layers: its
``serving_default`` signature becomes a one-layer Keras model (``keras.layers.TFSMLayer``),
which teaches by knowledge distillation. Its hints are tensors of the signature's graph
(:mod:`~fitnets_tf.models.saved_model_hints`): loaded with them, the layer is a
:class:`SavedModelTeacher`, which returns them beside the output, and the model exposes each
through a named layer, as an ONNX teacher's (:mod:`~fitnets_tf.models.onnx_hints`). Only the
SavedModel's graph runs, never Python code, as with the ``.keras`` files loaded in safe mode.

A signature that returns probabilities (a final softmax, as serving signatures often do) is
wrapped in their logarithm (:func:`~fitnets_tf.models.logits.logits_of_foreign`), which gives
the soft targets and predictions its logits would.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.errors import ConfigError, TeacherLoadError
from fitnets_tf.models import onnx_hints, saved_model_hints
from fitnets_tf.models.logits import logits_of_foreign

SIGNATURE = "serving_default"
# The layers of the Keras model load() builds besides the hints' (whose names must differ).
IMAGES, RUNNER, LOGITS = "images", "saved_model", "saved_model_logits"
_GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")


def is_saved_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a SavedModel folder (it holds ``saved_model.pb``)."""
    return any(os.path.isfile(os.path.join(os.path.expanduser(path), f)) for f in _GRAPH_FILES)


def load(path: str | os.PathLike, input_shape=None, role: str = "teacher", hints=(),
         signature: keras.layers.TFSMLayer | None = None) -> keras.Model:  # fmt: skip
    """The ``serving_default`` signature of the SavedModel at ``path`` as a Keras model:
    images of ``input_shape`` (default: the signature's) in, logits out (see the module
    docstring for probabilities). Its name is the folder's. Each tensor of the signature's
    graph ``hints`` names (``teacher_1/conv1_1/Relu``, or its layer's name:
    :func:`~fitnets_tf.models.onnx_hints.layer_name`) is the output of a layer of that name,
    for a hint (:mod:`~fitnets_tf.models.saved_model_hints`). ``signature``: the folder's
    signature loaded already (a teacher's, loaded again with hints), whose variables the
    model shares rather than loading them once more.

    Raises:
        TeacherLoadError: TensorFlow cannot load the folder, or it has no ``serving_default``
            signature.
        ConfigError: the signature does not take one float image batch of any size (the shape
            it takes named beside ``input_shape``) or give one tensor; a hint names no 4-D
            activation of its graph, or the SavedModel keeps its ops where they cannot be
            fetched (the message says what to do instead).
    """
    path = pathlib.Path(path).expanduser()
    if tf.distribute.has_strategy():
        # A SavedModel loaded in a strategy's scope cannot run in its replicas (TensorFlow
        # asserts "executing a graph generated from the cross-replica context in an in-replica
        # context", tensorflow/tensorflow#56852): loaded in a thread of its own, outside any
        # scope (scopes are per thread), its variables are plain ones, which every replica
        # reads. The teacher is frozen: nothing needs them mirrored.
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            return thread.submit(_load, path, input_shape, role, hints, signature).result()
    return _load(path, input_shape, role, hints, signature)


def _load(path: pathlib.Path, input_shape, role: str, hints=(), signature=None) -> keras.Model:
    what = f"The {role} SavedModel {str(path)!r}"
    layer = signature or _signature_layer(path, what)
    spec = _one_image_input(layer.call_endpoint_fn, what)
    if spec.dtype.name != layer.dtype:  # a float16 signature: loaded again, rarely
        layer = _signature_layer(path, what, spec.dtype.name)
    shape = tuple(spec.shape[1:]) if input_shape is None else tuple(input_shape)
    if len(shape) != len(spec.shape) - 1 or not spec.shape[1:].is_compatible_with(shape):
        raise ConfigError(
            f"{what} takes images of shape {tuple(spec.shape[1:])} (its signature), and the "
            f"data's are {shape}: give --image_size (and --channels) to match it."
        )
    inputs, name, probed = keras.Input(shape, name=IMAGES), model_name(path), _probe(layer, shape)
    if not hints:
        outputs = keras.ops.cast(_one_output(layer(inputs), what), "float32")
        return keras.Model(inputs, logits_of_foreign(outputs, probed, name, "a SavedModel"),
                           name=name)  # fmt: skip
    if None in shape:  # the hints' shapes, and so the regressors', follow from the images'
        raise ConfigError(f"{what} takes images of any size {shape} and has hints: give their "
                          "size, load(path, input_shape=(H, W, C), hints=...).")  # fmt: skip
    body = saved_model_hints.body(layer.call_endpoint_fn, what)
    tapped = saved_model_hints.requested(body, list(hints), shape, what, (IMAGES, RUNNER, LOGITS))
    layer = SavedModelTeacher(layer, body, shape, [c.tensor for c in tapped],
                              [c.shape for c in tapped], name=RUNNER)  # fmt: skip
    logits, *hinted = layer(inputs)
    logits = logits_of_foreign(logits, probed, name, "a SavedModel")
    # Each hint a layer of the model, so that it can be tapped by name.
    hinted = [onnx_hints.hint_layer(c)(h) for c, h in zip(tapped, hinted, strict=True)]
    return keras.Model(inputs, onnx_hints.FirstOf(name=LOGITS)([logits, *hinted]), name=name)


def signature_of(model: keras.Model):
    """The signature (a ConcreteFunction) of a SavedModel teacher ``model`` (:func:`load`),
    or None for any other model."""
    for layer in model.layers:
        if isinstance(layer, SavedModelTeacher):
            return layer.signature.call_endpoint_fn
        if isinstance(layer, keras.layers.TFSMLayer):
            return layer.call_endpoint_fn
    return None


class SavedModelTeacher(keras.layers.Layer):
    """A SavedModel's signature output for a batch of images, in float32, then its tensors
    ``hints`` (each ``(N, *hint_shapes[i])``): one call of its graph's ops
    (:func:`~fitnets_tf.models.saved_model_hints.function`) on the weights of ``signature``
    (a ``TFSMLayer`` of it, whose variables this layer holds).

    The logits and the hints come from that one call: a hint is a tensor the logits are
    computed from, and a stage-2 step, which taps the logits alone, runs the same ops as the
    signature.
    """

    def __init__(self, signature: keras.layers.TFSMLayer, body, image_shape, hints,
                 hint_shapes, **kwargs):  # fmt: skip
        super().__init__(trainable=False, dtype="float32", **kwargs)
        self.signature, self.hints = signature, list(hints)
        self.hint_shapes = [tuple(s) for s in hint_shapes]
        self._function = saved_model_hints.function(body, image_shape, self.hints)
        self.classes = self._function.outputs[0].shape[-1]

    def call(self, images):
        images = keras.ops.cast(images, self.signature.dtype)
        return [keras.ops.cast(t, "float32") for t in self._function(images)]

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        return [(batch, self.classes), *((batch, *shape) for shape in self.hint_shapes)]


def _signature_layer(path: pathlib.Path, what: str, dtype: str = "float32"):
    # The signature's own dtype, whatever the global policy (mixed precision would cast the
    # images to bfloat16, which a float32 signature refuses).
    try:
        return keras.layers.TFSMLayer(str(path), call_endpoint=SIGNATURE, trainable=False,
                                      name="saved_model", dtype=dtype)  # fmt: skip
    except Exception as e:  # noqa: BLE001  (TensorFlow raises many types for a bad folder)
        if isinstance(e, ValueError) and f"endpoint '{SIGNATURE}'" in str(e):
            # Not Keras' message, nor chained to it: its advice, another endpoint through
            # TFSMLayer's `call_endpoint`, is no option of this function or the CLI. The
            # folder is read again for the signatures it has (only when refused).
            names = ", ".join(map(repr, tf.saved_model.load(str(path)).signatures)) or "none"
            raise TeacherLoadError(
                f"{what} has no {SIGNATURE!r} signature (its signatures: {names}). Save it with "
                "one: tf.saved_model.save(model, path, signatures=...) or Keras' "
                "model.export(path)."
            ) from None
        raise TeacherLoadError(
            f"Cannot load t{what[1:]} ({type(e).__name__}: {str(e).splitlines()[0]}): it is "
            "damaged, or was written by a TensorFlow with ops this one lacks."
        ) from e


def _one_image_input(function, what: str):
    args, kwargs = function.structured_input_signature
    specs = keras.tree.flatten((args, kwargs))
    if len(specs) != 1 or specs[0].shape.rank != 4 or not specs[0].dtype.is_floating:
        taken = ", ".join(f"{s.dtype.name} {s.shape}" for s in specs) or "nothing"
        raise ConfigError(
            f"{what}'s {SIGNATURE!r} signature takes {taken}; the Distiller gives it one batch "
            "of float images (N, H, W, C), preprocessed as for the student (--preprocessing). "
            "Export a signature that takes them."
        )
    # The Distiller's batches vary (the probe's is 4, an epoch's last is smaller): a signature
    # of a fixed batch size fails on any other inside its graph, in TensorFlow's words
    # ("Input to reshape is a tensor with N values"), at the probe or at a later step.
    shape, batch = tuple(specs[0].shape), specs[0].shape[0]
    if batch is not None:
        open_batch = [None, *shape[1:]]
        raise ConfigError(
            f"{what}'s {SIGNATURE!r} signature takes batches of {batch} image"
            f"{'s' if batch > 1 else ''} {shape} and no other size; the Distiller gives it "
            "batches of any size (an epoch's last one is smaller). Save it with input_signature="
            f"[tf.TensorSpec({open_batch}, tf.{specs[0].dtype.name})], or with Keras' "
            "model.export(path), which does."
        )
    return specs[0]


def _one_output(outputs, what: str):
    """The one tensor of a signature's outputs (a signature returns a dict of them)."""
    if isinstance(outputs, dict) and len(outputs) == 1:
        return next(iter(outputs.values()))
    if isinstance(outputs, dict):
        raise ConfigError(
            f"{what} returns {len(outputs)} outputs ({', '.join(sorted(outputs))}); a teacher "
            "returns one, the class logits (or probabilities). Export a signature that does."
        )
    return outputs


def _probe(layer: keras.layers.TFSMLayer, shape: tuple):
    """The signature's outputs on a small batch of random images, as numpy."""
    size = [32 if d is None else d for d in shape]  # a size the signature leaves open
    images = np.random.default_rng(0).uniform(size=(4, *size)).astype(np.float32)
    outputs = _one_output(layer(images), "")
    return keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32"))


def model_name(path: pathlib.Path) -> str:
    """A Keras model name for the teacher at ``path`` (a folder or a file, suffix dropped)."""
    # Keras' names are identifiers: a folder "teacher-v2.1" gives "teacher_v2_1".
    path = path.resolve()
    name = "".join(c if c.isalnum() else "_" for c in (path.stem if path.is_file() else path.name))
    return name.strip("_") or "teacher"
