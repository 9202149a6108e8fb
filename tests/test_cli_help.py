"""The programs' --help cites only what an installed package's user has."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_export_help_cites_the_readme_not_a_file_of_the_repository():
    # --quantize's help sent a pip-installed user to bench/README.md, which the wheel lacks.
    done = subprocess.run(
        [sys.executable, "-m", "fitnets_tf.export", "--help"], cwd=ROOT, capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    help_text = " ".join(done.stdout.split())
    assert "bench/" not in help_text
    assert "(the figures: README, section 'Export and serving')" in help_text
    assert "\n## Export and serving\n" in (ROOT / "README.md").read_text()
