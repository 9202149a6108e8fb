"""Runs one Distiller epoch on 1 device and on MirroredStrategy over 2 logical CPU devices.

A separate process: logical devices must be configured before TensorFlow initialises.
Prints one JSON line: the per-phase logged losses and final student weights' checksums, and
the weights of a batch-norm model trained on the two devices with Keras' layer and the fused one.
"""

import contextlib
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
from conftest import tiny_data, tiny_dataset, tiny_model  # noqa: E402

import fitnets_tf  # noqa: E402
from fitnets_tf import stages  # noqa: E402
from fitnets_tf.errors import ConfigError  # noqa: E402
from fitnets_tf.hyperparameters import Hyperparameters  # noqa: E402


def run(strategy, optimizer=lambda student: keras.optimizers.SGD(0.05), examples=32):
    """The hint and KD losses and weights after 2 epochs of ``examples`` in batches of 8 (35: a
    last batch of 3, split 2 + 1 over 2 replicas)."""
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
            d.compile(optimizer=optimizer(student), phase=phase)
        out[phase] = d.fit(tiny_dataset(batch_size=8, n=examples), epochs=2,
                           verbose=0).history["loss"]  # fmt: skip
    out["weights"] = [float(np.sum(np.abs(w))) for w in student.get_weights()]
    return out


def batch_norm_run(strategy, fused: bool):
    """Every weight (moving statistics included) of a BN model after 2 epochs of SGD."""
    with strategy.scope():
        model = tiny_model("bn_net", 4, 2)  # its BatchNormalization is Keras'
        if fused:
            model = fitnets_tf.batch_norm.with_fused_batch_norm(model)
        model.compile(keras.optimizers.SGD(0.05),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(tiny_dataset(batch_size=8, n=32), epochs=2, verbose=0)
    return [w.tolist() for w in model.get_weights()]


def short_batches(strategy) -> dict:
    """What Distiller.fit says of 33 examples in batches of 8 (a last batch of 1) on 2
    replicas, as arrays then as a dataset, and the steps trained until then."""
    with strategy.scope():
        d = fitnets_tf.Distiller(tiny_model("teacher", 6, 0, pieces=3), tiny_model("student", 4, 1))
        d.compile(optimizer=keras.optimizers.SGD(0.05), phase="kd")
    x, y = tiny_data(33)
    said = {}
    for kind, data in (("arrays", dict(x=x, y=y, batch_size=8)),
                       ("dataset", dict(x=tiny_dataset(batch_size=8, n=33)))):  # fmt: skip
        try:
            d.fit(**data, epochs=1, verbose=0)
        except ConfigError as e:
            said[kind] = {"error": str(e), "steps_before": int(d.optimizer.iterations.numpy())}
    return said


# --ema_momentum and --global_clipnorm (0.5 clips these gradients): Keras clipped each
# replica's part of the gradient before summing them.
def clipped(student):
    return fitnets_tf.recipes.build_optimizer("sgd", 0.05, ema_momentum=0.9, global_clipnorm=0.5)


# --conv_lr_scale with --weight_decay: the replicas' updates find each variable's own rate
# (the optimizer looks it up by the variable a replica updates) and decay at it.
def scaled(student):
    convolutions = fitnets_tf.layer_rates.convolution_variables(student)
    return fitnets_tf.recipes.build_optimizer("sgd", 0.05, weight_decay=0.2, rate_scale=0.05,
                                              scaled_variables=convolutions)  # fmt: skip


def labels_run(strategy, policy: str = "float32", examples: int = 32, clipnorm=0.05):
    """The weights of a model ``stages.fit_labels`` trained (the teacher's and ``scratch``'s
    stage, a step Keras runs) with SGD and --global_clipnorm=0.05, which clips here; under
    ``mixed_float16`` Keras' compile makes the optimizer a LossScaleOptimizer. With
    ``examples=35`` and no clipping: the losses too, as :func:`run` gives them."""
    hparams = Hyperparameters(optimizer_name="sgd", learning_rate=0.05, global_clipnorm=clipnorm)
    keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            model = tiny_model("labels_net", 4, 1, batch_norm=False)
            history = stages.fit_labels(model, tiny_dataset(batch_size=8, n=examples), epochs=2,
                                        hparams=hparams, verbose=0)  # fmt: skip
    finally:
        keras.mixed_precision.set_global_policy("float32")
    weights = [float(np.sum(np.abs(w))) for w in model.get_weights()]
    return weights if examples == 32 else {"loss": history.history["loss"], "weights": weights}


def refused(strategy) -> dict:
    """What Distiller.fit says (the error's type and text) of setups Keras fails on with a
    bare AssertionError or a placeholder error, and the steps trained until then."""
    def build(models_in_scope: bool, distiller_in_scope: bool):
        scope = strategy.scope if models_in_scope else contextlib.nullcontext
        with scope():
            teacher = tiny_model("teacher", 6, 0, pieces=3)
            student = tiny_model("student", 4, 1, batch_norm=False)
        with (strategy.scope if distiller_in_scope else contextlib.nullcontext)():
            d = fitnets_tf.Distiller(teacher, student, "pool1", "pool1")
        return d

    said = {}
    for name, (models, distiller, executions) in {
        "models_outside": (False, True, 1), "distiller_outside": (True, False, 1),
        "steps_per_execution": (True, True, 2),
    }.items():  # fmt: skip
        d = build(models, distiller)
        with strategy.scope():
            d.compile(optimizer=keras.optimizers.SGD(0.05), phase="kd",
                      steps_per_execution=executions)  # fmt: skip
        try:
            d.fit(tiny_dataset(batch_size=8, n=32), epochs=1, verbose=0)
            said[name] = None
        except Exception as e:  # noqa: BLE001  (the type is what the test checks)
            said[name] = {"type": type(e).__name__, "error": str(e),
                          "steps_before": int(d.optimizer.iterations.numpy())}  # fmt: skip
    return said


def teacher_checked(strategy) -> dict:
    """What Distiller.fit says of a teacher trained on pixels / 255 and fed raw pixels, in
    batches of 8 (4 a replica), and the steps trained until then."""
    from test_fit_checks import _brightness, _brightness_teacher  # noqa: PLC0415

    with strategy.scope():
        student = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                    keras.layers.Dense(4)])  # fmt: skip
        d = fitnets_tf.Distiller(_brightness_teacher(), student)
        d.compile(optimizer=keras.optimizers.SGD(0.1), phase="kd")
    try:
        d.fit(_brightness(scale=255.0).unbatch().batch(8), epochs=1, verbose=0)
        return {"error": None, "steps_before": int(d.optimizer.iterations.numpy())}
    except ConfigError as e:
        return {"error": str(e), "steps_before": int(d.optimizer.iterations.numpy())}


