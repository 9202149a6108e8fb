"""Latency as served (LiteRT, ONNX Runtime) and the closing table's speed-up line."""

import os

import keras
import pytest
from conftest import tiny_dataset, tiny_model

from fitnets_tf import evaluation, latency
from fitnets_tf.reporting.summary import speedup_line, summary_table


@pytest.mark.parametrize("runtime", latency.SERVING_RUNTIMES)
def test_served_latency_of_a_mixed_precision_model(runtime):
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32 afterwards
    model = tiny_model("student", 4, seed=0)
    result = latency.measure_served_latency(model, runtime, batch_sizes=(1, 4), repeats=3)
    assert sorted(result) == [1, 4]
    for batch, numbers in result.items():
        assert numbers["ms_per_batch"] == pytest.approx(numbers["ms_per_image"] * batch)
        assert numbers["ms_per_image"] > 0
    with pytest.raises(ValueError, match="`runtime` must be one of"):
        latency.measure_served_latency(model, "tensorrt")


def test_summary_rows_evaluate_the_float32_model_and_name_runtimes(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny_model("student", 4, seed=0)
    row = evaluation.summary_row("kd", model, tiny_dataset(), None, False, ("litert",))
    assert 0 <= row["test_accuracy"] <= 1 and row["architecture"] == "student"
    assert set(row) >= {"latency_ms_per_image_batch1_litert", "latency_ms_per_image_batch128_litert"}
    assert "latency_ms_per_image_batch1" not in row  # TensorFlow's was not asked


def test_closing_table_prints_the_final_students_speed_up_per_runtime():
    teacher = dict(name="teacher", test_accuracy=0.94, params=100, mults=1000,
                   latency_ms_per_image_batch1=2.0, latency_ms_per_image_batch128=0.4,
                   latency_ms_per_image_batch1_onnxruntime=0.5,
                   latency_ms_per_image_batch128_onnxruntime=0.3)  # fmt: skip
    student = dict(name="fitnet", test_accuracy=0.93, params=10, mults=100,
                   latency_ms_per_image_batch1=1.0, latency_ms_per_image_batch128=0.05,
                   latency_ms_per_image_batch1_onnxruntime=0.05,
                   latency_ms_per_image_batch128_onnxruntime=0.04)  # fmt: skip
    assert speedup_line([teacher, student]) == (
        "fitnet vs teacher speed-up: TensorFlow 2.0x b1, 8.0x b128; ONNX Runtime 10.0x b1, 7.5x b128"
    )
    table = summary_table([teacher, student])
    assert "onnx b1" in table and "litert b1" not in table  # columns only for what was timed
    assert table.endswith("7.5x b128")
    assert speedup_line([student]) is None


def test_fast_calls_are_timed_for_long_enough_and_slow_ones_as_often_as_asked():
    import time

    calls = []
    latency.time_calls(calls.append, None, (2,), (1,), warmup=1, repeats=5)
    assert len(calls) == 1 + latency.MAX_REPEATS  # a no-op: capped, not 5 calls (a few µs)
    slow = []
    latency.time_calls(lambda x: (slow.append(x), time.sleep(0.15)), None, (2,), (1,),
                       warmup=1, repeats=2)  # fmt: skip
    assert len(slow) == 1 + 2  # 2 calls of 0.15 s already last MIN_TIMED_SECONDS


def test_serving_runtimes_use_the_cores_this_process_may_run_on(monkeypatch):
    # os.cpu_count() is the machine's: under taskset or a container's CPU set, LiteRT and ONNX
    # Runtime were given more threads than cores.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert latency.usable_cpus() == 2
    monkeypatch.delattr(os, "sched_getaffinity")
    assert latency.usable_cpus() == 64


def test_evaluating_several_models_is_not_warned_of_as_retracing(caplog):
    # One traced function per model: TensorFlow counted them all as one function retracing
    # (warned from the sixth model on) while they were a lambda; an object is counted alone.
    import gc
    import weakref

    import numpy as np
    import tensorflow as tf

    caplog.set_level("WARNING", logger=tf.get_logger().name)
    for units in range(3, 10):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
        for rows in (5, 5, 2):
            classes = evaluation.predict_classes(model, np.ones((rows, 4), "float32"))
            assert classes.shape == (rows,)
    assert "retracing" not in caplog.text
    kept = weakref.ref(model)
    del model
    gc.collect()
    assert kept() is None  # the cached function does not keep its model alive
