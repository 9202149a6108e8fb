"""The serving model: ``images -> [preprocessing] -> student -> softmax``, float32, no Lambda."""

from __future__ import annotations

import contextlib
import os
import pathlib

import keras

from fitnets_tf import custom_code
from fitnets_tf.errors import ConfigError, ExportConfigError, ExportError, MissingStudentError
from fitnets_tf.export.fold import fold_batch_norm
from fitnets_tf.layer_state import set_weights
from fitnets_tf.models import nesting, traced
from fitnets_tf.models.logits import final_softmax
from fitnets_tf.run import io
from fitnets_tf.run.layout import RunLayout

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
RAW_SUFFIX = "_raw"


def load_run(workdir: str | os.PathLike) -> tuple[keras.Model, keras.Model | None]:
    """Loads a finished run's student and, if the run fitted one, its preprocessor.

    Both are loaded with ``safe_mode=True``, as a server would, after checking them against
    the sha256 the run wrote beside them (a run from before checksums: see :func:`unverified`).

    Raises:
        MissingStudentError: if ``workdir`` or ``workdir/student.keras`` does not exist.
        ExportError: if a file is damaged (it differs from its sha256) or cannot be loaded.
    """
    workdir = pathlib.Path(workdir)
    if workdir.is_file():  # "does not exist" would send the user looking for a missing file
        raise MissingStudentError(_a_file_not_a_run(workdir))
    if not workdir.is_dir():
        raise MissingStudentError(
            f"Run directory {workdir} does not exist. Check --workdir: it must be the directory a "
            "training run wrote."
        )
    files = RunLayout(workdir)
    if not files.student.is_file():
        raise MissingStudentError(
            f"{workdir} holds no trained student ({files.student} is missing). The student is "
            "written when training finishes: train first, or check that --workdir names a "
            "finished run."
        )
    # Both files are written again, from the stages' own files, when a finished run is re-run
    # without its summary.json; no stage is trained again.
    repair = (f"Restore it from a backup, or write it again: delete {files.summary} and re-run "
              "the training command with the same flags and --workdir (finished stages are not "
              "trained again).")  # fmt: skip
    import_run_modules(workdir)
    student = load_keras(files.student, "student", repair)
    fitted = run_of(workdir).preprocessor
    preprocessor = load_keras(fitted, "preprocessor", repair) if fitted.is_file() else None
    return student, preprocessor


def run_of(workdir: pathlib.Path) -> RunLayout:
    """The run a student directory belongs to: ``workdir``, or the run holding it when it is a
    mode's or a stage's directory (``RUN/<mode>``, ``RUN/<mode>/<stage>``), which hold their
    own ``student.keras`` but share the run's fitted preprocessing."""
    for directory in (workdir, workdir.parent, workdir.parent.parent):
        files = RunLayout(directory)
        if files.flags.is_file() or files.preprocessor.is_file():
            return files
    return RunLayout(workdir)


def _a_file_not_a_run(path: pathlib.Path) -> str:
    message = (f"{path} is a file, not a run directory: --workdir names the directory a "
               "training run wrote.")  # fmt: skip
    if RunLayout(path.parent).student.is_file():
        message += f" Pass --workdir={path.parent}, the run directory holding it."
    elif path.suffix == ".keras":
        message += (" To export a .keras student from elsewhere, from Python: "
                    "fitnets_tf.export.export_student(keras.saving.load_model(PATH), OUTPUT, "
                    "FORMAT).")  # fmt: skip
    return message


def unverified(workdir: str | os.PathLike) -> list[pathlib.Path]:
    """The model files :func:`load_run` reads that have no sha256 beside them (older runs)."""
    preprocessor = run_of(pathlib.Path(workdir)).preprocessor
    return [path for path in (RunLayout(workdir).student, preprocessor)
            if path.is_file() and not io.checksum_path(path).is_file()]  # fmt: skip


def import_run_modules(workdir: str | os.PathLike) -> None:
    """Imports the ``--custom_modules`` of the run in ``workdir`` (its flags.txt), whose
    classes its model files need (:mod:`fitnets_tf.custom_code`)."""
    files = run_of(pathlib.Path(workdir))
    recorded = files.recorded_flags().get("custom_modules", "")
    custom_code.import_modules(filter(None, recorded.split(",")),
                               given_by=f"the run's --custom_modules ({files.flags})")  # fmt: skip


