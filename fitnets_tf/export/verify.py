"""An artifact is reloaded by its own runtime and must compute what the student computes."""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf import native_logs
from fitnets_tf.errors import ExportVerificationError
from fitnets_tf.export import labels
from fitnets_tf.export.serving import INPUT_NAME, OUTPUT_NAME

# float32 kernels differ across runtimes (oneDNN, MLAS, XNNPACK) by summation order only.
ATOL = 1e-5


def probe_images(serving: keras.Model, raw: bool, count: int = 2) -> np.ndarray:
    """Inputs to compare an artifact with ``serving`` on: pixel values for a model that takes
    raw pixels, values around 0 for one that takes the student's normalised input."""
    shape = tuple(serving.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    probe = rng.uniform(0.0, 255.0, (count, *shape)) if raw else rng.normal(size=(count, *shape))
    return probe.astype("float32")


def verify(
    path: pathlib.Path,
    format: str,
    serving: keras.Model,
    raw: bool,
    class_names: list[str] | None = None,
    output: pathlib.Path | None = None,
) -> None:
    """Reloads the artifact with its runtime and compares it with ``serving`` on a probe batch,
    and its class names with ``class_names`` (those the format carries: see :mod:`.labels`).

    ``path`` is the staged artifact; a refusal names ``output``, its final path (default:
    ``path``): the staged file is removed by the time the message is read.
    """
    verify_class_names(path, format, class_names, output)
    probe = probe_images(serving, raw)
    expected = keras.ops.convert_to_numpy(serving(probe)[OUTPUT_NAME])
    try:
        got = run_artifact(path, format, probe)
    except Exception as err:
        raise ExportVerificationError(
            f"The {format} artifact written for {output or path} does not reload: "
            f"{staged_message(err, path)}; nothing was written there."
        ) from err
    if got is None:
        return  # No runtime to execute it here; the writer's own checks have to do.
    if got.shape != expected.shape or not np.allclose(got, expected, atol=ATOL, rtol=1e-4):
        raise ExportVerificationError(
            f"The {format} artifact's outputs differ from the student's (max abs difference "
            f"{np.max(np.abs(got - expected)) if got.shape == expected.shape else got.shape}); "
            "nothing was written to the final path."
        )


def verify_class_names(
    path: pathlib.Path, format: str, class_names: list[str] | None,
    output: pathlib.Path | None = None,
) -> None:  # fmt: skip
    """The names read back from the artifact must be those written (none when None); a
    refusal names ``output`` (as :func:`verify`)."""
    expected = labels.carried(class_names, format)
    try:
        got = labels.read(path, format)
    except Exception as err:
        raise ExportVerificationError(
            f"The class names of the {format} artifact written for {output or path} do not read "
            f"back: {staged_message(err, path)}; nothing was written there."
        ) from err
    if got != expected:
        raise ExportVerificationError(
            f"The {format} artifact's class names read back as {got!r}, not {expected!r}; "
            "nothing was written to the final path."
        )


def staged_message(err: Exception, staged: pathlib.Path) -> str:
    """A runtime's message on the staged artifact, which names the file it could not read."""
    return str(err).replace(str(staged), "the staged file")


def run_artifact(path: pathlib.Path, format: str, x: np.ndarray) -> np.ndarray | None:
    """The artifact's probabilities for ``x``, by its own runtime (None: no runtime here)."""
    if format == "saved_model":
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        return signature(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy()
    if format == "keras":
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        return keras.ops.convert_to_numpy(model(x)[OUTPUT_NAME])
    if format == "onnx":
        return _run_onnx(path, x)
    runner = litert_interpreter(path).get_signature_runner("serving_default")
    return runner(**{INPUT_NAME: x})[OUTPUT_NAME]


def _run_onnx(path: pathlib.Path, x: np.ndarray) -> np.ndarray | None:
    try:
        import onnxruntime
    except ImportError:
        import onnx

        onnx.checker.check_model(str(path))
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def litert_interpreter(path: pathlib.Path, num_threads: int | None = None):
    # ai_edge_litert is the LiteRT runtime a device ships; tf.lite.Interpreter is its deprecated
    # predecessor inside TensorFlow, used when the standalone package is absent.
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter  # noqa: N806
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    # The first allocation makes the XNNPACK delegate, which says so once per process.
    with native_logs.info_lines_dropped(native_logs.LITERT_INTERPRETER):
        interpreter.allocate_tensors()
    return interpreter
