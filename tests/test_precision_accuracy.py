"""bench/precision_accuracy.py: float32 against mixed-precision test accuracy, per config and model."""

import json

from bench import precision_accuracy


def _summary(run_dir, accuracies):
    run_dir.mkdir(parents=True)
    rows = [{"name": name, "test_accuracy": acc} for name, acc in accuracies.items()]
    (run_dir / "summary.json").write_text(json.dumps({"models": rows}))


def test_twins_pair_each_model_of_the_smoke_runs_and_the_default_runs(tmp_path, monkeypatch):
    trained = []

    def fake_train(flagfile, workdir, mixed, seed):
        trained.append((flagfile, mixed, seed))
        return {"teacher": 0.5, "fitnet": 0.41 if mixed else 0.40 + seed / 10}

    monkeypatch.setattr(precision_accuracy, "_train", fake_train)
    assert precision_accuracy.accuracy_twins(tmp_path) == [  # no default runs here: smoke only
        {"config": "configs/smoke.flags", "model": "teacher", "float32": 0.5, "mixed": 0.5,
         "float32_other_seed": 0.5},
        {"config": "configs/smoke.flags", "model": "fitnet", "float32": 0.40, "mixed": 0.41,
         "float32_other_seed": 0.5},
    ]  # fmt: skip
    assert trained == [("configs/smoke.flags", False, 0), ("configs/smoke.flags", True, 0),
                       ("configs/smoke.flags", False, 1)]  # fmt: skip
    _summary(tmp_path / "runs" / "fashion_mnist", {"teacher": 0.9417, "fitnet": 0.9273})
    _summary(tmp_path / "runs" / "fashion_mnist_float32", {"teacher": 0.9417, "fitnet": 0.9281, "kd": 0.93})
    rows = precision_accuracy.accuracy_twins(tmp_path)[2:]
    assert rows == [
        {"config": "configs/fashion_mnist.flags", "model": "teacher", "float32": 0.9417,
         "mixed": 0.9417, "float32_other_seed": None},
        {"config": "configs/fashion_mnist.flags", "model": "fitnet", "float32": 0.9281,
         "mixed": 0.9273, "float32_other_seed": None},
    ]  # kd is in one run only: not compared  # fmt: skip
    table = precision_accuracy.markdown(rows, "mixed_bfloat16")
    assert "| configs/fashion_mnist.flags | fitnet | 92.81 | 92.73 | -0.08 | — |" in table
