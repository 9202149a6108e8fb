"""Runs one Distiller epoch on 1 device and on MirroredStrategy over 2 logical CPU devices.

A separate process: logical devices must be configured before TensorFlow initialises.
Prints one JSON line: the per-phase logged losses and final student weights' checksums.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_dataset, tiny_model  # noqa: E402

import fitnets_tf  # noqa: E402


def run(strategy):
    with strategy.scope():
        teacher = tiny_model("teacher", 6, 0, pieces=3)
        # No BatchNormalization in the student: per-replica batch statistics would differ
        # from the full batch's by design (SyncBatchNorm aside), hiding what we check.
        student = tiny_model("student", 4, 1, batch_norm=False)
        d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
    out = {}
    for phase in ("hints", "kd"):
        with strategy.scope():
            # Plain SGD: RMSProp would hide a wrongly scaled gradient by normalising it.
            d.compile(optimizer=keras.optimizers.SGD(0.05), phase=phase)
        out[phase] = d.fit(tiny_dataset(batch_size=8, n=32), epochs=2, verbose=0).history["loss"]
    out["weights"] = [float(np.sum(np.abs(w))) for w in student.get_weights()]
    return out


logical = [d.name for d in tf.config.list_logical_devices("CPU")]
result = {
    "one": run(tf.distribute.OneDeviceStrategy(logical[0])),
    "mirrored": run(tf.distribute.MirroredStrategy(logical)),
}
print(json.dumps(result))
