"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train like one process."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).parent / "multiworker_check.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_workers_match_one_process():
    ports = f"{_free_port()},{_free_port()}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    workers = [
        subprocess.Popen([sys.executable, str(SCRIPT), str(i), ports], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        for i in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=240) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
    single = subprocess.run([sys.executable, str(SCRIPT), "-1", ports], env=env, text=True,
                            capture_output=True, timeout=240)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    one = _last_json(single.stdout)
    for out, _ in outputs:
        result = _last_json(out)
        for phase in ("hints", "kd"):
            np.testing.assert_allclose(result[phase], one[phase], rtol=2e-3)
        np.testing.assert_allclose(result["weights"], one["weights"], rtol=2e-3)
