"""Class names inside the artifact: which class each column of ``"probabilities"`` is.

The names are one JSON list of strings in label order (``probabilities[:, k]`` is class
``names[k]``), kept where each format keeps what is not the graph:

===========  ===========================================================================
format       where
===========  ===========================================================================
saved_model  the file ``assets.extra/class_names.json`` in the SavedModel directory
onnx         the model's ``metadata_props``, key ``"class_names"``
litert       the flatbuffer's ``metadata`` entry ``"class_names"``: a buffer of UTF-8 JSON
keras        none (see below)
===========  ===========================================================================

Each runtime reads them back without fitnets_tf::

    json.load(open(f"{path}/assets.extra/class_names.json"))                   # SavedModel
    json.loads(onnxruntime.InferenceSession(path).get_modelmeta()
               .custom_metadata_map["class_names"])                            # ONNX Runtime
    from ai_edge_litert.tools import flatbuffer_utils  # or from tensorflow.lite.tools
    model = flatbuffer_utils.read_model(path)
    json.loads(next(bytes(model.buffers[m.buffer].data)
                    for m in model.metadata if m.name == b"class_names"))      # LiteRT

(LiteRT's Python interpreter has no metadata getter; in C++, ``FlatBufferModel::
ReadAllMetadata()["class_names"]``.) :func:`read` does the same for each format.

A ``.keras`` file gets none. It is the training artifact (for clients that want logits or
fine-tune), and Keras 3 gives it no place for user metadata: ``load_model`` returns the model
and nothing else, an extra member of the zip is dropped by the next ``model.save``, and a layer
holding the names in its config would change the model's graph. Its names stay in the run's
``summary.json``.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

from fitnets_tf.errors import ExportConfigError, ExportError
from fitnets_tf.export.serving import run_of

KEY = "class_names"
AUTO = "auto"
# A file beside saved_model.pb rather than a tracked asset or a string variable in the graph:
# "assets.extra" is the SavedModel's own place for files the graph does not load (TF Serving
# reads its warm-up requests there), the version directory TF Serving is given carries it, and
# a client or a deployment script reads it without TensorFlow or loading the graph. Adding it
# is a file write into the staged directory, so Keras' SavedModel export is untouched.
SAVED_MODEL_FILE = pathlib.Path("assets.extra", f"{KEY}.json")


def resolve(
    class_names, workdir: pathlib.Path | None, num_classes: int, formats: Sequence[str]
) -> list[str] | None:
    """The names to write: ``class_names`` checked against the student's ``num_classes``.

    ``"auto"`` takes the run's ``summary.json`` ``class_names`` (none without a run directory
    or when the run has none); ``None`` writes none; otherwise a sequence of ``num_classes``
    strings. Called before anything is written.

    Raises:
        ExportConfigError: names of the wrong count or type, or given for formats that have no
            place for them (``keras`` alone).
        ExportError: the run's ``summary.json`` cannot be read.
    """
    if class_names is None:
        return None
    if isinstance(class_names, str) and class_names == AUTO:
        if workdir is None:
            return None
        summary = _summary_of(workdir)
        names = _recorded_names(summary)
        fix = (f"Correct {summary}, or pass class_names (--class_names=NAME,NAME,...) or None "
               "(--class_names=none)")  # fmt: skip
        return None if names is None else checked(names, num_classes, f"{summary}'s {KEY}", fix)
    names = checked(class_names, num_classes, "`class_names`", "Pass them in label order")
    if not any(fmt in WRITERS for fmt in formats):
        raise ExportConfigError(
            f"The {', '.join(formats)} format has no place for class names (see "
            "fitnets_tf.export.labels): export a saved_model, onnx or litert artifact to carry "
            "them, or pass class_names=None (--class_names=none)."
        )
    return names


def checked(names, num_classes: int, what: str, fix: str) -> list[str]:
    """``names`` as a list, if it holds ``num_classes`` strings; else an ExportConfigError."""
    # A string is a sequence too: "cat,dog" would become five one-letter class names.
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ExportConfigError(
            f"{what} must be 'auto', None or a list of {num_classes} strings (the class of each "
            f"output index). {fix}. Received: {KEY}={names!r}"
        )
    wrong = [f"{i} ({type(name).__name__})" for i, name in enumerate(names)
             if not isinstance(name, str)]  # fmt: skip
    if wrong:
        raise ExportConfigError(
            f"{what} must be strings; entries {', '.join(wrong)} are not. {fix}, each a str. "
            f"Received: {KEY}={list(names)!r}"
        )
    if len(names) != num_classes:
        raise ExportConfigError(
            f"{what} has {len(names)} names but the student has {num_classes} outputs "
            f"(probabilities[:, k] is class k): give exactly {num_classes}. {fix}. "
            f"Received: {KEY}={list(names)!r}"
        )
    return list(names)


def carried(names: list[str] | None, format: str) -> list[str] | None:
    """What an artifact of ``format`` holds when ``names`` are exported: they, or none."""
    return names if format in WRITERS else None


def _summary_of(workdir: pathlib.Path) -> pathlib.Path:
    # A mode's directory (RUN/kd) holds a student but not the summary: the run holding it does.
    return run_of(pathlib.Path(workdir)).summary


def _recorded_names(summary: pathlib.Path):
    """The ``class_names`` of a run's summary; None without one (a run written by hand)."""
    if not summary.is_file():
        return None
    try:
        record = json.loads(summary.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise ExportError(
            f"Cannot read the class names in {summary} ({err}). Restore it, or pass class_names "
            "(--class_names=NAME,NAME,...) or None (--class_names=none), which do not read it."
        ) from err
    return record.get(KEY)


def _encoded(names: list[str]) -> str:
    # JSON, not one name per line or commas: any string round-trips, in every format alike.
    return json.dumps(names, ensure_ascii=False)


def write_saved_model(path: pathlib.Path, names: list[str]) -> None:
    (path / SAVED_MODEL_FILE).parent.mkdir(exist_ok=True)
    (path / SAVED_MODEL_FILE).write_text(_encoded(names), encoding="utf-8")


def read_saved_model(path: pathlib.Path) -> list[str] | None:
    file = path / SAVED_MODEL_FILE
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def write_onnx(path: pathlib.Path, names: list[str]) -> None:
    import onnx

    # The graph is as written; external tensors (a model over 2 GB) stay where they are.
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props if p.key != KEY}
    onnx.helper.set_model_props(model, {**props, KEY: _encoded(names)})
    onnx.save(model, str(path))