def load_runs_teacher(workdir: str | os.PathLike, log=print) -> keras.Model | None:
    """The teacher a run trained, or else the one it loaded (its flags.txt says from where).

    None when there is neither: a teacher moved or deleted since the run is left out, and
    ``log`` says so. A ``teacher.keras`` put beside the student by hand counts as the run's.
    """
    from fitnets_tf import builders, pretrained  # builders import the data pipelines: when used
    from fitnets_tf.errors import TeacherLoadError
    from fitnets_tf.models.sources import is_keras_file

    files = run_of(pathlib.Path(workdir))  # a mode's directory is exported in its run
    import_run_modules(workdir)
    trained = [files.teacher, pathlib.Path(workdir) / "teacher.keras", files.root / "teacher.keras"]
    if (path := next((p for p in trained if p.is_file()), None)) is not None:
        return load_keras(path, "teacher")
    # What ModelsConfig.trained_teacher() said in the run: --teacher_path, or a .keras --teacher.
    recorded = files.recorded_flags()
    named = recorded.get("teacher", "")
    loaded = recorded.get("teacher_path") or (named if is_keras_file(named) else None)
    if not loaded:
        return None  # an architecture the run trained, whose file is gone
    if not loaded.startswith(pretrained.PREFIX):
        loaded = files.recorded_path(loaded)  # relative to where the run was, not to here
    try:
        # The training's advice (--teacher_path, --stages) is no flag of the export's.
        return builders.load_teacher(loaded, advice="Pass --teacher=PATH.keras to time one.")
    except TeacherLoadError as e:
        log(f"note: the run's teacher is left out: {e}")
        return None


def timed_models(workdir: str | os.PathLike, teacher: str | os.PathLike | None = None,
                 log=print) -> dict[str, keras.Model]:  # fmt: skip
    """``{"teacher": ..., "student": ...}`` to time for the run in ``workdir``: ``teacher`` (a
    ``.keras`` file) or else the run's (:func:`load_runs_teacher`, left out if gone). A teacher
    saved with an open input size is built for the student's, so that it can be timed."""
    from fitnets_tf.models import at_input_shape

    models = {}
    if teacher:  # one named must exist
        models["teacher"] = load_keras(pathlib.Path(teacher).expanduser(), "teacher")
    elif (found := load_runs_teacher(workdir, log=log)) is not None:
        models["teacher"] = found
    student = load_run(workdir)[0]
    if "teacher" in models:
        models["teacher"] = at_input_shape(models["teacher"], student.inputs[0].shape[1:])
    return {**models, "student": student}


def load_keras(path: pathlib.Path, what: str, repair: str | None = None) -> keras.Model:
    """A ``.keras`` file through the project's safe loader, as an export error."""
    if not pathlib.Path(path).is_file():
        raise MissingStudentError(f"No {what} at {path}.")
    return io.load_model(path, what, ExportError, repair=repair)


def build_serving_model(
    student: keras.Model, preprocessor: keras.Layer | None = None
) -> keras.Model:
    """Wraps the student as ``images -> [preprocessor] -> student -> softmax``.

    The result is a Functional model with one input named ``"images"`` and a dict output
    ``{"probabilities": (N, K) float32}``; every export format is written from it. The student
    is :func:`as_served`; its weights are shared when that has nothing to change, and nothing
    else (teacher, regressor, Distiller) is reachable from it.

    Args:
        student: model with one image input and one logits output: Functional or Sequential,
            or subclassed and called once (:func:`graph_of`).
        preprocessor: optional layer or model mapping raw pixels to the student's input. Its
            input shape, when it declares one, is the serving model's input shape.

    Raises:
        ExportConfigError: if the student is not a single-input, single-output Functional model
            ending in logits of 2 classes or more, or the two models cannot be chained.
    """
    student = graph_of(student)
    check_student(student)
    _check_fixed_size(student, tuple(student.inputs[0].shape[1:]))
    student = as_served(student)
    shape = tuple(student.inputs[0].shape[1:])
    if preprocessor is not None:
        # A bare layer declares no input shape, and one taking any size serves the student's:
        # the student's is kept.
        with contextlib.suppress(AttributeError, IndexError, ValueError):
            given = tuple(preprocessor.inputs[0].shape[1:])
            shape = shape if None in given else given
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


def _check_fixed_size(student: keras.Model, shape: tuple) -> None:
    """Refuses a student whose input leaves the image size open, before any conversion: every
    artifact is verified on probe images, and served, at the one size the student was trained
    on; without it the verification failed with a bare TypeError."""
    if None in shape:
        raise ExportConfigError(
            f"The student {student.name!r} takes images of shape {shape}, a size left open, but "
            "an export is written, verified and served at one size: build it at the size it was "
            "trained on, fitnets_tf.models.at_input_shape(student, (H, W, C)) (the same layers "
            "and weights), and export that."
        )


