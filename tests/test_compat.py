"""Run directories and flagfiles written before the restructure still run as they are."""

import json
import pathlib
import shutil

import pytest
from absl import flags

from fitnets_tf import errors
from fitnets_tf.cli import flags as flag_lib
from fitnets_tf.cli import train  # noqa: F401  (defines the flags)
from fitnets_tf.config import upgrade_fingerprint
from fitnets_tf.run.resume import RunState

OLD = pathlib.Path(__file__).parent / "data" / "v0_1"
SMOKE = pathlib.Path(__file__).parent.parent / "configs" / "smoke.flags"


@pytest.fixture
def parse():
    def parse(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", *args])
        return flag_lib.config_from_flags()

    yield parse
    flags.FLAGS.unparse_flags()


def test_an_old_flags_txt_gives_the_config_it_was_written_from(parse):
    old = parse(f"--flagfile={OLD / 'flags.txt'}")
    assert old == parse(f"--flagfile={SMOKE}")
    # `--stages=teacher,hints,kd` (the old names) means the paper's stages 1 and 2.
    assert old.runtime.run_stages() == ("teacher", "stage1", "stage2")


def test_an_old_run_state_resumes_with_todays_fingerprint(parse, tmp_path):
    config = parse(f"--flagfile={SMOKE}")
    stored = json.loads((OLD / "run_state.json").read_text())["config"]
    assert "hparams" in stored and "deterministic" in stored  # the old form
    assert upgrade_fingerprint(stored) == config.fingerprint()
    shutil.copy(OLD / "run_state.json", tmp_path / "run_state.json")
    state = RunState(tmp_path, config.fingerprint())  # no mismatch
    assert state.done("teacher")
    with pytest.raises(errors.ConfigMismatchError, match="seed: 0 there, 1 now"):
        RunState(tmp_path, config.with_values(seed=1).fingerprint())


def test_todays_flagfile_round_trips(parse, tmp_path):
    config = parse(f"--flagfile={SMOKE}", "--stages=teacher,kd", "--seed=3")
    path = tmp_path / "flags.txt"
    path.write_text(flag_lib.resolved_flagfile(config, "runs/x"))
    assert parse(f"--flagfile={path}") == config


def test_a_run_whose_resize_mode_did_nothing_resumes_without_it(tmp_path):
    # Before 2026-12-06 01:18 --resize_mode without --image_size was accepted on an .npz file
    # (its images were read at their size); it is refused now, so such a run resumes without it.
    from fitnets_tf.config import ExperimentConfig

    npz = ExperimentConfig().with_values(dataset=f"npz:{tmp_path / 'd.npz'}")
    old = {**npz.fingerprint(), "resize_mode": "pad"}
    assert upgrade_fingerprint(old) == npz.fingerprint()
    # A folder's images of another size were resized by it: kept.
    folder = npz.with_values(dataset=f"folder:{tmp_path}", resize_mode="pad")
    assert upgrade_fingerprint(folder.fingerprint())["resize_mode"] == "pad"
    sized = npz.with_values(image_size=(8, 8), resize_mode="pad")
    assert upgrade_fingerprint(sized.fingerprint()) == sized.fingerprint()


def test_a_run_from_before_standardize_resumes_and_a_standardized_run_keeps_its_values(
    parse, tmp_path
):
    # Fingerprints written before --input_mean and --input_std have neither: their runs fed
    # what the defaults feed (no standardization), and resume.
    config = parse(f"--flagfile={SMOKE}")
    before = {k: v for k, v in config.fingerprint().items()
              if k not in ("input_mean", "input_std")}  # fmt: skip
    assert upgrade_fingerprint(before) == config.fingerprint()
    given = ("--preprocessing=standardize", "--input_mean=0.485,0.456,0.406", "--input_std=0.25")
    standardized = parse(f"--flagfile={SMOKE}", *given, "--channels=3")
    assert standardized.data.input_mean == (0.485, 0.456, 0.406)
    assert standardized.data.input_std == (0.25,)
    path = tmp_path / "flags.txt"
    path.write_text(flag_lib.resolved_flagfile(standardized, "runs/x"))
    assert "--input_mean=0.485,0.456,0.406" in path.read_text()
    assert parse(f"--flagfile={path}") == standardized
    RunState(tmp_path, standardized.fingerprint()).save()
    RunState(tmp_path, standardized.fingerprint())  # the same: resumes
    with pytest.raises(errors.ConfigMismatchError, match="input_std"):
        RunState(tmp_path, standardized.with_values(input_std=(0.229,)).fingerprint())
