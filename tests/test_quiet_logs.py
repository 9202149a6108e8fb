"""The programs print their own lines, not TensorFlow's, tf2onnx's or LiteRT's start-up and
converter logs; a user's TF_CPP_MIN_LOG_LEVEL or ``-v`` brings those back."""

import os
import subprocess
import sys

import keras
import pytest

from fitnets_tf.layers import MaxoutConv2D
from fitnets_tf.preprocessing import Preprocessor
from fitnets_tf.run import io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A piece of each line the programs printed before (stdout or stderr).
NOISE = (
    "absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard",  # importing TF
    "Saved artifact at", "Statistics for quantized inputs", "fully_quantize",  # LiteRT converter
    "tf_tfl_flatbuffer_helpers", "reader.cc", "XNNPACK delegate",
    "is deprecated", "Using tensorflow=", "Optimizing ONNX model",  # tf2onnx
)  # fmt: skip


def _export(*args, **env) -> subprocess.CompletedProcess:
    """``python -m fitnets_tf.export ARGS`` as a user runs it: no TF_CPP_MIN_LOG_LEVEL set."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "fitnets_tf.export", *args, "--nolatency"], cwd=ROOT,
        env={**environment, "PYTHONPATH": ROOT, **env}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run's files as export reads them: flags.txt, student, fitted preprocessing."""
    run = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = MaxoutConv2D(4, 3, pieces=2, strides=2)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    io.save_model(keras.Model(inputs, keras.layers.Dense(3)(x), name="student"),
                  run / "student.keras")  # fmt: skip
    io.save_model(keras.Model(inputs, Preprocessor(mode="scale")(inputs)),
                  run / "preprocessor.keras")  # fmt: skip
    (run / "flags.txt").write_text("--dataset=synthetic\n--validation_size=16\n")
    return run


@pytest.mark.slow  # two quantized exports; test_quantize runs them in the default suite
@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_a_quantized_export_prints_its_table_and_nothing_else(run_dir, fmt):
    done = _export(f"--workdir={run_dir}", f"--format={fmt}", "--quantize=int8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("format  path")
    printed = done.stdout + done.stderr
    assert [noise for noise in NOISE if noise in printed] == []
    assert done.stderr == ""


@pytest.mark.parametrize("asked", [{"TF_CPP_MIN_LOG_LEVEL": "0"}, {"-v": "0"}])
def test_the_users_log_level_brings_tensorflows_lines_back(tmp_path, asked):
    env = {k: v for k, v in asked.items() if not k.startswith("-")}
    args = [f"{k}={v}" for k, v in asked.items() if k.startswith("-")]
    done = _export(f"--workdir={tmp_path / 'none'}", *args, **env)
    assert done.returncode == 1 and "fitnets_tf.export: error:" in done.stderr
    assert any(noise in done.stderr for noise in NOISE[:3])
