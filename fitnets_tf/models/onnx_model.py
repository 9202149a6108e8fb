"""A trained teacher given as an ONNX file (a PyTorch model's ``torch.onnx.export``...).

A teacher trained in another framework teaches a Keras student by knowledge distillation, and
by hints: ONNX Runtime runs the file (the provider it picks: CUDA where ``onnxruntime-gpu`` has
a GPU) inside the train step, through ``tf.numpy_function``, in a one-layer Keras model
(:class:`OnnxTeacher`). Its hints are tensors of the file, named as the file names them, which
the session also returns and the model exposes as layers (:mod:`~fitnets_tf.models.onnx_hints`).
A ``numpy_function`` runs on the host, so XLA (``jit_compile``) and TPUs cannot take it. Images
go in channels-last, as the pipelines make them, and are transposed for a model that takes them
channels-first (PyTorch's order, found from the shape of its input); probabilities out are
taken as their logarithms (:func:`~fitnets_tf.models.logits.logits_of_foreign`). A file whose
input fixes the batch size (``torch.onnx.export``'s without ``dynamic_shapes``, or
``dynamic_axes``) is fed that many images per call (:func:`runner`); one whose weights are in a
file beside it (external data: the exporter's ``NAME.onnx.data``) needs that file there
(:func:`data_files`). With the teacher's outputs cached (``--cache_teacher``), it
runs once per image, not once per step.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.errors import ConfigError, TeacherLoadError
from fitnets_tf.models import onnx_hints
from fitnets_tf.models.logits import logits_of_foreign
from fitnets_tf.models.nesting import layer_output
from fitnets_tf.models.saved_model import model_name
from fitnets_tf.notes import note, once

SUFFIX = ".onnx"
# The layers of the Keras model load() builds besides the hints' (whose names must differ).
IMAGES, RUNNER, LOGITS = "images", "onnx_model", "onnx_logits"
LOGITS_WITH_HINTS = "onnx_logits_with_hints"


def is_onnx_file(path) -> bool:
    """Whether ``path`` names an ONNX file (whether or not it exists)."""
    return isinstance(path, (str, os.PathLike)) and str(path).endswith(SUFFIX)


def onnx_layer(model: keras.Model):
    """The :class:`OnnxTeacher` layer of ``model`` (an ONNX teacher), or None. Such a model
    cannot be converted for another runtime; ONNX Runtime runs its file."""
    return next((layer for layer in model.layers if isinstance(layer, OnnxTeacher)), None)


class OnnxTeacher(keras.layers.Layer):
    """An ONNX model's output for a batch of channels-last images, by ONNX Runtime; with
    ``hints``, also those tensors of its graph (channels last), after it.

    With hints the layer returns ``[logits, logits_with_hints, *hints]``: the logits from a call
    of the file that fetches them alone, then from the call that fetches the hints too (the
    same numbers). Each call is a stateless ``numpy_function``, which a traced caller that
    does not use its outputs leaves out: the teacher's logits (stage 2, KD, evaluation) fetch,
    copy and transpose no hint; stage 1's taps run the second call alone; a caller of both
    (the teacher cache) taps ``logits_with_hints`` and runs the file once. Called eagerly, the
    layer runs the file once, for everything.

    Args:
        onnx_path: the ONNX file.
        channels_first: the model takes ``(N, C, H, W)``: the images are transposed for it.
        classes: the size of its output's last axis.
        session: an ONNX Runtime session of the file already made (default: a new one),
            which returns the hints after the file's output.
        hints: names of intermediate tensors of the file the layer returns too.
        hint_shapes: their shapes ``(H, W, C)`` (channels last), one per hint.
        hint_channels_first: whether the file holds each hint ``(N, C, H, W)``, which is then
            transposed (default: as the images, which a channels-last file's convolutions,
            ONNX's, are not: :mod:`~fitnets_tf.models.onnx_layouts`).
        params: how many weights the file holds (default: counted from it).
    """

    def __init__(self, onnx_path, channels_first: bool, classes: int, session=None, hints=(),
                 hint_shapes=(), hint_channels_first=None, params=None, **kwargs):  # fmt: skip
        for fixed in ("trainable", "dtype"):  # a config's (clone_model's copy): as here
            kwargs.pop(fixed, None)
        super().__init__(trainable=False, dtype="float32", **kwargs)
        # Not `path`: Keras layers have one (their variables' prefix).
        self.onnx_path, self.channels_first, self.classes = str(onnx_path), channels_first, classes
        self.hints, self.hint_shapes = list(hints), [tuple(s) for s in hint_shapes]
        if hint_channels_first is None:  # a config of before the layouts were traced
            hint_channels_first = [channels_first] * len(self.hints)
        self.hint_channels_first = [bool(first) for first in hint_channels_first]
        if not len(self.hints) == len(self.hint_shapes) == len(self.hint_channels_first):
            raise ValueError(f"Give one shape and one layout per hint. Received: hints={hints}, "
                             f"hint_shapes={hint_shapes}, "
                             f"hint_channels_first={hint_channels_first}")  # fmt: skip
        self.session = session or _session(pathlib.Path(onnx_path),
                                           f"The ONNX model {self.onnx_path!r}", self.hints)  # fmt: skip
        names = [output.name for output in self.session.get_outputs()]
        self._run_logits = runner(self.session, names[:1])
        self._run_all = runner(self.session, names)
        self.params = _weights_in(_parsed(self.onnx_path)) if params is None else params

    def run(self, images: np.ndarray) -> np.ndarray:
        """The model's output for ``images`` as it takes them, in float32; no hint fetched."""
        return self._run_logits(images)[0].astype(np.float32, copy=False)

    def run_all(self, images: np.ndarray) -> list[np.ndarray]:
        """The model's output and its hints for ``images`` as it takes them, in float32."""
        return [output.astype(np.float32, copy=False) for output in self._run_all(images)]

    def call(self, images):
        if self.channels_first:
            images = keras.ops.transpose(images, (0, 3, 1, 2))
        if not self.hints:
            return self._logits(tf.numpy_function(self.run, [images], tf.float32, stateful=False))
        fetched = tf.numpy_function(self.run_all, [images], [tf.float32] * (1 + len(self.hints)),
                                    stateful=False)  # fmt: skip
        logits_with_hints = self._logits(fetched[0])
        if tf.executing_eagerly():  # every output is computed already: one call of the file
            logits = logits_with_hints
        else:
            logits = self._logits(tf.numpy_function(self.run, [images], tf.float32,
                                                    stateful=False))  # fmt: skip
        return [logits, logits_with_hints, *self._channels_last(fetched[1:])]

    def _logits(self, outputs):
        # numpy_function's outputs have no shape.
        return tf.ensure_shape(outputs, (None, self.classes))

    def _channels_last(self, hints) -> list:
        """``hints`` as the file gives them, shaped, then channels last."""
        shaped = []
        for hint, (height, width, channels), first in zip(
                hints, self.hint_shapes, self.hint_channels_first, strict=True):  # fmt: skip
            taken = (channels, height, width) if first else (height, width, channels)
            hint = tf.ensure_shape(hint, (None, *taken))
            shaped.append(keras.ops.transpose(hint, (0, 2, 3, 1)) if first else hint)
        return shaped

    def taken_shape(self, images) -> tuple:
        """The shape of one image as the file takes it, for ``images`` (channels last)."""
        height, width, channels = images.shape[1:]
        return (channels, height, width) if self.channels_first else (height, width, channels)

    def compute_output_shape(self, input_shape):
        logits = (input_shape[0], self.classes)
        if not self.hints:
            return logits
        return [logits, logits, *((input_shape[0], *shape) for shape in self.hint_shapes)]

    def get_config(self):
        return {**super().get_config(), "onnx_path": self.onnx_path,
                "channels_first": self.channels_first, "classes": self.classes,
                "hints": self.hints, "hint_shapes": self.hint_shapes,
                "hint_channels_first": self.hint_channels_first}  # fmt: skip


def load(path: str | os.PathLike, input_shape=None, role: str = "teacher",
         hints=()) -> keras.Model:  # fmt: skip
    """The ONNX model at ``path`` as a Keras model: images of ``input_shape`` ``(H, W, C)``
    (default: the model's, when its input's sizes are all given) in, logits out. Its name is
    the file's. Each tensor of the file ``hints`` names (by its name in the file, or its
    layer's: :func:`~fitnets_tf.models.onnx_hints.layer_name`) is the output of a layer of that
    name, for a hint (:mod:`~fitnets_tf.models.onnx_hints`).

    Raises:
        ConfigError: ONNX Runtime is not installed; the model does not take one float image
            batch of that shape in either order, or does not give one ``(N, classes)`` output;
            a hint names no 4-D activation of the file.
        TeacherLoadError: ONNX Runtime cannot load the file.
    """
    path = pathlib.Path(path).expanduser()
    what = f"The {role} ONNX model {str(path)!r}"
    _runtime(what)  # said first: without it nothing else matters
    parsed = _parsed(path)  # once: its weights left in their files, if any
    session = _session(path, what, parsed=parsed)
    input_shape = tuple(input_shape or _declared_shape(session, what))
    channels_first = _channels_first(session, input_shape, what)
    images = np.random.default_rng(0).uniform(size=(4, *input_shape)).astype(np.float32)
    probed = runner(session)(_ordered(images, channels_first))
    if len(probed) != 1 or probed[0].ndim != 2:
        shapes = ", ".join(str(p.shape) for p in probed)
        raise ConfigError(f"{what} returns {shapes}; a teacher returns one (N, classes) tensor, "
                          "the class logits (or probabilities). Export one that does.")  # fmt: skip
    taken = (IMAGES, RUNNER, LOGITS, LOGITS_WITH_HINTS)
    tapped = (onnx_hints.requested(parsed, list(hints), input_shape, channels_first, what, taken)
              if hints else [])  # fmt: skip
    if tapped:  # a session of the file with the hints as outputs too
        session = None  # the probe's freed first: two sessions held a large file's weights twice
        session = _session(path, what, [c.tensor for c in tapped], parsed)
    inputs = keras.Input(tuple(input_shape), name=IMAGES)
    layer = OnnxTeacher(path, channels_first, probed[0].shape[1], session, name=RUNNER,
                        hints=[c.tensor for c in tapped],
                        hint_shapes=[c.shape for c in tapped],
                        hint_channels_first=[c.channels_first for c in tapped],
                        params=_weights_in(parsed))  # fmt: skip
    name = model_name(path)
    _fixed_batch_note(session, role, name)
    outputs = layer(inputs)
    if not tapped:
        return keras.Model(inputs, logits_of_foreign(outputs, probed[0], name, "an ONNX model"),
                           name=name)  # fmt: skip
    logits, with_hints, *hints = outputs
    with once():  # the same note for both
        logits, with_hints = (logits_of_foreign(t, probed[0], name, "an ONNX model")
                              for t in (logits, with_hints))  # fmt: skip
    # Each hint a layer of the model, so that it can be tapped by name, and the logits of the
    # call that gives them, for a caller of both (logits_with_hints).
    hinted = [onnx_hints.hint_layer(c)(h) for c, h in zip(tapped, hints, strict=True)]
    with_hints = keras.layers.Identity(name=LOGITS_WITH_HINTS)(with_hints)
    return keras.Model(inputs, onnx_hints.FirstOf(name=LOGITS)([logits, with_hints, *hinted]),
                       name=name)  # fmt: skip


def logits_with_hints(model: keras.Model):
    """The logits of an ONNX teacher loaded with hints as the call of its file that also
    fetches the hints gives them (its output's numbers), for a caller of both (the teacher
    cache): tapped beside the hints, they have ONNX Runtime run the file once per batch, where
    the model's output would run it once more. None for any other model."""
    if onnx_layer(model) is None or LOGITS_WITH_HINTS not in [layer.name for layer in model.layers]:
        return None
    return layer_output(model, LOGITS_WITH_HINTS)


def runner(session, outputs=None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``session.run`` of one batch of images (as the file takes them): the ``outputs`` it
    names (default: all of them).

    A file whose input fixes the batch size B (PyTorch's ``torch.onnx.export`` without
    ``dynamic_shapes`` or ``dynamic_axes`` gives ``(1, C, H, W)``) refuses any other batch, so
    it is fed B images per call: the last call's are padded with zeros, and the padding's
    outputs dropped.
    """
    name, batch = session.get_inputs()[0].name, _fixed_batch(session)
    if batch is None:
        return lambda images: session.run(outputs, {name: images})

    def run(images: np.ndarray) -> list[np.ndarray]:
        count = len(images)
        # An empty batch (a replica's share of a short last one) is one call of padding:
        # its outputs, none of them kept, give the output's shape.
        padding = np.zeros((-count % batch if count else batch, *images.shape[1:]), images.dtype)
        padded = np.concatenate([images, padding])
        calls = [session.run(outputs, {name: padded[i : i + batch]})
                 for i in range(0, len(padded), batch)]  # fmt: skip
        # An output with no batch axis cannot be split: the first call's, for load to refuse.
        return [np.concatenate(out)[:count] if out[0].ndim else out[0]
                for out in zip(*calls, strict=True)]  # fmt: skip

    return run


def _fixed_batch(session) -> int | None:
    """The batch size the file's input fixes, or None: ONNX gives an open one as a name
    ("batch", "unk__0") or None."""
    size = session.get_inputs()[0].shape[0]
    return size if isinstance(size, int) and size > 0 else None


def _fixed_batch_note(session, role: str, name: str) -> None:
    batch = _fixed_batch(session)
    if batch is None:
        return
    images = f"{batch} image{'s' if batch > 1 else ''}"
    axes = {session.get_inputs()[0].name: {0: "batch"}}
    # dynamic_shapes: the default exporter's (dynamo, PyTorch 2.9), which warns against
    # dynamic_axes; older ones know only dynamic_axes, keyed by the input's name.
    note(f"The {role} {name!r} (an ONNX model) takes a fixed batch of {images}: it runs "
         f"{images} per call. Exported with a dynamic batch, torch.onnx.export(..., "
         "dynamic_shapes=({0: 'batch'},)) (PyTorch 2.9 or later; before, "
         f"dynamic_axes={axes}), it would take each batch in one call, which is "
         "faster.")  # fmt: skip


def _session(path: pathlib.Path, what: str, hints=(), parsed=None):
    """An ONNX Runtime session of the file; with ``hints``, of a copy of it (in memory) that
    returns those tensors too, after its own outputs. ``parsed``: the file as
    :func:`_parsed` gives it (default: parsed now), given those outputs (:func:`_with_outputs`)."""
    ort = _runtime(what)
    if not path.is_file():
        raise TeacherLoadError(f"{what} does not exist.")
    parsed = _parsed(path) if parsed is None else parsed
    _check_data_files(path, parsed, what)
    try:
        model = _with_outputs(path, parsed, hints) if hints else str(path)
        return ort.InferenceSession(model, providers=ort.get_available_providers())
    except Exception as e:  # noqa: BLE001  (ONNX Runtime's errors for a bad file vary)
        raise TeacherLoadError(f"Cannot load t{what[1:]} ({type(e).__name__}: "
                               f"{str(e).splitlines()[0]}): it is damaged, or not an ONNX "
                               "model this ONNX Runtime runs.") from e  # fmt: skip


def _runtime(what: str):
    try:
        import onnxruntime  # noqa: PLC0415  (the export extra's: only when used)
    except ImportError as e:
        raise ConfigError(f"{what} runs in ONNX Runtime, which is not installed: pip install "
                          "onnxruntime.") from e  # fmt: skip
    return onnxruntime


def data_files(path: str | os.PathLike) -> list[pathlib.Path]:
    """The files beside ``path`` that hold its weights, in the order its initializers name them
    (ONNX's external data: ``torch.onnx.export`` writes ``NAME.onnx.data`` unless given
    ``external_data=False``; a model over protobuf's 2 GB must have it); none for a file that
    holds its weights, or that is no ONNX model (loading it says so). Missing ones too."""
    return _data_files_of(pathlib.Path(path), _parsed(path))


def _parsed(path):
    """The ONNX file's ``ModelProto``, the weights it keeps in other files left there; None
    for a file that is no ONNX model, or none at all (ONNX Runtime says why)."""
    import onnx  # noqa: PLC0415  (installed with ONNX Runtime, the export extra's)

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001  (protobuf's errors for a damaged file vary)
        return None


def _data_files_of(path: pathlib.Path, parsed) -> list[pathlib.Path]:
    if parsed is None:
        return []
    locations = [entry.value for tensor in parsed.graph.initializer
                 for entry in tensor.external_data if entry.key == "location"]  # fmt: skip
    return [path.parent / location for location in dict.fromkeys(locations)]


def _check_data_files(path: pathlib.Path, parsed, what: str) -> None:
    # Copied without them (a user takes the .onnx alone), ONNX Runtime's error names one
    # initializer and a path, and ours would call the file damaged.
    missing = [file for file in _data_files_of(path, parsed) if not file.is_file()]
    if missing:
        names = ", ".join(repr(str(file.relative_to(path.parent))) for file in missing)
        raise TeacherLoadError(
            f"{what} keeps its weights in another file, {names}, which is not beside it "
            f"(in {str(path.parent)!r}): copy it there, under that name (torch.onnx.export "
            "writes it beside the .onnx), or export the model with external_data=False, which "
            "keeps them in the .onnx."
        )


def _channels_first(session, input_shape: tuple, what: str) -> bool:
    """Whether the one image input takes ``(N, C, H, W)``: its known sizes decide; where both
    orders fit (sizes left open), channels first, ONNX's and PyTorch's own order."""
    specs = session.get_inputs()
    dims = specs[0].shape if len(specs) == 1 else []
    height, width, channels = input_shape
    last = len(dims) == 4 and _fits(dims[1:], (height, width, channels))
    first = len(dims) == 4 and _fits(dims[1:], (channels, height, width))
    if len(specs) != 1 or specs[0].type != "tensor(float)" or not (first or last):
        taken = ", ".join(f"{s.name}: {s.type} {s.shape}" for s in specs)
        raise ConfigError(
            f"{what} takes {taken}; the Distiller gives it one batch of float images "
            f"{(height, width, channels)} (channels last) or {(channels, height, width)} "
            "(channels first), preprocessed as for the student (--preprocessing). Give "
            "--image_size (and --channels) to match it, or export a model that takes them."
        )
    return first


def _with_outputs(path: pathlib.Path, parsed, hints) -> bytes:
    """The file with ``hints`` as outputs too, its weights in it: ONNX Runtime, given bytes,
    knows no folder to find the file's others in. ``parsed`` is changed so (its caller's own
    parse, counted afterwards at most: a copy would hold the weights once more)."""
    from onnx.external_data_helper import load_external_data_for_model  # noqa: PLC0415

    onnx_hints.add_outputs(parsed, hints)
    load_external_data_for_model(parsed, str(path.parent))
    return parsed.SerializeToString()


def _weights_in(parsed) -> int:
    """How many numbers the floating-point initializers (its weights; not the integer shapes
    and indices converters add) of the file ``parsed`` (:func:`_parsed`) hold."""
    import onnx  # noqa: PLC0415  (installed with ONNX Runtime, the export extra's)

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
              onnx.TensorProto.BFLOAT16}  # fmt: skip
    return sum(int(np.prod(i.dims)) for i in parsed.graph.initializer if i.data_type in floats)


def _declared_shape(session, what: str) -> tuple:
    """The ``(H, W, C)`` of a model's input whose sizes are all given: the channels are the
    smaller of its second and last axes."""
    dims = session.get_inputs()[0].shape
    if len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]):
        raise ConfigError(f"{what} leaves its input's sizes open ({dims}): give the images' "
                          "shape (input_shape), or export it with fixed sizes (a search's "
                          "trials load it without one).")  # fmt: skip
    return tuple(dims[2:]) + (dims[1],) if dims[1] < dims[3] else tuple(dims[1:])


def _fits(dims, sizes) -> bool:
    # ONNX gives an open size as a name ("height") or None.
    return all(not isinstance(d, int) or d == s for d, s in zip(dims, sizes, strict=True))


def _ordered(images: np.ndarray, channels_first: bool) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if channels_first else images
