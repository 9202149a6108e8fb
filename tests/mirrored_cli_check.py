"""``fitnets_tf.train`` or ``fitnets_tf.tune`` with ``--strategy=mirrored`` on 2 replicas.

Usage: mirrored_cli_check.py train|tune WORKDIR [FLAG...]

A separate process: logical devices must be configured before TensorFlow initialises. Here
``MirroredStrategy()`` mirrors over 2 logical CPU devices, as it does over the GPUs of a
2-GPU host (on a CPU alone it has one replica, which hides what a second one breaks). The
program runs as from the command line; the last line printed is JSON: its exit status, the
strategies made and their replicas.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
made = []
_mirrored = tf.distribute.MirroredStrategy


def two_replicas(devices=None, **kwargs):
    strategy = _mirrored(devices or [d.name for d in tf.config.list_logical_devices("CPU")],
                         **kwargs)  # fmt: skip
    made.append(strategy.num_replicas_in_sync)
    return strategy


tf.distribute.MirroredStrategy = two_replicas

from fitnets_tf.cli import train, tune  # noqa: E402

program, workdir, *flags = sys.argv[1:]
sys.argv = [f"fitnets-{program}", *flags, "--strategy=mirrored", f"--workdir={workdir}"]
try:
    {"train": train, "tune": tune}[program].entry_point()
    status = 0
except SystemExit as e:
    status = e.code or 0
print(json.dumps({"status": status, "replicas_of_each_strategy": made}))
