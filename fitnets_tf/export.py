"""Export the trained student, and only the student, for serving.

Serving convention, the same in every format:

* one input named ``"images"``: a float32 batch ``(N, H, W, C)``, N free. By default it is the
  *normalised* tensor the student was trained on (the output of the run's preprocessing).
  With ``include_preprocessing=True`` the run's fitted preprocessing (``preprocessor.keras``,
  GCN/ZCA included when the run used them) is baked into the graph and ``"images"`` is raw
  pixels in [0, 255], still float32.
* one output named ``"probabilities"``: the softmax of the student's logits, float32 ``(N, K)``.
  A server wants probabilities; argmax is unchanged, and clients that need logits have the
  ``.keras`` training artifact. The Softmax is a built-in layer, so no Lambda (no pickled
  code) ends up in any artifact.

Formats and what runs them (the same convention, so a client can switch runtimes):

=============  =================================  ============================================
format         default file under ``RUN/export``  runtime
=============  =================================  ============================================
saved_model    ``student_saved_model/``           ``tf.saved_model.load(p).signatures
                                                  ["serving_default"](images=x)``
keras          ``student.keras``                  ``keras.saving.load_model(p, safe_mode=True)``
                                                  after ``import fitnets_tf.layers`` (and
                                                  ``fitnets_tf.preprocessing`` for ``_raw``)
onnx           ``student.onnx``                   onnxruntime; written by tf2onnx from the
                                                  frozen graph (see ``_write_onnx``)
litert         ``student.tflite``                 LiteRT (``ai_edge_litert``) or ``tf.lite``
=============  =================================  ============================================

SavedModel, ONNX and LiteRT artifacts are self-contained: running them needs no fitnets_tf.
A student trained in mixed precision is exported computing in float32.

Exports with the preprocessing baked in get ``_raw`` after ``student`` (``student_raw.onnx``,
``student_raw_saved_model/``): they take raw pixels.

Every export is written into a hidden staging directory beside the final path, verified by
reloading it and comparing its outputs, and only then renamed into place, so a crash never
leaves a half-written model at the final path and an existing artifact is never removed before
its replacement is complete.

Usage::

    python -m fitnets_tf.export --workdir=RUN_DIR --format=onnx [--output=PATH]
        [--include_preprocessing] [--overwrite]
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

# Imported for their side effect: registering the custom layers that .keras files refer to.
from fitnets_tf import layers as _layers  # noqa: F401
from fitnets_tf import preprocessing as _preprocessing  # noqa: F401
from fitnets_tf.latency import artifact_size, format_size, measure_latency, set_threads

FORMATS = ("saved_model", "keras", "onnx", "litert")
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
STUDENT_FILE = "student.keras"
# Where training writes the student's SavedModel (`export_student(student, workdir / RUN_SAVED_MODEL)`).
RUN_SAVED_MODEL = "student_saved_model"
PREPROCESSOR_FILE = "preprocessor.keras"
# Where the CLI looks for a teacher to time; the first that exists is used.
TEACHER_FILES = ("teacher/teacher.keras", "teacher.keras")
EXPORT_DIR = "export"
RAW_SUFFIX = "_raw"

_DEFAULT_NAMES = {
    "saved_model": "student{raw}_saved_model",
    "keras": "student{raw}.keras",
    "onnx": "student{raw}.onnx",
    "litert": "student{raw}.tflite",
}
# The Keras and LiteRT writers insist on these suffixes; ONNX's is required for symmetry.
_SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite"}
# float32 kernels differ across runtimes (oneDNN, MLAS, XNNPACK) by summation order only.
_ATOL = 1e-5


class ExportError(Exception):
    """Base of the errors an export reports to its user (the CLI prints them, no traceback)."""


class MissingStudentError(ExportError, FileNotFoundError):
    """The run directory, or the trained student in it, does not exist."""


class OutputExistsError(ExportError, FileExistsError):
    """The output path exists, is not empty, and ``overwrite`` was not given."""


class ExportConfigError(ExportError, ValueError):
    """The arguments cannot describe an export (format, suffix, student, preprocessing)."""


class RuntimeUnavailableError(ExportError, ImportError):
    """A package needed to write this format is not installed."""


class ExportVerificationError(ExportError, RuntimeError):
    """The written artifact did not reload, or its outputs differ from the in-memory model."""


def default_output(
    workdir: str | os.PathLike, format: str, include_preprocessing: bool = False
) -> pathlib.Path:
    """Returns where the CLI writes ``format`` for the run in ``workdir`` (see the module docstring)."""
    _check_format(format)
    name = _DEFAULT_NAMES[format].format(raw=RAW_SUFFIX if include_preprocessing else "")
    return pathlib.Path(workdir) / EXPORT_DIR / name


def load_run(workdir: str | os.PathLike) -> tuple[keras.Model, keras.Model | None]:
    """Loads a finished run's student and, if the run fitted one, its preprocessor.

    Both are loaded with ``safe_mode=True``, as a server would.

    Raises:
        MissingStudentError: if ``workdir`` or ``workdir/student.keras`` does not exist.
        ExportError: if a file exists but cannot be loaded.
    """
    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise MissingStudentError(
            f"Run directory {workdir} does not exist. Check --workdir: it must be the directory a "
            "training run wrote."
        )
    student_path = workdir / STUDENT_FILE
    if not student_path.is_file():
        raise MissingStudentError(
            f"{workdir} holds no trained student ({student_path} is missing). The student is "
            "written when training finishes: train first, or check that --workdir names a "
            "finished run."
        )
    student = _load_keras(student_path, "student")
    preprocessor_path = workdir / PREPROCESSOR_FILE
    preprocessor = (
        _load_keras(preprocessor_path, "preprocessor") if preprocessor_path.is_file() else None
    )
    return student, preprocessor


def build_serving_model(
    student: keras.Model, preprocessor: keras.Layer | None = None
) -> keras.Model:
    """Wraps the student as ``images -> [preprocessor] -> student -> softmax``.

    The result is a Functional model with one input named ``"images"`` and a dict output
    ``{"probabilities": (N, K) float32}``; every export format is written from it. The student's
    weights are shared, not copied, and nothing else (teacher, regressor, Distiller) is reachable
    from it.

    Args:
        student: Functional model with one image input and one logits output.
        preprocessor: optional layer or model mapping raw pixels to the student's input. Its
            input shape, when it declares one, is the serving model's input shape.

    Raises:
        ExportConfigError: if the student is not a single-input, single-output Functional model
            ending in logits, or the two models cannot be chained.
    """
    _check_student(student)
    student = _in_float32(student)
    shape = tuple(student.inputs[0].shape[1:])
    if preprocessor is not None:
        # A bare layer declares no input shape: the student's is kept.
        with contextlib.suppress(AttributeError, IndexError, ValueError):
            shape = tuple(preprocessor.inputs[0].shape[1:])
    images = keras.Input(shape=shape, name=INPUT_NAME, dtype="float32")
    try:
        x = images if preprocessor is None else preprocessor(images)
        logits = student(x)
        probabilities = keras.layers.Softmax(name=OUTPUT_NAME, dtype="float32")(logits)
        name = "student_serving" + (RAW_SUFFIX if preprocessor is not None else "")
        return keras.Model(images, {OUTPUT_NAME: probabilities}, name=name)
    except ValueError as err:
        raise ExportConfigError(
            f"Cannot chain the preprocessor and the student for serving: {err}"
        ) from err


def export_student(
    source: keras.Model | str | os.PathLike,
    output: str | os.PathLike | None = None,
    format: str = "saved_model",
    *,
    preprocessor: keras.Layer | str | os.PathLike | None = "auto",
    include_preprocessing: bool = False,
    overwrite: bool = False,
) -> pathlib.Path:
    """Exports the student for serving, atomically, and verifies the artifact reloads.

    The artifact takes ``"images"`` and returns ``{"probabilities": softmax(logits)}`` in every
    format (see the module docstring for the runtimes).

    Args:
        source: the student (a Functional ``keras.Model`` returning logits), or a run directory
            holding ``student.keras``. Pass ``distiller.student``, never the Distiller.
        output: final path (a directory for ``saved_model``, a ``.keras`` / ``.onnx`` /
            ``.tflite`` file otherwise). Defaults to ``default_output(source, ...)`` when
            ``source`` is a run directory; required otherwise.
        format: one of ``"saved_model"``, ``"keras"``, ``"onnx"``, ``"litert"``.
        preprocessor: what ``include_preprocessing`` bakes in: a Keras layer or model taking
            raw pixels in [0, 255], a path to a ``.keras`` file holding one, or ``"auto"``
            (the run directory's ``preprocessor.keras``). Ignored without
            ``include_preprocessing``.
        include_preprocessing: bake the preprocessing into the graph, so that ``"images"`` is
            raw pixels in [0, 255] instead of the normalised tensor.
        overwrite: replace an existing non-empty ``output``. The old artifact stays in place
            until the new one has been written and verified.

    Returns:
        The path of the exported artifact.

    Raises:
        MissingStudentError: the run directory or its ``student.keras`` does not exist.
        OutputExistsError: ``output`` exists, is non-empty and ``overwrite`` is False.
        ExportConfigError: bad format, suffix, student, or no preprocessor to bake in.
        RuntimeUnavailableError: the format's converter is not installed.
        ExportVerificationError: the artifact did not reload or does not match the student.
    """
    _check_format(format)
    workdir = None
    if isinstance(source, keras.Model):
        student = source
        run_preprocessor = None
    elif isinstance(source, (str, os.PathLike)):
        workdir = pathlib.Path(source)
        student, run_preprocessor = load_run(workdir)
    else:
        raise ExportConfigError(
            "`source` must be the student (a keras.Model) or a run directory. "
            f"Received: source={type(source).__name__}"
        )

    if output is None:
        if workdir is None:
            raise ExportConfigError(
                "`output` is required when `source` is a model rather than a run directory."
            )
        output = default_output(workdir, format, include_preprocessing)
    output = pathlib.Path(output)
    _check_suffix(output, format)
    _refuse_existing(output, overwrite)

    baked = None
    if include_preprocessing:
        baked = _resolve_preprocessor(preprocessor, run_preprocessor, workdir)
    serving = build_serving_model(student, baked)
    _publish(serving, output, format, overwrite, raw=baked is not None)
    return output


# --- Writing --------------------------------------------------------------------------------


def _write_saved_model(model: keras.Model, path: pathlib.Path) -> None:
    model.export(str(path), format="tf_saved_model", verbose=False)


def _write_keras(model: keras.Model, path: pathlib.Path) -> None:
    model.save(path)


def _write_onnx(model: keras.Model, path: pathlib.Path) -> None:
    # Not `model.export(format="onnx")`: on the TensorFlow backend Keras 3.15 hands the traced
    # function to `tf2onnx.convert.from_function`, which declares every captured non-variable
    # tensor as a graph input. A layer holding constants (keras' Normalization(mean=...), a
    # fitted ZCA matrix) then yields a model that cannot run on "images" alone. Freezing the
    # function first turns those captures into constants, and tf2onnx converts the frozen graph.
    try:
        import tf2onnx
    except ImportError as err:
        raise RuntimeUnavailableError(
            f"ONNX export on the TensorFlow backend needs tf2onnx and onnx ({err}): "
            "pip install 'tf2onnx>=1.17' 'onnx>=1.16' (and onnxruntime to run the model)."
        ) from err
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec(model.inputs[0].shape, "float32", name=INPUT_NAME)
    concrete = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    (input_name,) = [t.name for t in frozen.inputs]
    (output_name,) = [t.name for t in frozen.outputs]
    tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        name=model.name,
        input_names=[input_name],
        output_names=[output_name],
        tensors_to_rename={input_name: INPUT_NAME, output_name: OUTPUT_NAME},
        output_path=str(path),
    )


def _write_litert(model: keras.Model, path: pathlib.Path) -> None:
    model.export(str(path), format="litert", verbose=False)


# A table rather than an `if` chain: one writer per format, and tests can swap one out.
_WRITERS: dict[str, Callable[[keras.Model, pathlib.Path], None]] = {
    "saved_model": _write_saved_model,
    "keras": _write_keras,
    "onnx": _write_onnx,
    "litert": _write_litert,
}


def _publish(
    serving: keras.Model, output: pathlib.Path, format: str, overwrite: bool, raw: bool
) -> None:
    """Writes into a staging directory beside ``output``, verifies, then renames into place.

    The staging directory is a sibling so the final ``os.replace`` stays on one filesystem and
    is a rename, never a copy. Whatever happens, the staging directory is removed.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        staged = staging / "new" / output.name
        staged.parent.mkdir()
        with _quiet_tf_logger():  # The converters narrate every step at INFO level.
            _WRITERS[format](serving, staged)
            _verify(staged, format, serving, raw)
        _refuse_existing(output, overwrite)  # Something may have appeared while we wrote.
        if output.exists() or output.is_symlink():
            # os.replace cannot put a directory over a non-empty one, so the old artifact moves
            # aside first; it is deleted with the staging directory only once the new one is in.
            previous = staging / "previous"
            os.replace(output, previous)
            try:
                os.replace(staged, output)
            except BaseException:
                os.replace(previous, output)
                raise
        else:
            os.replace(staged, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _quiet_tf_logger():
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


# --- Verification ---------------------------------------------------------------------------


def _verify(path: pathlib.Path, format: str, serving: keras.Model, raw: bool) -> None:
    """Reloads the artifact with its runtime and compares it with ``serving`` on a probe batch."""
    shape = tuple(serving.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    probe = (rng.uniform(0.0, 255.0, (2, *shape)) if raw else rng.normal(size=(2, *shape))).astype(
        "float32"
    )
    expected = keras.ops.convert_to_numpy(serving(probe)[OUTPUT_NAME])
    try:
        got = _run_artifact(path, format, probe)
    except Exception as err:
        raise ExportVerificationError(
            f"The {format} artifact written at {path} does not reload: {err}"
        ) from err
    if got is None:
        return  # No runtime to execute it here; the writer's own checks have to do.
    if got.shape != expected.shape or not np.allclose(got, expected, atol=_ATOL, rtol=1e-4):
        raise ExportVerificationError(
            f"The {format} artifact's outputs differ from the student's (max abs difference "
            f"{np.max(np.abs(got - expected)) if got.shape == expected.shape else got.shape}); "
            "nothing was written to the final path."
        )


def _run_artifact(path: pathlib.Path, format: str, x: np.ndarray) -> np.ndarray | None:
    if format == "saved_model":
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        return signature(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy()
    if format == "keras":
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        return keras.ops.convert_to_numpy(model(x)[OUTPUT_NAME])
    if format == "onnx":
        try:
            import onnxruntime
        except ImportError:
            import onnx

            onnx.checker.check_model(str(path))
            return None

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    runner = _litert_interpreter(path).get_signature_runner("serving_default")
    return runner(**{INPUT_NAME: x})[OUTPUT_NAME]


def _litert_interpreter(path: pathlib.Path):
    # ai_edge_litert is the LiteRT runtime a device ships; tf.lite.Interpreter is its deprecated
    # predecessor inside TensorFlow, used when the standalone package is absent.
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter  # noqa: N806
    return Interpreter(model_path=str(path))


# --- Checks ---------------------------------------------------------------------------------


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ExportConfigError(
            f"`format` must be one of {', '.join(FORMATS)}. Received: format={format!r}"
        )


def _check_suffix(output: pathlib.Path, format: str) -> None:
    suffix = _SUFFIXES.get(format)
    if suffix is not None and output.suffix != suffix:
        raise ExportConfigError(
            f"A {format} export must be written to a '{suffix}' file. Received: output={output}"
        )


def _refuse_existing(output: pathlib.Path, overwrite: bool) -> None:
    if overwrite or not (output.exists() or output.is_symlink()):
        return
    empty = (output.is_dir() and not any(output.iterdir())) or (
        output.is_file() and output.stat().st_size == 0
    )
    if not empty:
        raise OutputExistsError(
            f"{output} already exists and is not empty; nothing was written. Choose another "
            "--output, or pass --overwrite to replace it (the old artifact is kept until the new "
            "one is complete)."
        )


def _in_float32(student: keras.Model) -> keras.Model:
    """Returns the student itself, or a float32 copy if it was built under mixed precision.

    CPU runtimes gain nothing from float16, and the mixed graph does not convert: ONNX Runtime
    rejects its mixed-type ops and LiteRT needs TensorFlow's Flex delegate. Mixed precision keeps
    the variables in float32, so the copy computes exactly what the student learned.
    """
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in student.layers):
        return student

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(student, clone_function=float32_layer)
    copy.set_weights(student.get_weights())
    return copy


def _check_student(student) -> None:
    if not isinstance(student, keras.Model):
        raise ExportConfigError(
            f"The student must be a keras.Model. Received: {type(student).__name__}"
        )
    try:
        inputs, outputs = student.inputs, student.outputs
    except AttributeError:
        inputs = outputs = None
    if not inputs or len(inputs) != 1 or not outputs or len(outputs) != 1:
        raise ExportConfigError(
            "The student must be a Functional model with one image input and one logits output "
            f"(if you hold a Distiller, export `distiller.student`). Received: {student.name!r} "
            f"({type(student).__name__})"
        )
    last = student.layers[-1]
    if (
        isinstance(last, keras.layers.Softmax)
        or getattr(last, "activation", None) is keras.activations.softmax
    ):
        raise ExportConfigError(
            f"The student must output logits; its last layer {last.name!r} applies a softmax, and "
            "the export adds its own."
        )


def _resolve_preprocessor(preprocessor, run_preprocessor, workdir) -> keras.Layer:
    if isinstance(preprocessor, str) and preprocessor == "auto":
        if run_preprocessor is None:
            where = (
                f"{workdir / PREPROCESSOR_FILE} does not exist"
                if workdir
                else "no run directory was given"
            )
            raise ExportConfigError(
                f"include_preprocessing needs the run's fitted preprocessing, but {where}. The "
                "student already takes what that run fed it: export without "
                "include_preprocessing, or pass `preprocessor`."
            )
        return run_preprocessor
    if isinstance(preprocessor, (str, os.PathLike)):
        return _load_keras(pathlib.Path(preprocessor), "preprocessor")
    if isinstance(preprocessor, keras.Layer):
        return preprocessor
    raise ExportConfigError(
        "include_preprocessing needs `preprocessor`: a Keras layer, a .keras path or 'auto'. "
        f"Received: preprocessor={preprocessor!r}"
    )


def _load_keras(path: pathlib.Path, what: str) -> keras.Model:
    if not path.is_file():
        raise MissingStudentError(f"No {what} at {path}.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:
        raise ExportError(f"Could not load the {what} from {path}: {err}") from err


# --- CLI ------------------------------------------------------------------------------------


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _latency_rows(models: dict[str, keras.Model], repeats: int) -> list[tuple[str, ...]]:
    rows = []
    for name, model in models.items():
        for batch, result in measure_latency(model, batch_sizes=(1, 128), repeats=repeats).items():
            rows.append(
                (
                    name,
                    str(batch),
                    f"{result['ms_per_image']:.4g}",
                    f"{result['images_per_second']:.0f}",
                )
            )
    return rows


def _timed_models(workdir: pathlib.Path, teacher: str | None) -> dict[str, keras.Model]:
    # An explicit --teacher must exist; the default places are optional, as a run that reused
    # a trained teacher may not hold one.
    candidates = [pathlib.Path(teacher)] if teacher else [workdir / f for f in TEACHER_FILES]
    path = next((p for p in candidates if p.is_file()), candidates[0] if teacher else None)
    models = {} if path is None else {"teacher": _load_keras(path, "teacher")}
    models["student"] = load_run(workdir)[0]
    return models


def _define_flags() -> None:
    # Defined only when run as a program, so that importing this module (from train.py, the
    # tests or a notebook) never adds flags to the global absl registry.
    from absl import flags

    flags.DEFINE_string("workdir", None, "Run directory holding student.keras.", required=True)
    flags.DEFINE_enum(
        "format", "saved_model", (*FORMATS, "all"), "Export format; 'all' writes each."
    )
    flags.DEFINE_string("output", None, "Output path; defaults to WORKDIR/export/student.<ext>.")
    flags.DEFINE_bool(
        "include_preprocessing",
        False,
        "Bake WORKDIR/preprocessor.keras into the graph: the model then takes raw pixels in [0, 255].",
    )
    flags.DEFINE_bool(
        "overwrite", False, "Replace a non-empty --output (only once the new one is complete)."
    )
    flags.DEFINE_bool(
        "latency", True, "Also time the student, and the teacher if there is one, on this CPU."
    )
    flags.DEFINE_string(
        "teacher",
        None,
        "Teacher .keras for the latency table; defaults to WORKDIR/teacher/teacher.keras.",
    )
    flags.DEFINE_integer("latency_repeats", 15, "Timed calls per batch size.")
    flags.DEFINE_integer(
        "threads", None, "TensorFlow intra-op threads for the timing (default: all cores)."
    )


def main(argv: list[str]) -> None:
    """Exports a finished run's student and prints sizes (and latencies); see the module docstring."""
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    cfg = flags.FLAGS
    formats = FORMATS if cfg.format == "all" else (cfg.format,)
    if cfg.output and len(formats) > 1:
        raise app.UsageError(
            "--output names one artifact; it cannot be combined with --format=all."
        )
    try:
        if cfg.threads:
            set_threads(cfg.threads)  # Before the export runs TensorFlow and fixes its pool.
        exported = []
        for fmt in formats:
            path = export_student(
                cfg.workdir,
                cfg.output,
                fmt,
                include_preprocessing=cfg.include_preprocessing,
                overwrite=cfg.overwrite,
            )
            exported.append((fmt, str(path), format_size(artifact_size(path))))
        latency = []
        if cfg.latency:
            models = _timed_models(pathlib.Path(cfg.workdir), cfg.teacher)
            latency = _latency_rows(models, cfg.latency_repeats)
    except (ExportError, RuntimeError) as err:
        # The user's mistake, a missing package, or --threads too late (RuntimeError): a
        # paragraph, not a traceback.
        print(f"fitnets_tf.export: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(_table(("format", "path", "size"), exported))
    if latency:
        print()
        print("CPU latency (Keras, tf.function, median):")
        print(_table(("model", "batch", "ms/image", "images/s"), latency))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
