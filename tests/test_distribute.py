import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(__file__)


def test_mirrored_on_two_logical_cpus_matches_one_device():
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "distribute_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    one, mirrored = result["one"], result["mirrored"]
    for phase in ("hints", "kd"):
        # Logged losses agree: neither halved (keras.losses' trap) nor doubled.
        np.testing.assert_allclose(mirrored[phase], one[phase], rtol=2e-3)
    # Gradients are scaled right: the same SGD updates give the same weights.
    np.testing.assert_allclose(mirrored["weights"], one["weights"], rtol=2e-3)
