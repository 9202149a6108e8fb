"""The project is installed (setup.sh), not merely importable from the checkout."""

import os
import shutil
import subprocess
import sys

import pytest


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, TF_CPP_MIN_LOG_LEVEL="2")


def test_import_works_from_another_folder(tmp_path):
    script = tmp_path / "mine.py"
    script.write_text("import fitnets_tf\nfrom fitnets_tf import Distiller\nprint(fitnets_tf.__version__)\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0.1.0"


# One script in the default suite (each run imports TensorFlow): the other two with the slow checks.
@pytest.mark.parametrize("script", [
    "fitnets-train",
    pytest.param("fitnets-tune", marks=pytest.mark.slow),
    pytest.param("fitnets-export", marks=pytest.mark.slow),
])  # fmt: skip
def test_console_scripts_are_installed(script, tmp_path):
    path = shutil.which(script, path=os.path.dirname(sys.executable))
    assert path, f"{script} is not installed beside {sys.executable}: run ./setup.sh"
    proc = subprocess.run([path, "--help"], cwd=tmp_path, env=_clean_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--workdir" in proc.stdout + proc.stderr or "--output" in proc.stdout + proc.stderr
