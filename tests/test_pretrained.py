"""The shipped teacher: its file matches the manifest, loads safely, and scores as recorded."""

import shutil

import pytest

from fitnets_tf import builders, config, experiment, models, pretrained
from fitnets_tf.errors import ConfigError, TeacherLoadError
from fitnets_tf.run import io, layout
from fitnets_tf.run.resume import RunState

NAME = "fashion_mnist_wide_cnn"


def test_the_default_experiment_uses_a_shipped_teacher_that_a_config_reproduces():
    entry = pretrained.manifest()[NAME]
    assert config.DEFAULT.models.teacher_path == pretrained.PREFIX + NAME
    assert entry["command"].endswith("--flagfile=configs/fashion_mnist_teacher.flags")
    assert entry["test_accuracy"] >= 0.93 and entry["seed"] == 0


def test_shipped_teacher_matches_its_checksum_and_its_recorded_accuracy_on_a_slice():
    entry = pretrained.manifest()[NAME]
    teacher = builders.load_teacher(pretrained.PREFIX + NAME)  # checks the sha256 first
    assert models.count_params(teacher) == entry["params"] == 2_562_362
    assert pretrained.slice_accuracy(teacher) == pytest.approx(entry["slice_accuracy"], abs=1e-3)


@pytest.mark.parametrize(("clone", "restore"), [
    (True, "git checkout -- fitnets_tf/pretrained/"),
    # pip-installed: no checkout to restore from (the message named git).
    (False, "pip install --force-reinstall --no-deps fitnets_tf"),
])  # fmt: skip
def test_a_damaged_shipped_teacher_is_refused_by_name(tmp_path, monkeypatch, clone, restore):
    here = tmp_path / "fitnets_tf" / "pretrained"
    here.mkdir(parents=True)
    if clone:
        (tmp_path / ".git").mkdir()
    shutil.copy(pretrained.MANIFEST, here / "manifest.json")
    damaged = bytearray((pretrained.HERE / f"{NAME}.keras").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (here / f"{NAME}.keras").write_bytes(bytes(damaged))
    monkeypatch.setattr(pretrained, "HERE", here)
    monkeypatch.setattr(pretrained, "MANIFEST", here / "manifest.json")
    with pytest.raises(TeacherLoadError, match=f"{NAME}.*does not match the sha256.*Restore it") as e:
        pretrained.resolve(pretrained.PREFIX + NAME)
    assert restore in str(e.value) and ("git" in str(e.value)) == clone


def test_an_unknown_shipped_teacher_is_a_config_problem():
    assert pretrained.name_problem("pretrained:nope").startswith("no shipped teacher 'nope'")
    assert pretrained.name_problem("runs/x") is None
    with pytest.raises(TeacherLoadError, match="no shipped teacher"):
        pretrained.resolve("pretrained:nope")


def test_publish_ships_a_runs_teacher_in_float32_with_its_manifest_entry(tmp_path, monkeypatch):
    import keras

    from fitnets_tf.run import io, layout

    run = layout.RunLayout(tmp_path / "run")
    run.teacher.parent.mkdir(parents=True)
    run.flags.write_text("--dataset=fashion_mnist\n--seed=3\n")
    RunState(run.root, config.FLAG_DEFAULTS.with_values(seed=3).fingerprint()).save()
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32 afterwards
    io.save_model(models.build("thin_cnn", (28, 28, 1), 10, seed=0), run.teacher)
    keras.config.set_dtype_policy("float32")
    monkeypatch.setattr(pretrained, "HERE", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    entry = pretrained.publish(run.root, "mine", "configs/x.flags")
    assert (entry["seed"], entry["command"]) == (3, "python -m fitnets_tf.train --flagfile=configs/x.flags")
    assert pretrained.manifest() == {"mine": entry}
    shipped = builders.load_teacher("pretrained:mine")
    assert {layer.dtype_policy.compute_dtype for layer in shipped.layers} == {"float32"}
    assert 0 <= entry["slice_accuracy"] <= 1 and entry["params"] == 61_378
    assert entry["recipe"] == config.FLAG_DEFAULTS.with_values(seed=3).fingerprint()


def test_the_shipped_teacher_records_the_recipe_of_its_config():
    recipe = pretrained.manifest()[NAME]["recipe"]
    assert (recipe["teacher"], recipe["teacher_epochs"], recipe["teacher_learning_rate"]) == ("wide_cnn", 15, 0.1)
    # The default experiment loads it; --stages=teacher,... retrains it by that recipe.
    assert not experiment.plan(config.DEFAULT).train_teacher
    retrain = config.DEFAULT.with_values(stages=("teacher", "stage1", "stage2"))
    assert experiment.plan(retrain).train_teacher
    teacher_config = pretrained.recipe_config(retrain)
    # Options added since the recipe was recorded take their defaults (what it trained with).
    assert teacher_config.fingerprint() == {**config.upgrade_fingerprint(recipe), "seed": 0}
    assert teacher_config.data.resize_mode == "stretch"
    assert teacher_config.runtime == retrain.runtime
    assert pretrained.recipe_config(retrain.with_values(seed=4)).schedule.seed == 4
    with pytest.raises(ConfigError, match=r"--crop_padding=4 \(its recipe: 2\).*fashion_mnist_teacher"):
        pretrained.recipe_config(retrain.with_values(crop_padding=4))


def _tiny_shipped_teacher(tmp_path, monkeypatch):
    """A manifest entry ``tiny`` with a recipe and no file: only a retrain can give a teacher."""
    recipe = config.FLAG_DEFAULTS.with_values(dataset="synthetic", limit=128, batch_size=64,
                                              init="he_uniform", teacher_epochs=1)  # fmt: skip
    entry = {"file": "tiny.keras", "sha256": "0" * 64, "recipe": recipe.fingerprint(),
             "command": "python -m fitnets_tf.train --flagfile=configs/tiny.flags"}  # fmt: skip
    io.write_json(tmp_path / "manifest.json", {"tiny": entry})
    monkeypatch.setattr(pretrained, "HERE", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    # The run's own teacher options differ from the recipe's: the recipe wins.
    return recipe.with_values(teacher_path="pretrained:tiny", teacher_epochs=7, modes=("kd",),
                              kd_epochs=1, measure_latency=False)  # fmt: skip


def test_stages_teacher_retrains_a_shipped_teacher_and_its_students_learn_from_it(
    tmp_path, monkeypatch
):
    run = _tiny_shipped_teacher(tmp_path, monkeypatch)
    lines = []
    experiment.run(run.with_values(stages=("teacher",)), tmp_path / "run", log=lines.append)
    assert "== teacher: mnist_teacher on synthetic, retraining pretrained:tiny by its recorded recipe" in lines
    state = RunState(tmp_path / "run", run.fingerprint())
    assert state.done("teacher") and state.stage("teacher")["epochs_done"] == 1  # not 7
    # The shipped file does not exist: the students can only have learned from the retrained one.
    summary = experiment.run(run.with_values(stages=("stage1", "stage2")), tmp_path / "run",
                             log=lines.append)  # fmt: skip
    assert [r["name"] for r in summary["models"]] == ["teacher", "kd"]


def test_a_shipped_teacher_is_not_retrained_under_students_that_learned_from_it(
    tmp_path, monkeypatch
):
    run = _tiny_shipped_teacher(tmp_path, monkeypatch)
    root = layout.prepare(tmp_path / "run")
    state = RunState(root, run.fingerprint())
    state.stage("kd/kd")
    state.save()
    with pytest.raises(ConfigError, match="learned from the shipped teacher pretrained:tiny.*new --workdir"):
        experiment.Experiment(run.with_values(stages=("teacher",)), layout.RunLayout(root))
