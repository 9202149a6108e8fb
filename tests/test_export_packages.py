"""Without the `export` extra, ONNX jobs are refused before any work, naming the extra.

`pip install fitnets_tf` does not install tf2onnx, onnx or onnxruntime. A package is made
missing here by naming a module that does not exist in what the job needs.
"""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_model

from fitnets_tf import config as config_lib
from fitnets_tf import errors, experiment, export, latency
from fitnets_tf.export import packages, quantize

ABSENT = "fitnets_tf_absent_module"


@pytest.fixture
def without_onnx(monkeypatch):
    for job, needs in packages.NEEDS.items():
        monkeypatch.setitem(packages.NEEDS, job, (*needs, ABSENT))


def test_installed_packages_are_not_missing():
    assert packages.missing("saved_model") == [] and packages.missing("litert") == []


def test_format_all_writes_nothing_without_onnx(tmp_path, without_onnx):
    # It wrote the SavedModel and the .keras file, then failed at ONNX.
    with pytest.raises(errors.RuntimeUnavailableError,
                       match=rf"onnx export needs {ABSENT}.*pip install 'fitnets_tf\[export\]'"):
        export.export_student(tiny_model("s", 2, 0), tmp_path / "out", "all")
    assert not (tmp_path / "out").exists()


def test_quantized_onnx_is_refused_by_its_check(without_onnx):
    with pytest.raises(errors.RuntimeUnavailableError, match="--format=litert"):
        quantize.check("int8", "onnx")
    quantize.check("int8", "litert")


def test_serving_runtime_is_refused_before_the_run_starts(tmp_path, without_onnx):
    # The default experiment times ONNX Runtime: it trained for 18 minutes, then failed.
    config = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", modes=("kd",),
        serving_runtimes=("litert", "onnxruntime"),
    )  # fmt: skip
    with pytest.raises(errors.RuntimeUnavailableError, match="--serving_runtimes=litert"):
        experiment.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    latency.check_serving_runtimes(("litert",))


def test_serving_runtimes_are_not_checked_when_nothing_is_timed(tmp_path, without_onnx,
                                                                monkeypatch):  # fmt: skip
    class GotPastTheCheck(Exception):
        pass

    def claim(*_, **__):
        raise GotPastTheCheck

    monkeypatch.setattr(experiment.ownership, "claim", claim)  # the next step: stop there
    config = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", modes=("kd",),
        serving_runtimes=("litert", "onnxruntime"), measure_latency=False,
    )  # fmt: skip
    with pytest.raises(GotPastTheCheck):
        experiment.run(config, tmp_path / "run")


def test_train_cli_refuses_before_making_the_workdir(tmp_path):
    code = (f"from fitnets_tf.export import packages; packages.NEEDS['onnxruntime'] += ({ABSENT!r},)"
            "\nfrom fitnets_tf.cli.train import entry_point; entry_point()")  # fmt: skip
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", code, "--dataset=synthetic", "--serving_runtimes=onnxruntime",
         f"--workdir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "pip install 'fitnets_tf[export]'" in proc.stderr
    assert not (tmp_path / "run").exists()