def read_onnx(path: pathlib.Path) -> list[str] | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    value = next((p.value for p in model.metadata_props if p.key == KEY), None)
    return None if value is None else json.loads(value)


def write_litert(path: pathlib.Path, names: list[str]) -> None:
    # The flatbuffer schema's `metadata` list (name -> buffer) is the model's place for data the
    # runtime does not execute; interpreters ignore names they do not know. TensorFlow's own
    # converter adds its CONVERSION_METADATA entry exactly so (flatbuffer_utils' object API, in
    # tensorflow/lite/python/lite.py); tflite-support's TFLITE_METADATA would be another package.
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    model.metadata = [m for m in model.metadata or [] if m.name != KEY.encode()]
    # Fields set one by one: TensorFlow 2.20's generated classes take no constructor arguments.
    buffer, entry = schema.BufferT(), schema.MetadataT()
    buffer.data = _encoded(names).encode()
    model.buffers = [*(model.buffers or []), buffer]
    entry.name, entry.buffer = KEY, len(model.buffers) - 1
    model.metadata.append(entry)
    flatbuffer_utils.write_model(model, str(path))


def read_litert(path: pathlib.Path) -> list[str] | None:
    """The names of a ``.tflite`` file. With the LiteRT runtime alone, the same code reads them
    with ``from ai_edge_litert.tools import flatbuffer_utils``."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    found = [bytes(model.buffers[m.buffer].data) for m in model.metadata or []
             if m.name == KEY.encode()]  # fmt: skip
    return json.loads(found[0].decode("utf-8")) if found else None


WRITERS = {"saved_model": write_saved_model, "onnx": write_onnx, "litert": write_litert}
READERS = {"saved_model": read_saved_model, "onnx": read_onnx, "litert": read_litert}


def write(path: str | os.PathLike, format: str, names: list[str] | None) -> None:
    """Adds ``names`` to the artifact of ``format`` at ``path`` (nothing for None or keras)."""
    if carried(names, format) is not None:
        WRITERS[format](pathlib.Path(path), names)


def read(path: str | os.PathLike, format: str) -> list[str] | None:
    """The names an artifact holds, or None (none written, or a format without a place)."""
    reader = READERS.get(format)
    return None if reader is None else reader(pathlib.Path(path))
