"""The README's quick example and serving snippets run as shown, and the runtime options it lists
are all of them."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent


def test_quick_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## Quick example.*?```python\n(.*?)```", readme, re.S).group(1)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "student.keras").is_file()
    assert "kd_lambda" in proc.stdout and "hint_loss" in proc.stdout


def test_the_options_that_may_change_between_calls_are_every_runtime_option():
    # The list named 8 of RuntimeConfig's 11 fields: --serving_runtimes and the mid-epoch
    # checkpoint options, which a resumed run also accepts changed, were missing.
    import dataclasses

    from fitnets_tf.config.sections import RuntimeConfig

    readme = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(
        r"The options of the config's `runtime` section \((.*?)\) may change", readme
    )
    assert listed, "README: the sentence listing the runtime options is gone"
    names = set(re.findall(r"`--(\w+)`", listed.group(1)))
    assert names == {f.name for f in dataclasses.fields(RuntimeConfig)}


def test_each_serving_snippet_runs_alone(tmp_path):
    # The LiteRT snippet used `images`, defined only in the SavedModel one above it. Each runs
    # here in a process of its own, on an (untrained) student exported where it looks, reading
    # image files with the run's data record as read_images does.
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnxruntime")
    import keras
    import numpy as np
    import tensorflow as tf

    from fitnets_tf import export, models
    from fitnets_tf.preprocessing import Preprocessor

    readme = (ROOT / "README.md").read_text()
    snippets = [re.search(rf"{head}\n\n```python\n(.*?)```", readme, re.S).group(1)
                for head in (r"Serving the SavedModel \(.*?\(above\):",
                             r"Serving the ONNX file \(.*?\):",
                             "Serving the LiteRT file, checking the shape as the SavedModel does:")]  # fmt: skip
    keras.utils.set_random_seed(0)
    student = models.build("thin_cnn", input_shape=(28, 28, 1), num_classes=10)
    run = tmp_path / "runs" / "fashion_mnist"
    where = run / "export"
    export.export_student(student, where / "student_raw_saved_model", "saved_model")
    export.export_student(student, where / "student_raw.tflite", "litert")
    export.export_student(student, where / "student.onnx", "onnx")
    (run / "data.json").write_text('{"dataset": "fashion_mnist", "input_shape": [28, 28, 1]}')
    (run / "flags.txt").write_text("--dataset=fashion_mnist\n")
    raw = keras.Input((28, 28, 1))
    keras.Model(raw, Preprocessor(mode="scale")(raw)).save(run / "preprocessor.keras")
    photo = np.random.default_rng(0).integers(0, 256, (40, 30, 3), np.uint8)
    (tmp_path / "shirt.jpg").write_bytes(tf.io.encode_jpeg(photo).numpy())
    (tmp_path / "boot.png").write_bytes(tf.io.encode_png(photo[:28, :28, :1]).numpy())
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    for snippet in snippets:
        proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        # An untrained student on raw pixels may saturate: numpy prints 1. and 0. then.
        printed = [float(x) for x in re.findall(r"\d\.\d*(?:e-\d+)?", proc.stdout)]
        images = len(printed) // 10  # the SavedModel's two files, one elsewhere
        assert images and len(printed) == 10 * images, proc.stdout
        assert abs(sum(printed) - images) < 1e-3 * images, proc.stdout  # probabilities


def test_the_python_quantization_snippet_runs(tmp_path):
    # The README showed --quantize for a run directory only; a notebook's own student had no
    # documented way in. The snippet runs as printed, given its `student` and `train_images`.
    pytest.importorskip("ai_edge_litert")
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"From Python, a student of your own \(no run directory\).*?```python\n"
                        r"(.*?)```", readme, re.S).group(1)  # fmt: skip
    given = (
        "import keras, numpy as np\n"
        "inputs = keras.Input((8, 8, 1))\n"
        "h = keras.layers.Conv2D(4, 3, activation='relu')(inputs)\n"
        "h = keras.layers.GlobalAveragePooling2D()(h)\n"
        "student = keras.Model(inputs, keras.layers.Dense(3)(h))\n"
        "train_images = np.random.default_rng(0).random((64, 8, 8, 1)).astype('float32')\n"
    )
    snippet = "\n".join(line.strip() for line in snippet.splitlines())
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", given + snippet], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "student_int8.tflite").read_bytes()[4:8] == b"TFL3"
