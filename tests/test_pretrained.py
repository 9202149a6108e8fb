"""The shipped teacher: its file matches the manifest, loads safely, and scores as recorded."""

import shutil

import pytest

from fitnets_tf import builders, config, models, pretrained
from fitnets_tf.errors import TeacherLoadError

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


def test_a_damaged_shipped_teacher_is_refused_by_name(tmp_path, monkeypatch):
    shutil.copy(pretrained.MANIFEST, tmp_path / "manifest.json")
    damaged = bytearray((pretrained.HERE / f"{NAME}.keras").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / f"{NAME}.keras").write_bytes(bytes(damaged))
    monkeypatch.setattr(pretrained, "HERE", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    with pytest.raises(TeacherLoadError, match=f"{NAME}.*does not match the sha256.*Restore it"):
        pretrained.resolve(pretrained.PREFIX + NAME)


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
