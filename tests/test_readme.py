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
    # here in a process of its own, on an (untrained) student exported where it looks.
    pytest.importorskip("ai_edge_litert")
    from fitnets_tf import export, models

    readme = (ROOT / "README.md").read_text()
    snippets = [re.search(rf"{head}\n\n```python\n(.*?)```", readme, re.S).group(1)
                for head in (r"Serving the SavedModel \(.*?\):",
                             "Serving the LiteRT file, checking the shape as the SavedModel does:")]  # fmt: skip
    student = models.build("thin_cnn", input_shape=(28, 28, 1), num_classes=10)
    where = tmp_path / "runs" / "fashion_mnist" / "export"
    export.export_student(student, where / "student_raw_saved_model", "saved_model")
    export.export_student(student, where / "student_raw.tflite", "litert")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    for snippet in snippets:
        proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        printed = [float(x) for x in re.findall(r"\d\.\d+(?:e-\d+)?", proc.stdout)]
        assert len(printed) == 10 and abs(sum(printed) - 1) < 1e-3, proc.stdout  # probabilities
