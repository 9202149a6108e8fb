"""bench/tf_small_batch.py: its per-call arithmetic, the ratios it names, and the floor worker.

No timing is asserted: names, counts, and that a profile attributes a call's time to the
model's kernels.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bench import tf_small_batch


def test_block_seconds_become_seconds_per_call_per_worker():
    timed = {
        "times": {"litert_2/student@1": [0.05, 0.07], "floor_1/add_zero@1": [0.04, 0.05]},
        "workers": {"litert_2": {"calls": {"student@1": 1000}},
                    "floor_1": {"calls": {"add_zero@1": 500}}},
    }  # fmt: skip
    times = tf_small_batch.per_call(timed)
    np.testing.assert_allclose(times["litert_2/student@1"], [5e-5, 7e-5])
    np.testing.assert_allclose(times["floor_1/add_zero@1"], [8e-5, 1e-4])


def test_summary_ratios_per_round_and_kernel_share():
    times = {f"{w}/{role}@{b}": [t, 2 * t]
             for w, t in (("tensorflow_2", 4.0), ("tensorflow_1", 3.0), ("litert_2", 1.0))
             for role in ("student", "teacher") for b in (1, 128)}  # fmt: skip
    profile = {"call_ms": 0.5, "ops_ms": 0.2, "by_op": {"Conv2D": 0.2}}
    records = {w: {"profiles": {"student": profile, "teacher": profile}}
               for w in ("floor_2", "floor_1")}  # fmt: skip
    found = tf_small_batch.summarise(times, records)
    assert len(found["ratios"]) == 2 * 2 * 3
    assert found["ratios"]["student@1/tensorflow_2_over_litert"]["median"] == 4.0
    assert found["ratios"]["teacher@128/tensorflow_1_over_2"]["median"] == 0.75
    assert found["profiles"]["floor_1/student@1"]["ops_share"] == pytest.approx(0.4)
    # With oneDNN's kernels off (the eigen_* workers): their time over the default's.
    times.update({f"eigen_{t}/{at}": [6.0, 12.0] for t in ("2", "1")
                  for at in ("student@1", "student@128", "teacher@1", "teacher@128")})  # fmt: skip
    found = tf_small_batch.summarise(times, records)
    assert len(found["ratios"]) == 2 * 2 * 5
    assert found["ratios"]["teacher@1/eigen_1_over_tensorflow_1"]["median"] == 2.0
    assert found["ratios"]["student@128/eigen_2_over_tensorflow_2"]["median"] == 1.5


def test_floor_candidates_time_an_empty_call_and_profile_each_model(tmp_path, monkeypatch):
    monkeypatch.setattr(tf_small_batch, "PROFILED_CALLS", 5)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    path = tmp_path / "tiny.keras"
    model.save(path)
    candidates, info = tf_small_batch.floor_candidates({"tiny": str(path)}, [8, 8, 1])
    assert set(candidates) == {"add_zero@1"} == set(info["calls"])
    assert info["calls"]["add_zero@1"] >= 1
    candidates["add_zero@1"]()
    profile = info["profiles"]["tiny"]
    assert profile["ops_ms"] > 0 and profile["call_ms"] > 0
    assert any("Conv2D" in op for op in profile["by_op"]), profile["by_op"]