def in_float32(student: keras.Model) -> keras.Model:
    """Returns the student itself, or a float32 copy if it was built under mixed precision.

    CPU runtimes gain nothing from float16, and the mixed graph does not convert: ONNX Runtime
    rejects its mixed-type ops and LiteRT needs TensorFlow's Flex delegate. Mixed precision keeps
    the variables in float32, so the copy computes exactly what the student learned.
    """
    # An InputLayer computes nothing; it takes the global policy, so a float32 copy made under a
    # mixed one would otherwise be copied again at every call.
    computing = [
        layer for layer in _layers_within(student) if not isinstance(layer, keras.layers.InputLayer)
    ]
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in computing):
        return student

    copy = keras.models.clone_model(student, clone_function=_float32_layer)
    set_weights(copy, student.get_weights())
    return copy


def _float32_layer(layer):
    """A float32 copy of one layer of the student, without its weights."""
    # A block that is a model (a Sequential inside the student) is copied layer by layer:
    # re-created from its config it kept its layers' mixed policy, which no runtime ran; and a
    # Sequential's input, made under that policy, is given float32 (Keras' recursive clone keeps
    # it, and the block cast the images to bfloat16 before its first layer).
    if isinstance(layer, keras.Sequential):
        inner = [_float32_layer(one) for one in layer.layers]
        with contextlib.suppress(AttributeError, ValueError):  # unbuilt: no input to give
            inner.insert(0, keras.Input(batch_shape=layer.inputs[0].shape, dtype="float32"))
        return keras.Sequential(inner, name=layer.name)
    if nesting.is_graph(layer):
        return keras.models.clone_model(layer, clone_function=_float32_layer)
    if not isinstance(layer, keras.layers.Layer):
        # An op of the graph (MobileNetV3's `x + 3`): no policy, its inputs' dtype.
        return layer.__class__.from_config(layer.get_config())
    return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})


def _layers_within(model: keras.Model) -> list:
    """``model``'s layers, and those of the models among them, at any depth."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out += _layers_within(layer)
    return out


def as_served(model: keras.Model) -> keras.Model:
    """``model`` as every export serves it: in float32, batch normalization folded into the
    layer before it (:mod:`fitnets_tf.export.fold`). The same function up to float rounding."""
    return fold_batch_norm(in_float32(model))


def graph_of(student):
    """A subclassed student as the Functional graph of its own layers (the same layers and
    weights: :func:`fitnets_tf.models.traced.as_graph`), which every format can be written
    from; any other model as given.

    A subclassed model trained by KD alone (it needs no graph to distil) is what a user has
    after ``Distiller(teacher, MyStudent())``: its ``call`` is Python, which no format keeps.
    """
    if not traced.is_subclassed(student):
        return student
    shape = traced.built_input_shape(student)
    if shape is None:
        raise ExportConfigError(
            f"The student {student.name!r} is a subclassed {type(student).__name__} that has "
            "not been called yet, so the images it takes are unknown: call it once on a batch "
            "of them (student(images[:1])), then export it."
        )
    try:
        return traced.as_graph(student, shape, "student")
    except ConfigError as e:
        raise ExportConfigError(f"{e} The export is written from that graph too.") from e


def check_student(student) -> None:
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
    classes = outputs[0].shape[-1]
    if classes is not None and classes < 2:
        # Every format would be written, verified against the same softmax, and serve 1.0.
        raise ExportConfigError(
            f"The student {student.name!r} gives {classes} output, but the export serves the "
            "softmax over its class logits, and a softmax over one logit is 1 whatever the image. "
            "Give a binary classifier a head of 2 logits, keras.layers.Dense(2) with no "
            "activation; a trained Dense(1)'s logit z gives the same probabilities as the 2 "
            "logits (0, z)."
        )
    last = final_softmax(student)  # any softmax function, not only keras.activations.softmax
    if last is not None:
        raise ExportConfigError(
            f"The student must output logits; its last layer {last.name!r} applies a softmax, and "
            "the export adds its own."
        )


def resolve_preprocessor(preprocessor, run_preprocessor, workdir) -> keras.Layer:
    if isinstance(preprocessor, str) and preprocessor == "auto":
        if run_preprocessor is None:
            where = (
                f"{RunLayout(workdir).preprocessor} does not exist"
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
        return load_keras(pathlib.Path(preprocessor), "preprocessor")
    if isinstance(preprocessor, keras.Layer):
        return preprocessor
    raise ExportConfigError(
        "include_preprocessing needs `preprocessor`: a Keras layer, a .keras path or 'auto'. "
        f"Received: preprocessor={preprocessor!r}"
    )
