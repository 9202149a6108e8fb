"""Writes a model, a checkpoint and the run state, then fails to overwrite them on a "full disk"
inside ``io.run_writes``, as a training run does.

RLIMIT_FSIZE caps the size of any file this process writes (SIGXFSZ ignored, so writes fail
with EFBIG like ENOSPC would). Prints one JSON line for tests/test_resume.py.
"""

import json
import os
import pathlib
import resource
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fitnets_tf.run import io, resume  # noqa: E402
from fitnets_tf.run.layout import RunLayout  # noqa: E402

workdir = sys.argv[1]
keras.utils.set_random_seed(0)
small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
big = keras.Sequential([keras.Input((4,)), keras.layers.Dense(200_000)])  # ~3 MB of weights
io.save_model(small, f"{workdir}/student.keras")
variables = {"model": list(small.variables)}
manager = tf.train.CheckpointManager(tf.train.Checkpoint(**variables), f"{workdir}/ckpt", 2)
manager.save(checkpoint_number=1)
state = resume.RunState(workdir, {"seed": 0})
state.stage("kd/kd")["epochs_done"] = 1
state.save()

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
failures = {}
writes = {
    "model": lambda: io.save_model(big, f"{workdir}/student.keras"),
    "state": lambda: (state.stage("kd/kd").update(history={"x": list(range(100_000))}), state.save()),
    # Last: run_writes removes the litter it finds on entry, as a resumed run does.
    "checkpoint": lambda: tf.train.CheckpointManager(
        tf.train.Checkpoint(model=list(big.variables)), f"{workdir}/ckpt", 2
    ).save(checkpoint_number=2),
}
for name, write in writes.items():
    try:
        with io.run_writes(workdir):  # as in a training run
            write()
        failures[name] = None
    except Exception as e:  # noqa: BLE001
        failures[name] = type(e).__name__
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

reloaded = keras.saving.load_model(f"{workdir}/student.keras", safe_mode=True)
latest = tf.train.latest_checkpoint(f"{workdir}/ckpt")
restored = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
tf.train.Checkpoint(model=list(restored.variables)).restore(latest).assert_consumed()
with open(RunLayout(workdir).run_state) as f:
    state = json.load(f)
print(json.dumps({
    "failures": failures,
    "model_intact": all(np.array_equal(a, b) for a, b in zip(reloaded.get_weights(), small.get_weights(), strict=True)),
    "latest": os.path.basename(latest),
    "checkpoint_intact": all(np.array_equal(a, b) for a, b in zip(restored.get_weights(), small.get_weights(), strict=True)),
    "state_epochs": state["stages"]["kd/kd"]["epochs_done"],
    # This module's temporaries, and TensorFlow's half-written checkpoint (ckpt-2_temp/).
    "litter": sorted(str(p.relative_to(workdir)) for p in pathlib.Path(workdir).rglob("*")
                     if p.name.startswith(".tmp") or p.name.endswith("_temp")),
}))  # fmt: skip
