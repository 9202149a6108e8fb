"""Quantized serving artifacts of the student: the paper's cheap student made cheaper.

=======================  =========  ============================================================
quantization             format     what it does
=======================  =========  ============================================================
``dynamic``              litert     LiteRT dynamic-range: int8 weights, activations quantized on
                                    the fly per call; needs no calibration data.
``int8``                 litert     LiteRT full integer: int8 weights and activations, ranges
                                    calibrated on training images; float32 in and out.
``int8``                 onnx       ONNX Runtime static int8 (QDQ, per-channel weights),
                                    calibrated the same way.
=======================  =========  ============================================================

The artifact keeps the export's serving convention (``"images"`` in, ``"probabilities"``
out), and is verified by reloading it with its runtime and checking that its predictions
agree with the float32 student's; a quantized model cannot match to 1e-5, so the check is on
the probabilities to :data:`ATOL`. The accuracy change each costs on real data is measured
by ``bench/serving.py`` and tabled in ``bench/README.md``; ``fitnets-export --quantize``
measures its own artifact's on the run's test split (:mod:`~fitnets_tf.export.accuracy`).

``fitnets-export --quantize=int8`` calibrates on the first :data:`CALIBRATION_IMAGES` images of
the run's own training split (:func:`calibration_source` reads which from its ``flags.txt``, and
for a folder or an ``.npz`` file how its held-out examples were drawn from its ``data.json``),
passed through the run's fitted preprocessing (:func:`calibration_images`).

Full int8 does not hold for a net whose ceil-mode pooling overhangs the map
(:class:`~fitnets_tf.layers.CeilMaxPooling2D` pads with the lowest float, which swamps the
calibrated range; the paper's MNIST teacher does, ``mnist_fitnet`` does not): the check
below then refuses the artifact.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf import native_logs
from fitnets_tf.errors import ExportConfigError, ExportVerificationError
from fitnets_tf.export import labels, packages, writers
from fitnets_tf.export.destination import refuse_unwritable
from fitnets_tf.export.publish import (
    move_into_place,
    no_room,
    refuse_existing,
    staging_directory,
)
from fitnets_tf.export.serving import INPUT_NAME, OUTPUT_NAME, run_of
from fitnets_tf.export.verify import (
    litert_interpreter,
    probe_images,
    run_artifact,
    staged_message,
    verify_class_names,
)
from fitnets_tf.run.layout import RunLayout

# What export offers: each kind kept the default experiment's student within 0.5 points of
# its float32 test accuracy (bench/README.md, "Quantized student"); a kind that loses more is
# dropped from here, and WRITERS below still writes it for the benchmark.
QUANTIZATIONS = {"dynamic": ("litert",), "int8": ("litert", "onnx")}
# Quantized probabilities move by a few hundredths at most on a trained student; a wrong
# conversion (swapped channels, a missing softmax) moves them by tenths.
ATOL = 0.1
CALIBRATION_IMAGES = 500


def check(quantization: str, format: str, *, raw: bool = False) -> None:
    """Refuses an unsupported ``(quantization, format)`` before any work is done.

    Raises:
        ExportConfigError: an unknown quantization, a format it is not offered for, or int8
            of a model taking raw pixels.
        RuntimeUnavailableError: a package the format's quantization needs is not installed.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportConfigError(
            f"`quantize` must be one of {', '.join(QUANTIZATIONS)}. "
            f"Received: quantize={quantization!r}"
        )
    if format not in QUANTIZATIONS[quantization]:
        raise ExportConfigError(
            f"quantize={quantization!r} applies to the {' and '.join(QUANTIZATIONS[quantization])} "
            f"format(s), not {format!r}: choose --format={QUANTIZATIONS[quantization][0]}, or "
            "drop --quantize."
        )
    if quantization == "int8" and raw:
        raise ExportConfigError(
            "quantize='int8' calibrates on the normalised images the student was trained on, "
            "so it cannot be combined with include_preprocessing: export without it."
        )
    if (quantization, format) == ("int8", "onnx"):
        packages.require("onnx_int8", "ONNX int8 quantization",
                         "quantize to LiteRT instead (--format=litert)")


