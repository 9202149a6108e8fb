"""One worker of a two-worker MultiWorkerMirroredStrategy FitNet, stoppable by SIGTERM.

Usage: preemption_multiworker_check.py INDEX PORT0,PORT1 WORKDIR [STAGE:STEP]

Trains a tiny Distiller's stage 1 (``hints``) then stage 2 (``kd``), 2 epochs of 16 steps
each (global batch 8, 4 per worker), checkpointed every 3 steps in WORKDIR, which is this
worker's own (the run state and checkpoints of each worker, as each writes them). With
STAGE:STEP this worker sends itself a SIGTERM as step STEP (1-based, counted over the stage)
of STAGE begins; the other worker gets no signal. The same command again resumes.

Like ``python -m fitnets_tf.train``: a preempted run prints one JSON line (the step it
stopped after, its run state's mid-epoch record) and exits with
:data:`~fitnets_tf.run.preemption.EXIT_STATUS`; a finished one writes the student's weights
to WORKDIR/student_weights.npz and prints each stage's history.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
index, ports, workdir = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
signal_stage, signal_step = (sys.argv[4].split(":") + [0])[:2] if len(sys.argv) > 4 else ("", 0)
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
    "task": {"type": "worker", "index": index},
})  # fmt: skip
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

# Before any op runs: TensorFlow configures the collectives once, at startup.
strategy = tf.distribute.MultiWorkerMirroredStrategy()
tf.config.experimental.enable_op_determinism()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_dataset, tiny_model  # noqa: E402

from fitnets_tf import stages  # noqa: E402
from fitnets_tf.run import preemption, resume  # noqa: E402

EPOCHS, CHECKPOINT_EVERY = 2, 3


class SignalAtStep(keras.callbacks.Callback):
    """Sends this process a SIGTERM as the stage's step ``step`` (1-based) begins."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step - 1:
            os.kill(os.getpid(), signal.SIGTERM)


def fit_stage(key, fit, distiller, train, state):
    if state.done(key):
        return
    checkpoint = resume.StageCheckpoint(state, key, os.path.join(workdir, key),
                                        log=lambda m: None, checkpoint_every=CHECKPOINT_EVERY)  # fmt: skip
    signal_now = [SignalAtStep(int(signal_step))] if key == signal_stage else []
    fit(distiller, train, epochs=EPOCHS, verbose=0, callbacks=[*signal_now, checkpoint],
        hparams=stages.Hyperparameters(learning_rate=1e-2, lr_schedule="cosine"),
        initial_epoch=state.initial_epoch(key), initial_step=state.initial_step(key))  # fmt: skip


state = resume.RunState(workdir, {})
train = tiny_dataset(batch_size=8, n=128)  # 16 global steps per epoch
with strategy.scope():
    teacher = tiny_model("teacher", 6, 0, pieces=3)
    student = tiny_model("student", 4, 1, batch_norm=False)
    distiller = stages.make_distiller(teacher, student, stages.Hyperparameters(),
                                      hint_layer="pool1", guided_layer="pool1", seed=0)  # fmt: skip
with preemption.watch(), strategy.scope():  # the scope: each stage's optimizer is made in fit_*
    try:
        for key, fit in (("hints", stages.fit_hints), ("kd", stages.fit_kd)):
            fit_stage(key, fit, distiller, train, state)
    except preemption.Preempted as stopped:
        record = resume.RunState(workdir, {}).stage(key)
        print(json.dumps({"stopped_after": stopped.where, "mid_epoch": record["mid_epoch"],
                          "epochs_done": record["epochs_done"]}), flush=True)  # fmt: skip
        sys.exit(preemption.EXIT_STATUS)
np.savez(os.path.join(workdir, "student_weights.npz"), *student.get_weights())
histories = {k: resume.RunState(workdir, {}).stage(k)["history"] for k in ("hints", "kd")}
print(json.dumps({"history": histories}), flush=True)
