"""The README's walk-through ("Distill your own model") works as printed."""

import json

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from bench import walkthrough
from fitnets_tf.cli import flags as flag_lib
from fitnets_tf.cli import train, tune  # noqa: F401  (define the flags)

COMMANDS = walkthrough.readme_commands()


@pytest.fixture
def own_files(tmp_path, monkeypatch):
    """What the walk-through says you bring, tiny: 10 class folders, a teacher and a student."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(walkthrough.CLASSES):
        (tmp_path / "images" / f"{k}_{name}").mkdir(parents=True)
        for i in range(2):
            png = tf.io.encode_png(rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)).numpy()
            (tmp_path / "images" / f"{k}_{name}" / f"{i}.png").write_bytes(png)
    walkthrough._cnn((8, 8, 8), "my_teacher", "t").save(tmp_path / "teacher.keras")
    walkthrough._cnn((4, 4, 4, 4), "my_student", "s").save(tmp_path / "student.keras")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_block_is_four_commands_of_the_three_clis():
    clis = ["fitnets-train"] * 2 + ["fitnets-export", "fitnets-tune"]
    assert [c.split()[0] for c in COMMANDS] == clis


@pytest.mark.parametrize("index", [0, 1, 3])
def test_each_train_and_tune_command_describes_a_valid_run_of_the_users_models(own_files, index):
    # The default experiment's shipped teacher and hint pair once leaked into these (a command
    # without a flagfile starts from it): each was refused before anything ran.
    argv = COMMANDS[index].split()
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(argv)
        config = flag_lib.config_from_command_line(argv)
    finally:
        flags.FLAGS.unparse_flags()
    config.validate()
    assert config.models.teacher == "teacher.keras" and config.models.teacher_path is None
    assert config.models.hints in (None, ("auto",))  # list_layers: none given; the runs: auto


def test_step_one_runs_as_printed(own_files):
    (step,) = walkthrough.run_commands(own_files, COMMANDS[:1])
    assert step["exit_status"] == 0, "\n".join(step["stderr_tail"])
    assert "hints=auto chooses t_pool2:s_pool2" in step["stdout"]
    assert not (own_files / "runs").exists()


@pytest.mark.slow  # the four commands on 10 real images per class: about a minute here
def test_the_whole_walkthrough_runs_on_real_images(tmp_path):
    results = tmp_path / "walkthrough.json"
    argv = ["--per_class=10", "--teacher_epochs=1", "--teacher_images=512",
            f"--workdir={tmp_path / 'w'}", f"--results={results}"]  # fmt: skip
    assert walkthrough.main(argv) == 0
    written = json.loads(results.read_text())
    assert [s["exit_status"] for s in written["steps"]] == [0, 0, 0, 0]
    rows = [line.split()[0] for line in written["closing_table"][2:6]]
    assert written["closing_table"][0].startswith("model") and rows == [
        "teacher", "fitnet", "kd", "scratch"]  # fmt: skip
