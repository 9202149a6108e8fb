import dataclasses
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import built_once

from fitnets_tf import distribute
from fitnets_tf.errors import ConfigError

HERE = os.path.dirname(__file__)


@dataclasses.dataclass
class Sizes:  # what check_last_batches reads of a Datasets
    batch_size: int
    num_train_examples: int
    num_validation_examples: int | None


@pytest.fixture(scope="module")
def check(tmp_path_factory) -> dict:
    """distribute_check.py's results (its own process: 2 logical CPU devices), run once."""

    def build(folder):
        proc = subprocess.run([sys.executable, os.path.join(HERE, "distribute_check.py")],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        (folder / "results.json").write_text(proc.stdout.strip().splitlines()[-1])

    folder = built_once(tmp_path_factory, "distribute", build)
    return json.loads((folder / "results.json").read_text())


def test_mirrored_on_two_logical_cpus_matches_one_device(check):
    one, mirrored = check["one"], check["mirrored"]
    for phase in ("hints", "kd"):
        # Logged losses agree: neither halved (keras.losses' trap) nor doubled.
        np.testing.assert_allclose(mirrored[phase], one[phase], rtol=2e-3)
    # Gradients are scaled right: the same SGD updates give the same weights.
    np.testing.assert_allclose(mirrored["weights"], one["weights"], rtol=2e-3)


def test_fused_batch_norm_trains_as_keras_layer_on_two_replicas(check):
    # Each replica normalises with its own half-batch's statistics and updates the moving
    # ones from it, in both layers; the fused kernel only sums in another order.
    for fused, keras_bn in zip(*check["batch_norm"].values(), strict=True):
        np.testing.assert_allclose(fused, keras_bn, rtol=1e-4, atol=1e-5)


def test_ema_and_global_clipnorm_train_on_two_replicas_as_on_one_device(check):
    # Keras clips in apply, before its update sums the replicas' gradients: each replica
    # clipped its own part, and 2 replicas trained other weights (by up to 140%) than one.
    one, mirrored = check["ema_clipped"]["one"], check["ema_clipped"]["mirrored"]
    for phase in ("hints", "kd"):
        np.testing.assert_allclose(mirrored[phase], one[phase], rtol=2e-3)
    np.testing.assert_allclose(mirrored["weights"], one["weights"], rtol=2e-3)
    plain = check["one"]
    assert not np.allclose(one["hints"], plain["hints"], rtol=2e-3)  # the clipping did clip


def test_scaled_convolution_rates_train_on_two_replicas_as_on_one_device(check):
    one, mirrored = check["conv_lr_scale"]["one"], check["conv_lr_scale"]["mirrored"]
    for phase in ("hints", "kd"):
        np.testing.assert_allclose(mirrored[phase], one[phase], rtol=2e-3)
    np.testing.assert_allclose(mirrored["weights"], one["weights"], rtol=2e-3)
    # The option did act: the convolutions (the first four weights, two maxout kernels and
    # their biases) ended elsewhere than with the plain optimizer.
    plain = check["one"]["weights"]
    assert not np.allclose(one["weights"][:4], plain[:4], rtol=2e-3)


def test_a_stage_keras_trains_clips_the_batch_gradient_as_one_device(check):
    # The teacher's and scratch's stage (stages.fit_labels) runs Keras' own train step, whose
    # optimizer clipped each replica's part: the biases moved twice as far on 2 replicas.
    # Under mixed_float16 the optimizer Keras clips in is a LossScaleOptimizer's inner one.
    for policy, found in check["labels_clipped"].items():
        np.testing.assert_allclose(found["mirrored"], found["one"], rtol=2e-3, err_msg=policy)


def test_distiller_fit_names_the_fix_for_a_batch_smaller_than_the_replicas(check):
    # TensorFlow's own error at the end of the first epoch: "Matrix size-incompatible:
    # In[0]: [0,1], In[1]: [4,3]", from a kernel of the replica left with no example.
    said = check["short_batches"]
    assert said["dataset"]["error"].startswith(
        "A batch of the dataset holds fewer examples than the strategy's 2 replicas"
    )
    assert "drop_remainder=True" in said["dataset"]["error"]
    assert said["arrays"] == {"steps_before": 0, "error": (
        "The last training batch holds 1 example(s) (33 examples in batches of 8), fewer than "
        "the strategy's 2 replicas: a replica would get no example and fail inside its kernels. "
        "Choose a batch size whose last batch holds 2 or more examples.")}  # fmt: skip


def test_fit_checks_its_teacher_on_every_replicas_part_of_its_first_batches(check):
    # The check took the first replica's part of each batch alone: 16 of the 32 images read,
    # too few for its sign test, and a teacher fed raw pixels was only warned of near chance.
    said = check["teacher_checked"]
    assert said["steps_before"] == 0
    assert (
        "is right on 0.2500 of the first 32 images as fit is given them (values above 1, taken "
        "as raw pixels in [0, 255]), but on 1.0000 of the same images as pixels / 255"
    ) in (said["error"] or "")


def test_a_last_batch_smaller_than_the_replicas_is_refused_before_training():
    # On 2 logical CPUs a last batch of 1 failed at the end of the first epoch, inside a kernel
    # ("Number of ways to split should evenly divide the split dimension").
    two = types.SimpleNamespace(num_replicas_in_sync=2)
    fine = Sizes(batch_size=8, num_train_examples=35, num_validation_examples=16)
    assert distribute.check_last_batches(fine, two) is fine  # last batches of 3 and 8
    assert distribute.check_last_batches(fine, None) is fine  # one replica
    short = dataclasses.replace(fine, num_validation_examples=17)
    with pytest.raises(ConfigError, match=r"last validation batch holds 1 example\(s\) \(17 "
                                          r"examples in batches of 8\), fewer than the strategy's "
                                          r"2 replicas.*--batch_size=7 or 9"):
        distribute.check_last_batches(short, two)
    assert distribute.check_last_batches(dataclasses.replace(short, batch_size=9), two)


def _mirrored_cli(program: str, workdir, *flags: str) -> dict:
    """mirrored_cli_check.py's result: ``program`` run with --strategy=mirrored on 2 replicas."""
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "mirrored_cli_check.py"), program, str(workdir),
         "--limit=128", "--batch_size=32", "--teacher_epochs=1", *flags],
        capture_output=True, text=True, timeout=300, cwd=os.path.dirname(HERE),
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "log": proc.stdout + proc.stderr}