logical = [d.name for d in tf.config.list_logical_devices("CPU")]
mirrored = tf.distribute.MirroredStrategy(logical)
result = {
    "one": run(tf.distribute.OneDeviceStrategy(logical[0])),
    "mirrored": run(mirrored),
    "batch_norm": {kind: batch_norm_run(mirrored, kind == "fused") for kind in ("keras", "fused")},
    "ema_clipped": {"one": run(tf.distribute.OneDeviceStrategy(logical[0]), clipped),
                    "mirrored": run(mirrored, clipped)},
    "conv_lr_scale": {"one": run(tf.distribute.OneDeviceStrategy(logical[0]), scaled),
                      "mirrored": run(mirrored, scaled)},
    "short_batches": short_batches(mirrored),
    "refused": refused(mirrored),
    "teacher_checked": teacher_checked(mirrored),
    "partial_last_batch": {"one": run(tf.distribute.OneDeviceStrategy(logical[0]), examples=35),
                           "mirrored": run(mirrored, examples=35)},
    "labels_clipped": {policy: {"one": labels_run(tf.distribute.OneDeviceStrategy(logical[0]),
                                                  policy),
                                "mirrored": labels_run(mirrored, policy)}
                       for policy in ("float32", "mixed_float16")},  # fmt: skip
    "labels_partial_last_batch": {
        "one": labels_run(tf.distribute.OneDeviceStrategy(logical[0]), examples=35, clipnorm=0.0),
        "mirrored": labels_run(mirrored, examples=35, clipnorm=0.0)},
}
print(json.dumps(result))
