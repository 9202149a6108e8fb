"""Students of a user's own making that the export must refuse before any conversion, naming
the fix: what a deployer exporting from Python (``export_student(model, ...)``) hands it."""

from __future__ import annotations

import os

import keras
import pytest

from fitnets_tf import export

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

