"""The test accuracy a quantized student keeps, measured after its export and kept beside it.

A quantized artifact is verified against the float32 student on a few probe images
(:mod:`~fitnets_tf.export.quantize`): that refuses a broken conversion, not an accuracy loss.
A user choosing int8 wants that loss on the run's own data, so after a quantized export of a
run :func:`keep_accuracy` loads the run's test split (where :func:`~fitnets_tf.export.quantize.
calibration_source` finds its training split: the run's ``flags.txt`` and ``data.json``),
measures the quantized artifact, by its own runtime, and the float32 serving model on the same
images, and writes both to ``<artifact>.accuracy.json`` beside it (with the artifact's sha256:
the record says which file it measured). A run whose data cannot be loaded here (offline, moved)
is exported all the same, with one line saying why it was not measured; a record left by an
earlier artifact at that path is then removed, never kept beside the wrong file.
"""

from __future__ import annotations

import os
import pathlib

import keras
import numpy as np

from fitnets_tf.errors import UserError
from fitnets_tf.export import quantize
from fitnets_tf.export.serving import OUTPUT_NAME, build_serving_model, load_run, run_of
from fitnets_tf.run import io
from fitnets_tf.run.layout import RunLayout

#: Test images measured unless told otherwise: the whole test split of every built-in dataset.
DEFAULT_IMAGES = 10_000


def record_path(artifact: str | os.PathLike) -> pathlib.Path:
    """Where the accuracy of ``artifact`` is kept: ``<artifact>.accuracy.json`` beside it."""
    artifact = pathlib.Path(artifact)
    return artifact.with_name(artifact.name + ".accuracy.json")


def measure(
    workdir: str | os.PathLike,
    artifact: str | os.PathLike,
    format: str,
    *,
    raw: bool = False,
    images: int = DEFAULT_IMAGES,
) -> dict:
    """The accuracy of the quantized ``artifact`` and of the run's float32 student on the first
    ``images`` test images of the run in ``workdir``.

    Args:
        workdir: the run (or a mode's) directory the artifact was exported from.
        artifact: the quantized ``.tflite`` or ``.onnx`` file.
        format: ``"litert"`` or ``"onnx"``.
        raw: the artifact takes raw pixels (exported with its preprocessing baked in).
        images: how many test images, from the first (a positive int).

    Returns:
        ``{"test_images", "accuracy", "float32_accuracy", "difference_points"}``, accuracies
        as fractions, the difference in percentage points (quantized minus float32).

    Raises:
        UserError: the run's test split cannot be loaded, naming why.
    """
    from fitnets_tf import data

    workdir = pathlib.Path(workdir).expanduser()
    source = _test_source(workdir)
    student, preprocessor = load_run(workdir)
    if not raw and preprocessor is None:
        raise UserError(f"the run's fitted normalisation ({RunLayout(workdir).preprocessor}) is "
                        "missing")  # fmt: skip
    serving = build_serving_model(student, preprocessor if raw else None)
    loaded = data.load(**source, preprocessing="none", limit=images, batch_size=256, cache=False)
    correct = {"quantized": 0, "float32": 0}
    for pixels, labels in loaded.test:
        x = pixels if raw else preprocessor(pixels)
        x = np.asarray(keras.ops.convert_to_numpy(x), np.float32)
        served = keras.ops.convert_to_numpy(serving(x)[OUTPUT_NAME])
        quantized = quantize.run_quantized(pathlib.Path(artifact), format, x)
        correct["float32"] += int(np.sum(np.argmax(served, -1) == labels.numpy()))
        correct["quantized"] += int(np.sum(np.argmax(quantized, -1) == labels.numpy()))
    count = loaded.num_test_examples
    accuracy, float32 = correct["quantized"] / count, correct["float32"] / count
    return {
        "test_images": count,
        "accuracy": accuracy,
        "float32_accuracy": float32,
        "difference_points": round(100 * (accuracy - float32), 2),
    }


def keep_accuracy(
    workdir: str | os.PathLike,
    artifact: str | os.PathLike,
    format: str,
    quantization: str,
    *,
    raw: bool = False,
    images: int = DEFAULT_IMAGES,
) -> str:
    """Measures ``artifact`` (:func:`measure`), writes the result to :func:`record_path` and
    returns one line saying it; with ``images=0``, or data that cannot be loaded, writes none
    and returns the line saying why. An earlier artifact's record is removed first, so a kill
    while measuring leaves none beside this artifact. Raises nothing but an interrupt: the
    artifact is exported and verified already, and a failure to measure it must not fail that.
    """
    record = record_path(artifact)
    record.unlink(missing_ok=True)
    if images == 0:
        return "Accuracy not measured (--accuracy_images=0)."
    try:
        result = measure(workdir, artifact, format, raw=raw, images=images)
    except UserError as err:
        return f"Accuracy not measured: the run's test images cannot be loaded here ({_said(err)})."
    except Exception as err:  # noqa: BLE001 -- a runtime's own failure, after the export
        return f"Accuracy not measured: {type(err).__name__}: {_said(err)}."
    line = (
        f"Test accuracy on {result['test_images']} images: quantized ({quantization}, {format}) "
        f"{100 * result['accuracy']:.2f}%, float32 student {100 * result['float32_accuracy']:.2f}%"
        f", difference {result['difference_points']:+.2f} points"
    )
    try:
        io.write_json(record, {"quantization": quantization, "format": format, **result,
                               "artifact_sha256": io.file_sha256(artifact)})  # fmt: skip
    except (UserError, OSError) as err:  # a full disk: the artifact is in place all the same
        return f"{line}; not kept ({_said(err)})."
    return f"{line} (kept in {record})."


def _said(err: Exception) -> str:
    """An error's message on one line."""
    return " ".join(str(err).split())


def _test_source(workdir: pathlib.Path) -> dict:
    """The run's data as :func:`~fitnets_tf.export.quantize.calibration_source` names it, its
    refusals (worded for calibration) said here as why the test split cannot be loaded."""
    from fitnets_tf.data.sources import FOLDER, NPZ

    files = run_of(workdir)
    name = files.recorded_flags().get("dataset")
    if not name:
        raise UserError(f"{files.flags} does not exist or names no --dataset")
    for prefix in (FOLDER, NPZ):
        path = pathlib.Path(files.recorded_path(name.removeprefix(prefix))).expanduser()
        if name.startswith(prefix) and not path.exists():
            raise UserError(f"its data, {path}, no longer exists")
    return quantize.calibration_source(files.root)