def test_the_train_cli_runs_on_two_replicas(tmp_path):
    # The teacher check and the closing table's accuracies used Keras' predict_on_batch, which
    # hands every replica the whole batch: 2N predictions for N labels, a ValueError. And every
    # stage's optimizer must be made under the strategy that holds the models: one made
    # outside it stopped the first fit ("Mixing different tf.distribute.Strategy").
    run = _mirrored_cli("train", tmp_path / "run", "--flagfile=configs/smoke.flags",
                        "--mode=fitnet", "--kd_epochs=1", "--nomeasure_latency")  # fmt: skip
    assert run["status"] == 0, run["log"][-3000:]
    assert run["replicas_of_each_strategy"] == [2]
    assert "strategy: MirroredStrategy, 2 replicas in sync (" in run["log"]
    assert "teacher: validation accuracy" in run["log"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["teacher", "fitnet"]
    assert all(0 <= m["test_accuracy"] <= 1 for m in summary["models"])


@pytest.mark.slow  # a two-trial search in a subprocess, ~50 s; the train CLI's is above
def test_the_tune_cli_runs_on_two_replicas_under_one_strategy(tmp_path):
    # Each trial failed ("Mixing different tf.distribute.Strategy objects": keras-tuner calls
    # fit outside the strategy's scope, where each stage made its optimizer), and the command
    # still exited 0. Stage 1 and the search also made a strategy each.
    run = _mirrored_cli("tune", tmp_path / "search", "--flagfile=configs/tune_smoke.flags",
                        "--max_trials=2")  # fmt: skip
    assert run["status"] == 0, run["log"][-3000:]
    assert run["replicas_of_each_strategy"] == [2]  # one strategy, for stage 1 and the trials
    summary = json.loads((tmp_path / "search" / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED", "COMPLETED"]
    assert summary["best"] is not None


# The SavedModel teachers below are untrained: their answers on the synthetic validation images
# are those of random weights, which the run checks before it distils (fitnets_tf.class_order).
# Unseeded, a few were refused, quickly, as calling classes by other labels or as far below
# chance (3 of seeds 0-199; seed 0's gets 17 of 128 right, where 11.1 are expected by chance).
SEED = 0


@pytest.mark.slow  # a KD run in a subprocess, ~30 s
def test_a_saved_model_teacher_teaches_two_replicas(tmp_path):
    # Loaded in the strategy's scope, its signature asserted in each replica ("executing a graph
    # generated from the cross-replica context in an in-replica context").
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(SEED)  # an untrained teacher the run's checks accept: see SEED
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h))).export(
        tmp_path / "teacher")
    run = _mirrored_cli("train", tmp_path / "run", "--flagfile=configs/smoke.flags",
                        f"--teacher_path={tmp_path / 'teacher'}", "--mode=kd", "--kd_epochs=1",
                        "--nomeasure_latency")  # fmt: skip
    assert run["status"] == 0, run["log"][-3000:]
    assert run["replicas_of_each_strategy"] == [2]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["teacher", "kd"]


