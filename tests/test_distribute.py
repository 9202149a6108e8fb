import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def check() -> dict:
    """distribute_check.py's results (its own process: 2 logical CPU devices)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "distribute_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_mirrored_on_two_logical_cpus_matches_one_device(check):
    one, mirrored = check["one"], check["mirrored"]
    for phase in ("hints", "kd"):
        # Logged losses agree: neither halved (keras.losses' trap) nor doubled.
        np.testing.assert_allclose(mirrored[phase], one[phase], rtol=2e-3)
    # Gradients are scaled right: the same SGD updates give the same weights.
    np.testing.assert_allclose(mirrored["weights"], one["weights"], rtol=2e-3)


def test_a_last_batch_smaller_than_the_replicas_is_left_out_not_a_crash(check):
    result = check["last_batch_of_one"]
    assert len(result["losses"]) == 4  # two epochs' training and validation losses
    assert np.isfinite(result["losses"]).all() and np.isfinite(result["weights"]).all()
