"""What Keras 3's BatchNormalization costs a training step on TensorFlow, against the fused op.

``python -m bench.batch_norm_cost`` (under a minute) writes ``results/batch_norm_cost.json``;
``bench/README.md`` quotes it. On the TensorFlow backend, Keras 3 computes a training batch
norm as ``tf.nn.moments`` and ``tf.nn.batch_normalization`` (separate passes over the
activation, and as many again in the gradient), where ``tf.compat.v1.nn.fused_batch_norm``
(FusedBatchNormV3, a oneDNN kernel on CPU) does each direction in one op. Timed: forward and
gradient of ``sum(bn(x)^2)`` for the activations of the default student's three convolutions
(``thin_cnn``: 24 channels at 28x28, 48 at 14x14, 96 at 7x7), batch 128, alternated rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import keras
import tensorflow as tf

from bench import timing
from bench.run import machine

RESULTS = pathlib.Path(__file__).parent / "results" / "batch_norm_cost.json"
SHAPES = ((128, 28, 28, 24), (128, 14, 14, 48), (128, 7, 7, 96))  # thin_cnn's three convs


def _keras_step(x):
    layer = keras.layers.BatchNormalization()
    layer.build(x.shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, *layer.trainable_variables])

    return step


def _fused_step(x):
    gamma, beta = tf.Variable(tf.ones(x.shape[-1])), tf.Variable(tf.zeros(x.shape[-1]))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=1e-3,
                                                        is_training=True)  # fmt: skip
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, gamma, beta])

    return step


def _runner(step, x, calls: int = 10):
    def run():
        for _ in range(calls):
            grads = step(x)
        grads[0][0, 0, 0, 0].numpy()

    return run


def batch_norm_cost(repeats: int) -> dict:
    out = {}
    for shape in SHAPES:
        x = tf.random.normal(shape)
        candidates = {"keras": _runner(_keras_step(x), x), "fused": _runner(_fused_step(x), x)}
        times = timing.interleaved(candidates, repeats=repeats)
        out["x".join(map(str, shape))] = {"ms": timing.summary(times, 10),
                                          "keras_over_fused": timing.ratio(times, "keras", "fused")}  # fmt: skip
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2, help="intra- and inter-op threads")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    result = {"machine": machine(), "keras": keras.__version__,
              "shapes": batch_norm_cost(args.repeats)}  # fmt: skip
    result["machine"]["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["shapes"], indent=1))


if __name__ == "__main__":
    main()
