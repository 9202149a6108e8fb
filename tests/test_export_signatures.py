"""What a serving client sees of an export's inputs and outputs, by the runtime's own tools.

The SavedModel's ``serving_default`` signature and the ONNX graph take ``"images"`` and return
``"probabilities"``; the ONNX batch dimension is a named symbol, ``"batch"``, the same on the
input and the output (tf2onnx names each ``unk__`` and a counter that changes from one model
to the next, and a different one on each side). ``saved_model_cli``, the check the README
documents in place of TF Serving (which cannot be installed here), is run on an export too.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from fitnets_tf import export
from fitnets_tf.export import quantize

SAVED_MODEL_CLI = pathlib.Path(sys.executable).with_name("saved_model_cli")


def make_student() -> keras.Model:
    inputs = keras.Input((4, 4, 1), name="pixels")
    hidden = keras.layers.Dense(5, name="hidden")(keras.layers.Flatten(name="flat")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden), name="student")


def test_the_saved_model_signature_takes_images_and_returns_probabilities(tmp_path):
    output = export.export_student(make_student(), tmp_path / "sm", "saved_model")
    signature = tf.saved_model.load(str(output)).signatures["serving_default"]
    args, kwargs = signature.structured_input_signature
    assert args == ()  # called by name: a client sends {"images": ...}
    assert kwargs == {"images": tf.TensorSpec((None, 4, 4, 1), tf.float32, name="images")}
    assert signature.structured_outputs == {
        "probabilities": tf.TensorSpec((None, 3), tf.float32, name="probabilities")
    }


def _onnx_io(path: pathlib.Path) -> list[tuple[str, list]]:
    import onnx

    graph = onnx.load(str(path)).graph
    return [(value.name, [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim])
            for value in (*graph.input, *graph.output)]  # fmt: skip


def test_the_onnx_model_names_its_inputs_outputs_and_batch(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export.export_student(make_student(), tmp_path / "s.onnx", "onnx")
    # The batch was "unk__20" in, "unk__21" out: names a client cannot rely on.
    assert _onnx_io(path) == [("images", ["batch", 4, 4, 1]), ("probabilities", ["batch", 3])]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("images", ["batch", 4, 4, 1])]
    for batch in (1, 5):  # the batch stays free
        x = np.random.default_rng(batch).random((batch, 4, 4, 1), dtype="float32")
        (probabilities,) = session.run(["probabilities"], {"images": x})
        assert probabilities.shape == (batch, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_the_int8_onnx_model_keeps_the_names(tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is needed to write ONNX", exc_type=ImportError)
    pytest.importorskip("onnxruntime")
    serving = export.build_serving_model(make_student())
    images = np.random.default_rng(0).random((64, 4, 4, 1), dtype="float32")
    path = quantize.export_quantized(serving, tmp_path / "s.onnx", "int8", "onnx",
                                     calibration=images)  # fmt: skip
    assert _onnx_io(path) == [("images", ["batch", 4, 4, 1]), ("probabilities", ["batch", 3])]


@pytest.mark.slow  # two saved_model_cli processes, each loading TensorFlow: ~30 s
@pytest.mark.skipif(not SAVED_MODEL_CLI.is_file(), reason="saved_model_cli is not installed")
def test_saved_model_cli_shows_and_runs_the_signature(tmp_path):
    student = make_student()
    output = export.export_student(student, tmp_path / "sm", "saved_model")
    shown = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", output, "--tag_set", "serve",
                            "--signature_def", "serving_default"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert lines[lines.index("inputs['images'] tensor_info:") + 2] == "shape: (-1, 4, 4, 1)"
    assert lines[lines.index("outputs['probabilities'] tensor_info:") + 2] == "shape: (-1, 3)"
    assert "Method name is: tensorflow/serving/predict" in lines
    x = np.random.default_rng(0).random((2, 4, 4, 1), dtype="float32")
    np.save(tmp_path / "x.npy", x)
    ran = subprocess.run([SAVED_MODEL_CLI, "run", "--dir", output, "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs",
                          f"images={tmp_path / 'x.npy'}", "--outdir", tmp_path / "out"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    served = np.load(tmp_path / "out" / "probabilities.npy")
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(student(x)))
    np.testing.assert_allclose(served, expected, atol=1e-5)
