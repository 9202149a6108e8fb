"""What an artifact of each export format is, told by its content: all ``--overwrite`` replaces.

``--output=notes.onnx --overwrite`` once replaced any file of that name, a user's own
included, as long as it was a file. Each format is now recognised by what its writer puts in
it, read cheaply (a few bytes, a zip's directory, a protobuf's top-level tags), and no
converter is imported:

* SavedModel: a directory holding ``saved_model.pb``;
* ``.keras``: a zip archive holding ``config.json`` and ``metadata.json``, which
  ``keras.saving`` writes in every one;
* LiteRT (``.tflite``): a flatbuffer whose file identifier, bytes 4 to 8, is ``TFL3``
  (LiteRT's schema; quantized files too);
* ONNX: a protobuf ``ModelProto`` (``onnx.proto``), as tf2onnx and onnxruntime's quantizer
  write it: fields in number order, so it starts with ``ir_version`` (tag ``0x08``), holds a
  ``graph``, and its top-level fields, read as tags and lengths, end exactly at the end of the
  file. Not ``onnx.load``: it parses the whole model into memory (seconds for a large one) and
  is missing without the export extras, while a file that is not an ONNX model fails the walk
  at its first bytes (a text file cannot start with ``0x08``).
"""

from __future__ import annotations

import os
import pathlib
import zipfile

SAVED_MODEL_FILE = "saved_model.pb"
# tf.saved_model.contains_saved_model also accepts saved_model.pbtxt, which no export here writes.
KERAS_MEMBERS = ("config.json", "metadata.json")
LITERT_IDENTIFIER = b"TFL3"
# ModelProto's fields (onnx.proto) by number, and their wire types: 0 varint, 2 length-delimited.
# A number not listed (a later ONNX's field) is read as any protobuf parser reads it: skipped.
ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_IR_VERSION, _GRAPH = 1, 7
_FIXED_SIZES = {1: 8, 5: 4}  # the wire types of fixed64 and fixed32 fields, and their bytes

# What each format's artifact is, for a refusal: "x is a file, but not <this>".
DESCRIPTIONS = {
    "saved_model": f"a SavedModel (a directory holding {SAVED_MODEL_FILE})",
    "keras": "a Keras model (a zip archive holding config.json and metadata.json)",
    "onnx": "an ONNX model (a protobuf ModelProto)",
    "litert": "a LiteRT model (a flatbuffer identified as TFL3)",
}


def is_artifact(path: str | os.PathLike, format: str) -> bool:
    """Whether ``path`` is an artifact of ``format`` (one of ``writers.FORMATS``), by content."""
    path = pathlib.Path(path)
    if format == "saved_model":
        return path.is_dir() and (path / SAVED_MODEL_FILE).is_file()
    if not path.is_file():
        return False
    try:
        return {"keras": _is_keras, "onnx": _is_onnx, "litert": _is_litert}[format](path)
    except OSError:  # unreadable: not known to be ours, so not replaced
        return False


def _is_keras(path: pathlib.Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        return False
    return set(KERAS_MEMBERS) <= names


def _is_litert(path: pathlib.Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8)[4:] == LITERT_IDENTIFIER


def _is_onnx(path: pathlib.Path) -> bool:
    size = path.stat().st_size
    seen = []
    with open(path, "rb") as f:
        while f.tell() < size:
            key = _varint(f)
            number, wire = (0, 0) if key is None else (key >> 3, key & 7)
            if number == 0 or ONNX_FIELDS.get(number, wire) != wire:
                return False
            if not seen and number != _IR_VERSION:
                return False
            if wire == 0:
                skip = 0 if _varint(f) is not None else None
            elif wire == 2:
                skip = _varint(f)
            else:
                skip = _FIXED_SIZES.get(wire)  # 3 and 4 (groups) have no place in a ModelProto
            if skip is None:
                return False
            f.seek(skip, os.SEEK_CUR)
            seen.append(number)
        return f.tell() == size and _GRAPH in seen


def _varint(f) -> int | None:
    """A protobuf base-128 varint read from ``f``; None at the end of the file or past 10 bytes."""
    value = 0
    for shift in range(0, 70, 7):
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None