def calibration_source(workdir: str | os.PathLike) -> dict:
    """The :func:`fitnets_tf.data.load` arguments naming a run's training split (``workdir``
    is the run's directory or one of its modes' or stages').

    Read from the run's ``flags.txt``: its dataset, data directory, image size (and resize
    mode), channels and held-out split, and for the user's folder or ``.npz`` file the draw of
    its held-out examples from its ``data.json`` (a run without one drew at random), so the
    calibration images are training images the student saw, never its test images.

    Raises:
        ExportConfigError: the run directory has no ``flags.txt`` naming its dataset.
    """
    files = run_of(pathlib.Path(workdir))  # a mode's directory calibrates on its run's data
    given = files.recorded_flags()
    if not given.get("dataset"):
        raise ExportConfigError(
            f"quantize='int8' calibrates on the run's training images, but {files.flags} does "
            "not exist or names no --dataset (a run directory written by hand?). Use "
            "quantize='dynamic', which needs no calibration, or export from the training run's "
            "own directory."
        )
    from fitnets_tf.data.holdout import mixing_given_splits
    from fitnets_tf.data.sources import FOLDER, NPZ
    from fitnets_tf.run.data_record import holdout_of, recorded_size

    name, source = given["dataset"], {}
    for prefix in (FOLDER, NPZ):  # the run's own files, wherever the export is run from
        if name.startswith(prefix):
            _check_recorded_data(files, name.removeprefix(prefix))
            name = prefix + files.recorded_path(name.removeprefix(prefix))
            # The run's training images; for a run whose given splits came by class, mixed.
            source["holdout"] = mixing_given_splits(holdout_of(files.data, started=True))
    if name.startswith(FOLDER) and not given.get("image_size"):
        # A folder's default size was its first image's before it was its images' most common
        # one: the size the run trained on is the one its data.json records.
        size = recorded_size(files.data)
        if size is not None:
            source["image_size"] = size
    source.update(name=name, retrain_on_all="retrain_on_all" in given)
    if given.get("data_dir"):
        source["data_dir"] = files.recorded_path(given["data_dir"])
    if given.get("image_size"):
        source["image_size"] = tuple(int(side) for side in given["image_size"].split(","))
        if given.get("resize_mode"):  # with a size only: alone it did nothing (now refused)
            source["resize_mode"] = given["resize_mode"]
    if given.get("channels"):
        source["channels"] = int(given["channels"])
    if given.get("validation_size"):
        source["validation_size"] = int(given["validation_size"])
    return source


def _check_recorded_data(files: RunLayout, given: str) -> None:
    """Refuses a run whose image folder or ``.npz`` file (``given`` in its ``flags.txt``) is no
    longer where the run read it: the data's own message would say to give ``--dataset``, a
    flag the export does not have (it reads the path from the run's ``flags.txt``)."""
    path = pathlib.Path(files.recorded_path(given)).expanduser()
    if path.exists():
        return
    where = "" if path == pathlib.Path(given).expanduser() else (
        f" ({given!r} in {files.flags}, relative to the directory the run was started from)"
    )
    raise ExportConfigError(
        f"quantize='int8' calibrates on the run's training images, read from {str(path)!r}"
        f"{where}, which no longer exists. Put the images back there (the path is read from "
        f"{files.flags}), or use quantize='dynamic', which needs no calibration."
    )


