"""One worker of a MultiWorkerMirroredStrategy run of the Distiller (or a 1-process baseline).

Usage: multiworker_check.py INDEX PORT0,PORT1   (INDEX -1: no cluster, default strategy)
Prints one JSON line: the logged losses of both phases and the student's weight sums.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
index, ports = int(sys.argv[1]), sys.argv[2].split(",")
if index >= 0:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })  # fmt: skip
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from conftest import tiny_data, tiny_model  # noqa: E402

import fitnets_tf  # noqa: E402
from fitnets_tf import distribute  # noqa: E402

strategy = distribute.make_strategy("multi_worker" if index >= 0 else "default")
x, y = tiny_data(64)
# Global batch 16; each worker reads its shard (the dataset is split by data, not by file).
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
with strategy.scope():
    teacher = tiny_model("teacher", 6, 0, pieces=3)
    student = tiny_model("student", 4, 1, batch_norm=False)
    d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
out = {}
for phase in ("hints", "kd"):
    with strategy.scope():
        d.compile(optimizer=keras.optimizers.SGD(0.05), phase=phase)
    out[phase] = d.fit(dataset, epochs=2, verbose=0).history["loss"]
out["weights"] = [float(np.sum(np.abs(w))) for w in student.get_weights()]
print(json.dumps(out))
