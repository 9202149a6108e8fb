"""Students of a user's own making that the export must refuse before any conversion, naming
the fix: what a deployer exporting from Python (``export_student(model, ...)``) hands it."""

from __future__ import annotations

import os

import keras
import pytest
import tensorflow as tf

from fitnets_tf import export
from fitnets_tf.models import at_input_shape

SHAPE = (8, 8, 1)


def _student(inputs, outputs: int) -> keras.Model:
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(outputs, name="logits")(x), name="student")


@pytest.mark.parametrize("fmt", ["saved_model", "litert"])
def test_a_student_with_one_logit_is_refused(tmp_path, fmt):
    # A Keras binary classifier's head, Dense(1): the softmax over one logit is 1 whatever the
    # image, and every format was written, verified against itself and served 1.0.
    student = _student(keras.Input(SHAPE), 1)
    output = tmp_path / ("s" if fmt == "saved_model" else "s.tflite")
    with pytest.raises(export.ExportConfigError, match=r"1 output.*Dense\(2\)"):
        export.export_student(student, output, fmt)
    assert os.listdir(tmp_path) == []


def test_a_student_taking_images_of_any_size_is_refused_naming_the_fix(tmp_path):
    # keras.Input((None, None, C)): the export failed in its verification with a bare
    # "TypeError: 'NoneType' object cannot be interpreted as an integer".
    student = _student(keras.Input((None, None, 1)), 3)
    with pytest.raises(export.ExportConfigError, match=r"\(None, None, 1\).*at_input_shape"):
        export.export_student(student, tmp_path / "s", "saved_model")
    assert os.listdir(tmp_path) == []
    fixed = at_input_shape(student, SHAPE)  # the fix the message names
    path = export.export_student(fixed, tmp_path / "s", "saved_model")
    assert os.listdir(tmp_path) == ["s"] and (path / "saved_model.pb").is_file()


def test_a_preprocessor_taking_any_size_serves_at_the_students(tmp_path):
    # A preprocessor declared with keras.Input((None, None, C)) gave the serving model its open
    # size, which failed as above although the student's size is known.
    raw = keras.Input((None, None, 1))
    preprocessor = keras.Model(raw, keras.layers.Rescaling(1 / 255)(raw))
    student = _student(keras.Input(SHAPE), 3)
    serving = export.build_serving_model(student, preprocessor)
    assert tuple(serving.inputs[0].shape) == (None, *SHAPE)
    path = export.export_student(student, tmp_path / "s", "saved_model",
                                 include_preprocessing=True, preprocessor=preprocessor)
    assert (path / "saved_model.pb").is_file()


class _LogGamma(keras.layers.Layer):
    """A user's layer computing with a TensorFlow op that tf2onnx has no ONNX conversion for."""

    def call(self, x):
        return tf.math.lgamma(tf.abs(x) + 1.0)


def test_an_op_onnx_lacks_is_named_before_any_runtime_loads_the_model(tmp_path):
    # tf2onnx logs "Unsupported ops" and writes the model anyway; the refusal came from ONNX
    # Runtime's loader ("No Op registered for Lgamma with domain_version of 15").
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    inputs = keras.Input(SHAPE)
    x = _LogGamma()(keras.layers.Conv2D(4, 3)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    student = keras.Model(inputs, keras.layers.Dense(3)(x), name="student")
    with pytest.raises(export.ExportConfigError, match=r"no ONNX conversion.*Lgamma.*saved_model"):
        export.export_student(student, tmp_path / "s.onnx", "onnx")
    assert os.listdir(tmp_path) == []
