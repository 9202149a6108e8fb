"""What batch norm costs a training step on TensorFlow: Keras 3's layer against the fused kernel.

``python -m bench.batch_norm_cost`` (about a minute) writes ``results/batch_norm_cost.json``;
``bench/README.md`` quotes it. On the TensorFlow backend, Keras 3 computes a training batch
norm as ``moments`` and ``tf.nn.batch_normalization`` (separate passes over the activation, and
as many again in the gradient); ``fitnets_tf.batch_norm.FusedBatchNormalization`` runs the same
layer through ``FusedBatchNormV3`` (a oneDNN kernel on CPU), one op each way. Timed, in
alternated rounds, batch 128:

- the layer alone: forward and gradient of ``sum(bn(x)^2)`` at the activations of the default
  student's three convolutions (``thin_cnn``: 24 channels at 28x28, 48 at 14x14, 96 at 7x7);
- the default student's train step on the labels (RMSProp, accuracy metric) and the default
  pair's KD step (``wide_cnn`` teacher, the Distiller), each with every batch norm Keras' and
  every one fused (as the library builds its nets).
"""

from __future__ import annotations

import pathlib

import keras
import tensorflow as tf

from bench import benchmarks, standalone, timing
from bench.run import machine
from fitnets_tf import models
from fitnets_tf.batch_norm import FusedBatchNormalization

RESULTS = pathlib.Path(__file__).parent / "results" / "batch_norm_cost.json"
SHAPES = ((128, 28, 28, 24), (128, 14, 14, 48), (128, 7, 7, 96))  # thin_cnn's three convs
STEPS = 10


def _layer_step(layer, x):
    layer.build(x.shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, *layer.trainable_variables])

    def run():
        for _ in range(STEPS):
            grads = step(x)
        grads[0][0, 0, 0, 0].numpy()

    return run


def layer_cost(repeats: int) -> dict:
    out = {}
    for shape in SHAPES:
        x = tf.random.normal(shape)
        candidates = {
            "keras": _layer_step(keras.layers.BatchNormalization(), x),
            "fused": _layer_step(FusedBatchNormalization(), x),
        }
        times = timing.interleaved(candidates, repeats=repeats)
        out["x".join(map(str, shape))] = {"ms": timing.summary(times, STEPS),
                                          "keras_over_fused": timing.ratio(times, "keras", "fused")}  # fmt: skip
    return out


def _with_keras_batch_norm(model: keras.Model) -> keras.Model:
    """``model`` as it was built before the fused layer: every batch norm Keras' own."""

    def clone(layer):
        cls = type(layer)
        if cls is FusedBatchNormalization:
            cls = keras.layers.BatchNormalization
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def step_cost(repeats: int) -> dict:
    x, y = benchmarks.fixed_batch("mnist")  # 128 images of 28x28x1, like Fashion-MNIST's
    data = benchmarks.repeated(x, y)
    fused = {
        "teacher": models.build("wide_cnn", (28, 28, 1), benchmarks.NUM_CLASSES, seed=0),
        "student": models.build("thin_cnn", (28, 28, 1), benchmarks.NUM_CLASSES, seed=1),
    }
    unfused = {role: _with_keras_batch_norm(model) for role, model in fused.items()}
    run = benchmarks.train_runner
    candidates = {}
    for kind, nets in (("keras", unfused), ("fused", fused)):
        student = keras.models.clone_model(nets["student"])
        candidates[f"student_{kind}"] = run(benchmarks.plain_student(student), data, STEPS)
        kd = benchmarks.kd_distiller(nets["teacher"], nets["student"])
        candidates[f"kd_{kind}"] = run(kd, data, STEPS)
    times = timing.interleaved(candidates, repeats=repeats)
    return {
        "ms": timing.summary(times, STEPS),
        "student_fused_over_keras": timing.ratio(times, "student_fused", "student_keras"),
        "kd_fused_over_keras": timing.ratio(times, "kd_fused", "kd_keras"),
    }


def main(argv=None) -> None:
    args = standalone.arguments(__doc__.splitlines()[0], argv)
    result = {"machine": machine(), "keras": keras.__version__,
              "layer": layer_cost(args.repeats), "steps": step_cost(args.repeats)}  # fmt: skip
    standalone.write(RESULTS, result, shown=("layer", "steps"))


if __name__ == "__main__":
    main()
