"""Runs a tiny search into a "full disk" (a trial's checkpoint, then the oracle's file), then
resumes it with room again.

The mechanism of tests/full_disk_check.py: RLIMIT_FSIZE caps the size of any file this process
writes (SIGXFSZ ignored, so writes fail with EFBIG as they would with ENOSPC). Prints one JSON
line for tests/test_tuner.py.
"""

import json
import os
import pathlib
import resource
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

from conftest import tiny_dataset, tiny_model  # noqa: E402

from fitnets_tf import search, stages  # noqa: E402
from fitnets_tf.run import io  # noqa: E402
from fitnets_tf.search.tuners import requeue_interrupted  # noqa: E402


def attempt(write) -> list | None:
    try:
        write()
    except Exception as e:  # noqa: BLE001
        return [type(e).__name__, io.disk_full_reason(e)]
    return None


workdir = pathlib.Path(sys.argv[1])
tiny_model("teacher", width=6, seed=0, pieces=3).save(workdir / "teacher.keras")
hypermodel = search.FitNetsHyperModel(
    workdir / "teacher.keras", lambda: tiny_model("student", width=64, seed=1),  # ~300 kB
    hparams=stages.Hyperparameters(learning_rate=1e-3),
)  # fmt: skip
data = dict(x=tiny_dataset(), validation_data=tiny_dataset(), epochs=1, verbose=0)
project = workdir / "search" / "trials"


def tuner():
    return search.make_tuner(hypermodel, max_trials=2, trial_epochs=1, directory=workdir / "search")


signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # the JSON files fit, a checkpoint not
first = tuner()
trial_error = attempt(lambda: first.search(**data))
oracle_json = (project / "oracle.json").read_bytes()
resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))  # no room for anything
oracle_error = attempt(first.oracle.save)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
after = {
    "trial_error": trial_error,
    "oracle_error": oracle_error,
    "trial_status": json.loads((project / "trial_0" / "trial.json").read_text())["status"],
    "oracle_intact": (project / "oracle.json").read_bytes() == oracle_json,
    "checkpoint": (project / "trial_0" / "checkpoint.weights.h5").exists(),
    "litter": sorted(p.name for p in workdir.rglob(".tmp*")),
}

resumed = tuner()
requeue_interrupted(resumed.oracle)
resumed.search(**data)
after["resumed"] = {t.trial_id: t.status for t in resumed.oracle.trials.values()}
print(json.dumps(after))
