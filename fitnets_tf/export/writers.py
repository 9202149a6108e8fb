"""One writer per serving format, and where each format's file goes."""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import Callable, Mapping

import keras
import tensorflow as tf

from fitnets_tf import maxout
from fitnets_tf.errors import ExportConfigError
from fitnets_tf.export import packages
from fitnets_tf.export.serving import INPUT_NAME, OUTPUT_NAME

FORMATS = ("saved_model", "keras", "onnx", "litert")
# The default name of each format's artifact; ``{raw}`` is ``_raw`` when preprocessing is baked in.
DEFAULT_NAMES = {
    "saved_model": "student{raw}_saved_model",
    "keras": "student{raw}.keras",
    "onnx": "student{raw}.onnx",
    "litert": "student{raw}.tflite",
}
# The Keras and LiteRT writers insist on these suffixes; ONNX's is required for symmetry.
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite"}
# The ONNX model's symbolic batch dimension, on its input and its output.
BATCH_NAME = "batch"


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ExportConfigError(
            f"`format` must be one of {', '.join(FORMATS)} (or 'all' for each). "
            f"Received: format={format!r}"
        )


def check_suffix(output: pathlib.Path, format: str) -> None:
    # `--output=model.onnx` without `--format=onnx` would be a SavedModel directory named
    # model.onnx, which no ONNX runtime opens: the user meant the other format.
    meant = next((f for f, suffix in SUFFIXES.items() if output.suffix == suffix), None)
    if format == "saved_model" and meant is not None:
        raise ExportConfigError(
            f"A SavedModel is a directory, but output={output} ends in '{output.suffix}', the suffix "
            f"of {meant} files: pass --format={meant} (format={meant!r}) to write that, or "
            "name the SavedModel's directory without it."
        )
    suffix = SUFFIXES.get(format)
    if suffix is not None and output.suffix != suffix:
        raise ExportConfigError(
            f"The {format} export must be written to a '{suffix}' file. Received: output={output}"
        )


def write_saved_model(model: keras.Model, path: pathlib.Path) -> None:
    # Not `model.export(format="tf_saved_model")`: its signature declares the input's shape but
    # TensorFlow does not enforce it on a call. A rank-3 batch then reaches oneDNN's convolution,
    # whose failed check aborts the whole process (a server dies on one bad request), and
    # (N, H, W, 3) for a one-channel model can run as a grouped convolution and return wrong
    # probabilities. tf.ensure_shape fails first, with an InvalidArgumentError naming the
    # expected shape; every later op depends on its output, so none runs.
    shape = model.inputs[0].shape
    spec = tf.TensorSpec(shape, "float32", name=INPUT_NAME)

    def serve(images):
        return model(tf.ensure_shape(images, shape), training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[spec])  # what model.export names it
    archive.write_out(str(path), verbose=False)


def write_keras(model: keras.Model, path: pathlib.Path) -> None:
    model.save(path)


def write_onnx(model: keras.Model, path: pathlib.Path) -> None:
    # Not `model.export(format="onnx")`: on the TensorFlow backend Keras 3.15 hands the traced
    # function to `tf2onnx.convert.from_function`, which declares every captured non-variable
    # tensor as a graph input. A layer holding constants (keras' Normalization(mean=...), a
    # fitted ZCA matrix) then yields a model that cannot run on "images" alone. Freezing the
    # function first turns those captures into constants, and tf2onnx converts the frozen graph.
    packages.require("onnx", "The onnx export")
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.util import deprecation

    spec = tf.TensorSpec(model.inputs[0].shape, "float32", name=INPUT_NAME)
    with maxout.blockwise():  # maxouts ONNX Runtime runs in NCHW, with no layout transposes
        forward = tf.function(lambda images: model(images, training=False))
        concrete = forward.get_concrete_function(spec)
    # Both call TF1 helpers whose deprecation warnings would be the user's to read.
    with deprecation.silence(), _unsupported_ops() as unsupported:
        frozen = convert_variables_to_constants_v2(concrete)
        (input_name,) = [t.name for t in frozen.inputs]
        (output_name,) = [t.name for t in frozen.outputs]
        onnx_model, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            name=model.name,
            input_names=[input_name],
            output_names=[output_name],
            tensors_to_rename={input_name: INPUT_NAME, output_name: OUTPUT_NAME},
        )
    if unsupported:
        raise ExportConfigError(
            f"tf2onnx has no ONNX conversion for the TensorFlow op(s) {', '.join(unsupported)} "
            "that a layer of the student computes with, so no ONNX runtime could load the "
            "model; nothing was written. Export another format (saved_model, litert), or "
            "compute that layer with ops ONNX has."
        )
    _name_batch(onnx_model.graph)
    path.write_bytes(onnx_model.SerializeToString())


def _name_batch(graph) -> None:
    """Names the batch dimension ``"batch"`` everywhere in ``graph``.

    tf2onnx names each unknown dimension ``unk__`` and a counter, one on the input and another
    on the output: a client reading the model's signature (``session.get_inputs()``) saw a name
    that changes with the model, and could not tell that the output's batch is the input's. The
    serving model maps each image to its row of probabilities, so both are one batch.
    """
    outer = [value.type.tensor_type.shape.dim[0] for value in (*graph.input, *graph.output)]
    symbols = {dim.dim_param for dim in outer if dim.dim_param}
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = BATCH_NAME


class _UnsupportedOps(logging.Handler):
    """Collects the ops of tf2onnx's "Unsupported ops" report: it logs them and writes the model
    anyway, with nodes ONNX Runtime refuses to load ("No Op registered for ...")."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.ops: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Unsupported ops") and record.args:
            # logging unpacks a single mapping argument (tf2onnx's Counter of op types).
            found = record.args if isinstance(record.args, Mapping) else record.args[0]
            self.ops.extend(sorted(found))


@contextlib.contextmanager
def _unsupported_ops():
    handler, logger = _UnsupportedOps(), logging.getLogger("tf2onnx.tfonnx")
    logger.addHandler(handler)
    try:
        yield handler.ops
    finally:
        logger.removeHandler(handler)


def write_litert(model: keras.Model, path: pathlib.Path) -> None:
    model.export(str(path), format="litert", verbose=False)


# A table rather than an `if` chain: one writer per format, looked up at each export, so a
# test (or a user) can swap one out.
WRITERS: dict[str, Callable[[keras.Model, pathlib.Path], None]] = {
    "saved_model": write_saved_model,
    "keras": write_keras,
    "onnx": write_onnx,
    "litert": write_litert,
}
