"""Export the trained student, and only the student, for serving.

Serving convention, the same in every format:

* one input named ``"images"``: a float32 batch ``(N, H, W, C)``, N free. By default it is the
  *normalised* tensor the student was trained on (the output of the run's preprocessing).
  With ``include_preprocessing=True`` the run's fitted preprocessing (``preprocessor.keras``,
  GCN/ZCA included when the run used them) is baked into the graph and ``"images"`` is raw
  pixels in [0, 255], still float32. The SavedModel's signature refuses a batch of any other
  shape (``tf.ensure_shape``: ``InvalidArgumentError``, see ``writers.write_saved_model``);
  ONNX Runtime refuses one too, Keras one of another channel count. LiteRT cannot: its
  converter drops the check and its signature runner resizes the input to whatever it is
  given, so a LiteRT client calls ``resize_tensor_input(index, shape, strict=True)``, which
  may change only the batch size.
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
                                                  frozen graph (see ``writers.write_onnx``)
litert         ``student.tflite``                 LiteRT (``ai_edge_litert``) or ``tf.lite``
=============  =================================  ============================================

SavedModel, ONNX and LiteRT artifacts are self-contained: running them needs no fitnets_tf.
A student trained in mixed precision is exported computing in float32 (models nested in it too).

Exports with the preprocessing baked in get ``_raw`` after ``student`` (``student_raw.onnx``,
``student_raw_saved_model/``): they take raw pixels.

Class names travel inside the artifact (``probabilities[:, k]`` is class ``names[k]``): by
default the run's ``summary.json`` ``class_names`` (for a folder dataset, its sorted
sub-folder names), as one JSON list of strings, read back without fitnets_tf::

    json.load(open(f"{path}/assets.extra/class_names.json"))                   # SavedModel
    json.loads(onnxruntime.InferenceSession(path).get_modelmeta()
               .custom_metadata_map["class_names"])                            # ONNX
    from ai_edge_litert.tools import flatbuffer_utils  # or from tensorflow.lite.tools
    model = flatbuffer_utils.read_model(path)
    json.loads(next(bytes(model.buffers[m.buffer].data)
                    for m in model.metadata if m.name == b"class_names"))      # LiteRT

A ``.keras`` file, the training artifact, carries none (Keras keeps no user metadata; see
:mod:`~fitnets_tf.export.labels`, which also says why each place was chosen).

Every export is written into a hidden staging directory beside the final path, verified by
reloading it and comparing its outputs and class names, and only then renamed into place, so a
crash never leaves a half-written model (or a names file) at the final path and an existing
artifact is never removed before its replacement is complete; a full disk is reported as
:class:`DiskFullError`. The run's ``student.keras`` and ``preprocessor.keras`` are checked
against the sha256 the run wrote beside them before they are loaded: a damaged file is refused
by name.

Usage::

    python -m fitnets_tf.export --workdir=RUN_DIR --format=onnx [--output=PATH]
        [--include_preprocessing] [--overwrite] [--class_names=auto|none|NAME,NAME,...]

The modules: :mod:`~fitnets_tf.export.serving` (the serving model),
:mod:`~fitnets_tf.export.writers` (one writer per format), :mod:`~fitnets_tf.export.verify`
(reload and compare), :mod:`~fitnets_tf.export.labels` (class names in each format),
:mod:`~fitnets_tf.export.publish` (staged, then renamed into place),
:mod:`~fitnets_tf.export.artifacts` (what an earlier artifact of each format is, by its
content: all ``overwrite`` replaces), :mod:`~fitnets_tf.export.inputs` (a client's image files
read as training read the run's: :func:`read_images`). The command line is
:mod:`fitnets_tf.cli.export`.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Sequence

import keras

# Imported for their side effect: registering the custom layers that .keras files refer to.
from fitnets_tf import layers as _layers  # noqa: F401
from fitnets_tf import preprocessing as _preprocessing  # noqa: F401
from fitnets_tf.errors import (
    DiskFullError,
    ExportConfigError,
    ExportError,
    ExportVerificationError,
    MissingStudentError,
    OutputBusyError,
    OutputExistsError,
    OutputNotWritableError,
    RuntimeUnavailableError,
)
from fitnets_tf.export import labels, packages
from fitnets_tf.export.destination import output_lock, refuse_unwritable
from fitnets_tf.export.inputs import read_images
from fitnets_tf.export.publish import clear_killed, publish, refuse_existing, refuse_run_files
from fitnets_tf.export.serving import (
    INPUT_NAME,
    OUTPUT_NAME,
    RAW_SUFFIX,
    build_serving_model,
    load_run,
    resolve_preprocessor,
)
from fitnets_tf.export.writers import (
    DEFAULT_NAMES,
    FORMATS,
    SUFFIXES,
    WRITERS,
    check_format,
    check_suffix,
)
from fitnets_tf.run.layout import RunLayout

# The files of a run directory the export reads (see fitnets_tf.run.layout).
STUDENT_FILE = RunLayout(".").student.name
PREPROCESSOR_FILE = RunLayout(".").preprocessor.name

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PREPROCESSOR_FILE",
    "RAW_SUFFIX",
    "STUDENT_FILE",
    "WRITERS",
    "DiskFullError",
    "ExportConfigError",
    "ExportError",
    "ExportVerificationError",
    "MissingStudentError",
    "OutputBusyError",
    "OutputExistsError",
    "OutputNotWritableError",
    "RuntimeUnavailableError",
    "build_serving_model",
    "default_output",
    "export_student",
    "labels",
    "load_run",
    "read_images",
]


def default_output(
    workdir: str | os.PathLike, format: str, include_preprocessing: bool = False
) -> pathlib.Path:
    """Where ``format`` goes for the run in ``workdir`` by default (see the module docstring)."""
    check_format(format)
    name = DEFAULT_NAMES[format].format(raw=RAW_SUFFIX if include_preprocessing else "")
    return RunLayout(workdir).export / name


def export_student(
    source: keras.Model | str | os.PathLike,
    output: str | os.PathLike | None = None,
    format: str = "saved_model",
    *,
    preprocessor: keras.Layer | str | os.PathLike | None = "auto",
    include_preprocessing: bool = False,
    overwrite: bool = False,
    class_names: Sequence[str] | str | None = "auto",
) -> pathlib.Path | dict[str, pathlib.Path]:
    """Exports the student for serving, atomically, and verifies the artifact reloads.

    The artifact takes ``"images"`` and returns ``{"probabilities": softmax(logits)}`` in every
    format (see the module docstring for the runtimes).

    Args:
        source: the student (a ``keras.Model`` returning logits: Functional, Sequential, or
            subclassed and called once, exported as the graph of its layers), or a run
            directory holding ``student.keras``. Pass ``distiller.student``, never the
            Distiller.
        output: final path (a directory for ``saved_model``, a ``.keras`` / ``.onnx`` /
            ``.tflite`` file otherwise). Defaults to ``default_output(source, ...)`` when
            ``source`` is a run directory; required otherwise. With ``format="all"``: a
            directory, where each format gets its default name (default: the run's
            ``export/``).
        format: one of ``"saved_model"``, ``"keras"``, ``"onnx"``, ``"litert"``, or ``"all"``
            for each of them (as ``--format=all``).
        preprocessor: what ``include_preprocessing`` bakes in: a Keras layer or model taking
            raw pixels in [0, 255], a path to a ``.keras`` file holding one, or ``"auto"``
            (the run directory's ``preprocessor.keras``). Ignored without
            ``include_preprocessing``.
        include_preprocessing: bake the preprocessing into the graph, so that ``"images"`` is
            raw pixels in [0, 255] instead of the normalised tensor.
        overwrite: replace an earlier artifact of the format at ``output`` (a SavedModel
            directory, or a file), never a directory of other files. The old artifact stays in
            place until the new one has been written and verified.
        class_names: the class of each output index, in label order, written into the
            SavedModel, ONNX and LiteRT artifacts (see :mod:`~fitnets_tf.export.labels`; a
            ``.keras`` file gets none): ``"auto"`` for the run's ``summary.json``
            ``class_names`` (none when ``source`` is a model or the run has none), a list of
            K strings (K: the student's outputs), or None for none.

    Returns:
        The path of the exported artifact; with ``format="all"``, ``{format: path}``.

    Raises:
        MissingStudentError: the run directory or its ``student.keras`` does not exist.
        OutputExistsError: ``output`` is a non-empty earlier artifact and ``overwrite`` is
            False, or holds anything else that is not empty, or is a folder where the format
            writes a file or the reverse (even with ``overwrite``).
        ExportConfigError: bad format, suffix, student, or no preprocessor to bake in; an
            ``output`` that is the run directory, holds it, or is one of its files; class
            names that are not K strings, or given for ``format="keras"`` alone.
        OutputNotWritableError: a folder on the way to ``output`` cannot be written, or is a
            file (before any conversion).
        OutputBusyError: another process is exporting to ``output`` (before any conversion).
        RuntimeUnavailableError: the format's converter is not installed.
        ExportVerificationError: the artifact did not reload or does not match the student.
        ExportError: a file of the run is damaged (it differs from its sha256) or unloadable,
            or its ``summary.json`` cannot be read for ``class_names="auto"``.
        DiskFullError: no room for the artifact (or, on a disk already full, for the export's
            lock file); nothing was written at ``output``.

    Missing folders on the way to ``output`` are made, and removed again if the export fails.
    """
    if format != "all":
        check_format(format)
    for fmt in FORMATS if format == "all" else (format,):  # before the run is even loaded
        packages.require(fmt, f"The {fmt} export",
                         "export the other formats one by one" if format == "all" else "")
    student, run_preprocessor, workdir = _student_of(source)
    outputs = _outputs(workdir, output, format, include_preprocessing)
    for fmt, path in outputs.items():  # every check before the first artifact is written
        check_suffix(path, fmt)
        refuse_run_files(path, workdir)
        refuse_existing(path, overwrite, fmt)
        refuse_unwritable(path)
    baked = None
    if include_preprocessing:
        baked = resolve_preprocessor(preprocessor, run_preprocessor, workdir)
    serving = build_serving_model(student, baked)
    num_classes = serving.outputs[0].shape[-1]
    names = labels.resolve(class_names, workdir, num_classes, tuple(outputs))
    with contextlib.ExitStack() as held:
        # Every check passed and nothing is made yet: now one export per path, to the rename.
        for fmt, path in outputs.items():
            held.enter_context(output_lock(path))
            clear_killed(path)  # a killed export's old artifact back, to be checked below
            refuse_existing(path, overwrite, fmt)  # again: the lock's last holder may have written
        written = []
        for fmt, path in outputs.items():
            try:
                publish(serving, path, fmt, overwrite, raw=baked is not None, class_names=names)
            except ExportError as err:
                if not written:
                    raise
                # Each artifact is published on its own: those before stay, and the next
                # format="all" to these paths refuses them as existing without --overwrite.
                raise type(err)(
                    f"{err} Written before it, and kept: {', '.join(map(str, written))} (to "
                    "write every format again, pass --overwrite, overwrite=True)."
                ) from err
            written.append(path)
    return outputs if format == "all" else outputs[format]


def _student_of(source):
    """``(student, the run's preprocessor or None, the run directory or None)``."""
    if isinstance(source, keras.Model):
        return source, None, None
    if isinstance(source, (str, os.PathLike)):
        workdir = pathlib.Path(source).expanduser()
        return (*load_run(workdir), workdir)
    raise ExportConfigError(
        "`source` must be the student (a keras.Model) or a run directory. "
        f"Received: source={type(source).__name__}"
    )


def _outputs(workdir, output, format: str, include_preprocessing: bool) -> dict:
    """The final path of each format to write."""
    if output is None and workdir is None:
        raise ExportConfigError(
            "`output` is required when `source` is a model rather than a run directory."
        )
    if format != "all":
        path = output or default_output(workdir, format, include_preprocessing)
        return {format: pathlib.Path(path).expanduser()}
    raw = RAW_SUFFIX if include_preprocessing else ""
    directory = RunLayout(workdir).export if output is None else pathlib.Path(output).expanduser()
    if directory.suffix in SUFFIXES.values() or directory.is_file():
        raise ExportConfigError(
            f"With format='all', `output` is the directory every format is written to, not one "
            f"file. Received: output={output}"
        )
    return {fmt: directory / DEFAULT_NAMES[fmt].format(raw=raw) for fmt in FORMATS}