def calibration_images(
    source: dict, preprocessor: keras.Layer | None, count: int = CALIBRATION_IMAGES
) -> np.ndarray:
    """The first ``count`` images of the training split ``source`` names, as the student saw them.

    The raw pixels go through the run's own fitted ``preprocessor`` (its ZCA included): a
    preprocessing refitted here would be fitted on ``count`` images, not the training set, and
    the dataset's default mode need not be the one the run chose, so without the run's
    preprocessor there is nothing right to calibrate on.

    Raises:
        ExportConfigError: ``preprocessor`` is None (the run's ``preprocessor.keras`` is
            missing), or the images are read at another shape than it takes.
        fitnets_tf.errors.DataError: the dataset cannot be read (as in training).
    """
    from fitnets_tf import data
    from fitnets_tf.data.sources import FOLDER

    if preprocessor is None:
        raise ExportConfigError(
            "quantize='int8' calibrates on images normalised as the student saw them, but the "
            "run's preprocessor.keras (its fitted normalisation) is missing. Restore it (or "
            "delete the run's summary.json and re-run its training command with the same "
            "flags: finished stages are not trained again, the file is written again), or use "
            "quantize='dynamic', which needs no calibration."
        )
    trained = _input_shape(preprocessor)
    if trained and source["name"].startswith(FOLDER) and "image_size" not in source:
        # A folder run from before data.json recorded its size: its preprocessor's input is
        # the size it trained on, not necessarily the folder's default size today.
        source = {**source, "image_size": trained[:2]}
    loaded = data.load(**source, preprocessing="none", limit=count, batch_size=count)
    if trained and tuple(loaded.spec.input_shape) != trained:
        raise ExportConfigError(
            f"quantize='int8' calibrates on the run's training images, but they are read as "
            f"{_shape(loaded.spec.input_shape)} and the run trained on {_shape(trained)} (its "
            "preprocessor.keras): the data is no longer what the run read. Restore it, or use "
            "quantize='dynamic', which needs no calibration."
        )
    images = preprocessor(loaded.train_examples[0])
    return np.asarray(keras.ops.convert_to_numpy(images), "float32")


def _input_shape(preprocessor) -> tuple[int, ...] | None:
    """The image shape a run's saved preprocessor takes: the run's (None: a bare layer)."""
    inputs = getattr(preprocessor, "inputs", None)
    shape = tuple(inputs[0].shape[1:]) if inputs else ()
    return shape if shape and None not in shape else None


def _shape(shape) -> str:
    return "x".join(str(side) for side in shape)


def export_quantized(
    serving: keras.Model,
    output: str | pathlib.Path,
    quantization: str,
    format: str = "litert",
    *,
    calibration: np.ndarray | None = None,
    overwrite: bool = False,
    raw: bool = False,
    class_names: Sequence[str] | None = None,
) -> pathlib.Path:
    """Writes ``serving`` (from :func:`~fitnets_tf.export.build_serving_model`) quantized.

    Staged beside ``output``, verified, then renamed into place, as every export; ``output``
    is locked from before the conversion (a second export to it is refused).

    Args:
        serving: the serving model (``images -> {"probabilities"}``).
        output: final ``.tflite`` / ``.onnx`` path.
        quantization: a key of :data:`QUANTIZATIONS`.
        format: ``"litert"`` or ``"onnx"``.
        calibration: ``(N, H, W, C)`` float32 training images for ``"int8"``; the first
            :data:`CALIBRATION_IMAGES` are used.
        overwrite: replace an earlier ``.tflite`` / ``.onnx`` file at ``output``.
        raw: ``serving`` takes raw pixels (its preprocessing baked in): without calibration
            images, it is checked on pixel values.
        class_names: the class of each output index, written into the artifact as
            :func:`~fitnets_tf.export.export_student` writes them (None: none).

    Raises:
        ExportConfigError, OutputExistsError, OutputNotWritableError, OutputBusyError,
        RuntimeUnavailableError, ExportVerificationError, DiskFullError (the artifact already
        there, if any, is kept).
    """
    check(quantization, format)
    if quantization == "int8" and calibration is None:
        raise ExportConfigError(
            "quantize='int8' needs calibration images (a few hundred training images, "
            "normalised as the student saw them; see calibration_images): pass "
            "`calibration`, or use quantize='dynamic', which needs none."
        )
    output = pathlib.Path(output).expanduser()
    writers.check_suffix(output, format)
    names = labels.resolve(class_names, None, serving.outputs[0].shape[-1], (format,))
    refuse_existing(output, overwrite, format)
    refuse_unwritable(output)
    images = None if calibration is None else np.asarray(calibration, "float32")[:CALIBRATION_IMAGES]
    with no_room(output, format), staging_directory(output) as staging:  # as publish does
        staged = staging / output.name
        WRITERS[(quantization, format)](serving, staged, images)
        labels.write(staged, format, names)
        verify_class_names(staged, format, names, output)
        probe = probe_images(serving, raw, 4) if images is None else images
        _verify(staged, format, serving, probe, output)
        refuse_existing(output, overwrite, format)
        move_into_place(staged, output, staging / "previous")
    return output


