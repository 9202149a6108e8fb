"""The README's quick example runs as shown."""

import os
import pathlib
import re
import subprocess
import sys

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
