"""SIGTERM under MirroredStrategy over 2 logical CPU devices: stop, checkpoint, resume.

A separate process: logical devices must be configured before TensorFlow initialises.
Prints one JSON line: the step the preempted fit stopped after, and whether the resumed
student's weights and history equal an uninterrupted run's.
"""

import json
import os
import signal
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.experimental.enable_op_determinism()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_dataset, tiny_model  # noqa: E402

from fitnets_tf import stages  # noqa: E402
from fitnets_tf.run import preemption, resume  # noqa: E402

strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


class SignalDuringStep(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == 5:  # during step 6: epoch 2, step 2
            os.kill(os.getpid(), signal.SIGTERM)


def train(workdir, extra=()):
    """3 epochs of 4 steps of a tiny model on the labels, checkpointed in ``workdir``."""
    state = resume.RunState(workdir, {})
    checkpoint = resume.StageCheckpoint(state, "student", workdir, log=lambda m: None)
    with strategy.scope():  # the model, and the optimizer fit_labels compiles
        model = tiny_model("student", 4, 1, batch_norm=False)
        stages.fit_labels(
            model, tiny_dataset(batch_size=8, n=32), epochs=3, verbose=0,
            hparams=stages.Hyperparameters(learning_rate=1e-2, lr_schedule="cosine"),
            callbacks=[*extra, checkpoint], initial_epoch=state.initial_epoch("student"),
            initial_step=state.initial_step("student"),
        )  # fmt: skip
    return model, resume.RunState(workdir, {}).stage("student")["history"]


base = tempfile.mkdtemp()
straight, straight_history = train(f"{base}/a")
stopped_after = None
with preemption.watch():
    try:
        train(f"{base}/b", [SignalDuringStep()])
    except preemption.Preempted as e:
        stopped_after = e.where
resumed, resumed_history = train(f"{base}/b")
pairs = zip(straight.get_weights(), resumed.get_weights(), strict=True)
same = all(np.array_equal(a, b) for a, b in pairs)
print(json.dumps({"stopped_after": stopped_after, "same_weights": same,
                  "same_history": resumed_history == straight_history,
                  "history": resumed_history, "straight_history": straight_history}))