def _litert_converter(serving: keras.Model):
    return tf.lite.TFLiteConverter.from_keras_model(serving)


def _converted(converter) -> bytes:
    """``converter.convert()`` without what it prints: Keras' listing of the temporary
    SavedModel it exports first (stdout), the quantizer's settings line, and a warning about
    input statistics, which a model taking and returning float32 does not use."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        with native_logs.info_lines_dropped(native_logs.LITERT_QUANTIZER):
            return converter.convert()


def write_litert_dynamic(serving, path: pathlib.Path, _images=None) -> None:
    converter = _litert_converter(serving)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    path.write_bytes(_converted(converter))


def write_litert_int8(serving, path: pathlib.Path, images: np.ndarray) -> None:
    converter = _litert_converter(serving)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    # Every op in int8 (no float fallback); the model still takes and returns float32.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(_converted(converter))


def write_onnx_int8(serving, path: pathlib.Path, images: np.ndarray) -> None:
    packages.require("onnx_int8", "ONNX int8 quantization")
    from onnxruntime import quantization as ort_quantization

    class Reader(ort_quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(images, max(1, len(images) // 32)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    float_path = path.with_name(path.stem + ".float.onnx")
    writers.write_onnx(serving, float_path)
    prepared = path.with_name(path.stem + ".prepared.onnx")
    # Shape inference and graph clean-up first, as onnxruntime's quantization guide asks.
    ort_quantization.quant_pre_process(str(float_path), str(prepared))
    ort_quantization.quantize_static(
        str(prepared), str(path), Reader(), quant_format=ort_quantization.QuantFormat.QDQ,
        per_channel=True, activation_type=ort_quantization.QuantType.QInt8,
        weight_type=ort_quantization.QuantType.QInt8,
    )  # fmt: skip
    float_path.unlink()
    prepared.unlink()


WRITERS = {
    ("dynamic", "litert"): write_litert_dynamic,
    ("int8", "litert"): write_litert_int8,
    ("int8", "onnx"): write_onnx_int8,
}


def _verify(path: pathlib.Path, format: str, serving: keras.Model, images, output) -> None:
    probe = np.asarray(images[:4], "float32")
    expected = keras.ops.convert_to_numpy(serving(probe)[OUTPUT_NAME])
    try:
        got = run_quantized(path, format, probe)
    except Exception as err:
        raise ExportVerificationError(
            f"The quantized {format} model written for {output} does not load: "
            f"{staged_message(err, path)}; nothing was written there."
        ) from err
    if got is None:
        return
    if got.shape != expected.shape or not np.allclose(got, expected, atol=ATOL):
        raise ExportVerificationError(
            f"The quantized {format} model's probabilities differ from the student's by up to "
            f"{np.max(np.abs(got - expected)):.3f} (> {ATOL}); nothing was written to the final "
            "path. Quantization does not hold for this student: export it in float32."
        )


def run_quantized(path: pathlib.Path, format: str, x: np.ndarray) -> np.ndarray | None:
    """Probabilities of a quantized artifact for ``x``, one image at a time for LiteRT."""
    if format == "onnx":
        return run_artifact(path, format, x)
    interpreter = litert_interpreter(path)
    runner = interpreter.get_signature_runner("serving_default")
    return np.concatenate([runner(**{INPUT_NAME: image[None]})[OUTPUT_NAME] for image in x])