@pytest.mark.slow  # a FitNets run in a subprocess, ~40 s
def test_a_saved_model_teacher_gives_hints_to_two_replicas(tmp_path):
    # Its hints come from its graph imported into a function of the replicas' step, whose
    # variable handles are those of the teacher loaded outside the strategy's scope.
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(SEED)  # an untrained teacher the run's checks accept: see SEED
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)), name="net").export(
        tmp_path / "teacher")
    run = _mirrored_cli("train", tmp_path / "run", "--flagfile=configs/smoke.flags",
                        f"--teacher_path={tmp_path / 'teacher'}", "--mode=fitnet",
                        "--hints=net_1/conv_1/Relu:conv2", "--hints_epochs=1", "--kd_epochs=1",
                        "--nomeasure_latency")  # fmt: skip
    assert run["status"] == 0, run["log"][-3000:]
    assert run["replicas_of_each_strategy"] == [2]
    hints = json.loads((tmp_path / "run" / "hints.json").read_text())
    assert '"hint_layer": "net_1.conv_1.Relu"' in json.dumps(hints)


def test_a_strategy_is_made_once_per_process():
    mirrored = distribute.make_strategy("mirrored")
    assert distribute.make_strategy("mirrored") is mirrored
    # On this machine's one CPU, mirrored has one replica: the run's log says so (it said
    # nothing, and a user took the run for a distributed one).
    assert distribute.described(mirrored).startswith(
        "\nstrategy: MirroredStrategy, 1 replica in sync (")  # fmt: skip
    assert distribute.described(mirrored).endswith(": one device, so it trains as it would "
                                                   "without one")  # fmt: skip
    assert distribute.described(distribute.make_strategy("default")) == ""
    with pytest.raises(ConfigError, match="must be one of"):
        distribute.make_strategy("horovod")


def test_models_made_outside_the_strategy_scope_are_refused_with_the_fix(check):
    # Keras' apply_gradients failed with a bare AssertionError (no message) on the first step.
    said = check["refused"]
    for case, named in (("models_outside", "The student variables (conv1/kernel, "),
                        ("distiller_outside", "The student and optimizer variables (")):
        assert said[case]["type"] == "ConfigError", said[case]
        assert said[case]["steps_before"] == 0
        assert said[case]["error"].startswith(named), said[case]["error"]
        assert "inside `with strategy.scope():`" in said[case]["error"]
    assert "trains under (MirroredStrategy:" in said["models_outside"]["error"]
    assert "trains under (DefaultDistributionStrategy:" in said["distiller_outside"]["error"]


def test_steps_per_execution_on_two_replicas_is_refused_before_training(check):
    # Keras 3.15's multi-step loop fails on 2 replicas, its own models too: "You must feed a
    # value for placeholder tensor 'while/body/.../while/cond/Placeholder'" (keras#19246).
    said = check["refused"]["steps_per_execution"]
    assert said["type"] == "ConfigError", said
    assert said["steps_before"] == 0
    assert said["error"].startswith("steps_per_execution=2 on the strategy's 2 replicas")
    assert "steps_per_execution=1" in said["error"]


def test_a_last_batch_split_unevenly_trains_as_on_one_device(check):
    # 35 examples in batches of 8: the last batch's 3 examples went 2 + 1 to the replicas,
    # each replica averaged its own part, and the one example weighed 1/2 of the step's
    # gradient instead of 1/3: the weights ended up to 3% away from one device's.
    one, mirrored = check["partial_last_batch"]["one"], check["partial_last_batch"]["mirrored"]
    for phase in ("hints", "kd"):
        np.testing.assert_allclose(mirrored[phase], one[phase], rtol=2e-3)
    np.testing.assert_allclose(mirrored["weights"], one["weights"], rtol=2e-3)


def test_a_stage_keras_trains_weighs_a_partial_last_batch_as_one_device(check):
    # stages.fit_labels (the teacher, scratch, stagewise_labels' stage 1) runs Keras' own step:
    # each replica divided its mean by the replica count, so the last batch of 3, split 2 + 1,
    # gave its lone example 1/2 of the step's gradient instead of 1/3.
    found = check["labels_partial_last_batch"]
    np.testing.assert_allclose(found["mirrored"]["loss"], found["one"]["loss"], rtol=2e-3)
    np.testing.assert_allclose(found["mirrored"]["weights"], found["one"]["weights"], rtol=2e-3)


@pytest.mark.parametrize("tf_config, said", [
    (None, "TF_CONFIG is not set"),
    ("", "TF_CONFIG is not set"),
    ("{bad json", "TF_CONFIG is not JSON (Expecting property name enclosed in double quotes"),
    ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG has no "cluster"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'TF_CONFIG has no "task"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     'its task is worker 3, but its cluster lists 1 worker'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}',
     'its task is chief 0, but its cluster lists no chief'),
])  # fmt: skip
def test_multi_worker_names_what_is_wrong_with_tf_config(monkeypatch, tf_config, said):
    # TensorFlow's own: a JSONDecodeError or ValueError traceback from the command line, and an
    # unset TF_CONFIG trained one worker alone under the name of a multi-worker run.
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match="--strategy=multi_worker") as refused:
        distribute.make_strategy("multi_worker")
    assert said in str(refused.value)
    assert "multi_worker" not in distribute._MADE
