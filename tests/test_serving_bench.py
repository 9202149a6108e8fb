"""bench/serving.py: the files each runtime worker times, its blocks, and per-call seconds.

No timing is asserted: the names, the call counts and the arithmetic that turns a block's
seconds into seconds per model call.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bench import serving
from fitnets_tf import latency
from fitnets_tf.export import writers


def test_block_seconds_become_seconds_per_model_call():
    timed = {
        "times": {"litert/a/litert@1": [0.05, 0.06], "tensorflow/a/tensorflow@128": [0.4, 0.5]},
        "workers": {"litert": {"calls": {"a/litert@1": 1000}},
                    "tensorflow": {"calls": {"a/tensorflow@128": 4}}},
    }  # fmt: skip
    times = serving._per_model_call(timed)
    assert times.keys() == {"a/litert@1", "a/tensorflow@128"}
    np.testing.assert_allclose(times["a/litert@1"], [5e-5, 6e-5])
    np.testing.assert_allclose(times["a/tensorflow@128"], [0.1, 0.125])


def _bn_student() -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="tiny")


def test_write_models_names_every_runtimes_file_and_the_unfolded_pair(tmp_path):
    found = {"fashion_mnist": {"teacher": _bn_student(), "student": _bn_student()}}
    files = serving.write_models(found, tmp_path)
    assert set(files) == set(serving.RUNTIMES)
    for runtime in serving.RUNTIMES:
        assert {"fashion_mnist/teacher/" + runtime, "fashion_mnist/student/" + runtime} <= set(
            files[runtime]
        )
    assert f"fashion_mnist/student/{serving.UNFOLDED}" in files["tensorflow"]
    served = keras.saving.load_model(files["tensorflow"]["fashion_mnist/student/tensorflow"])
    trained = keras.saving.load_model(
        files["tensorflow"][f"fashion_mnist/student/{serving.UNFOLDED}"]
    )
    kinds = lambda m: {type(layer).__name__ for layer in m.layers}  # noqa: E731
    assert "BatchNormalization" not in kinds(served)  # served as exported: folded
    assert "BatchNormalization" in kinds(trained)


def test_runtime_worker_builds_a_block_per_file_and_batch(tmp_path):
    pytest.importorskip("ai_edge_litert")
    path = tmp_path / "tiny.tflite"
    writers.write_litert(_bn_student(), path)
    candidates, info = serving.runtime_worker("litert", {"m/litert": str(path)}, 1, [28, 28, 1])
    assert set(candidates) == {"m/litert@1", "m/litert@128"} == set(info["calls"])
    assert all(1 <= n <= latency.MAX_REPEATS for n in info["calls"].values())
    for run in candidates.values():
        run()
