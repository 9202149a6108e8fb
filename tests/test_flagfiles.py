"""A flagfile's bad line is named with its file, number and fix, before TensorFlow loads."""

import os
import re
import subprocess
import sys

import pytest

from fitnets_tf.cli import flagfiles, startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "line, fix",
    [("mode=fitnet", "Write it as --mode=fitnet."),
     ("mode fitnet", "Write it as --mode=fitnet."),
     ("-mode fitnet", "with the value after '=', not a space. Write it as --mode=fitnet."),
     ("--learning_rate = 0.1", "Write it as --learning_rate=0.1."),
     ("--flagfile base.flags", "Write it as --flagfile=base.flags."),
     ("  # a comment", "a comment must start in the line's first column")],
)  # fmt: skip
def test_a_malformed_line_is_told_how_to_write_it(line, fix):
    assert fix in flagfiles.problem(line)


@pytest.mark.parametrize("line", ["--mode=fitnet", "-mode=fitnet", "--mode=fit net", "--nolatency",
                                  "--"])
def test_a_well_formed_line_passes(line):
    assert flagfiles.problem(line) is None


def test_an_unknown_flag_is_named_with_the_closest_one():
    def known(name):
        return name in ("mode", "latency") or name == "nolatency"

    assert flagfiles.problem("--nolatency", known, ("mode", "latency")) is None
    message = flagfiles.problem("--mdoe=fitnet", known, ("mode", "latency"))
    assert message == "there is no flag --mdoe. Did you mean --mode? --helpfull lists the flags."


def test_nested_flagfiles_are_followed_with_their_own_line_numbers(tmp_path):
    (tmp_path / "base.flags").write_text("# base\n--dataset=synthetic\nmode=kd\n")
    top = tmp_path / "top.flags"
    top.write_text(f"--flagfile={tmp_path / 'base.flags'}\n\n--kd_epochs=1\n")
    argv = ["prog", "-flagfile", str(top), "--", "--flagfile=ignored.flags"]
    assert flagfiles.flagfile_paths(argv) == [str(top)]
    lines = list(flagfiles.flag_lines(str(top)))
    assert lines == [flagfiles.Line(str(tmp_path / "base.flags"), 2, "--dataset=synthetic"),
                     flagfiles.Line(str(tmp_path / "base.flags"), 3, "mode=kd"),
                     flagfiles.Line(str(top), 3, "--kd_epochs=1")]  # fmt: skip


@pytest.mark.parametrize(
    "args, level",
    [([], None), (["-v", "1"], 1), (["--verbosity=0"], 0), (["-v=-1", "--v", "2"], 2)],
)
def test_verbosity_is_read_as_absl_reads_it(args, level):
    assert startup.verbosity(args) == level


def test_a_bad_flagfile_line_exits_2_in_one_short_message_before_tensorflow(tmp_path):
    # It printed the program's whole --help (hundreds of lines) after importing TensorFlow.
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--dataset=synthetic\nmode=fitnet\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fitnets_tf.train", f"--flagfile={flagfile}",
         f"--workdir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2
    assert errors == ["fitnets_tf.train: error in a flagfile:",
                      f"  {flagfile}:2: 'mode=fitnet': it is not a flag. Write it as "
                      "--mode=fitnet."]  # fmt: skip
    # Refused before TensorFlow was imported (-X importtime lists every module imported).
    assert not re.search(r"\|\s+tensorflow$", done.stderr, re.MULTILINE)
    assert not (tmp_path / "run").exists()


def test_an_unknown_flag_in_a_flagfile_is_named_with_its_line(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--dataset=synthetic\n\n--mdoe=fitnet\n")
    done = subprocess.run(
        [sys.executable, "-m", "fitnets_tf.export", f"--flagfile={flagfile}", "--workdir=x"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{flagfile}:3: '--mdoe=fitnet': there is no flag --mdoe." in done.stderr


def test_a_stray_argument_is_one_line_not_the_whole_help(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fitnets_tf.export", f"--workdir={tmp_path}", "format=onnx"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 2 and "--[no]overwrite" not in done.stderr  # no flag listing
    assert done.stderr.splitlines()[-1] == ("fitnets_tf.export: error: Unexpected arguments: "
                                            "format=onnx. Flags are --name=value; --helpshort "
                                            "lists them.")  # fmt: skip


@pytest.mark.parametrize(
    "argv, orig_argv, program",
    [(["/venv/bin/fitnets-export", "--workdir=r"], None, "fitnets_tf.export"),
     (["-m", "--flagfile=x"], ["python", "-W", "ignore", "-m", "fitnets_tf.tune", "--flagfile=x"],
      "fitnets_tf.tune"),
     (["-m"], ["python", "-m", "pytest"], None),  # a package importing fitnets_tf
     (["notebook.py"], ["python", "notebook.py"], None)],
)  # fmt: skip
def test_only_fitnets_tfs_own_programs_are_prepared(monkeypatch, argv, orig_argv, program):
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv or ["python", *argv])
    assert startup.program_of_process() == program


def test_a_nested_flagfile_that_cannot_be_opened_is_named_with_its_line_and_folder(
        tmp_path, monkeypatch, capsys):  # fmt: skip
    # absl reads a relative --flagfile inside a flagfile from the current folder, not the
    # flagfile's, and its message names neither the line nor that folder.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "base.flags").write_text("--dataset=synthetic\n")
    top = tmp_path / "conf" / "top.flags"
    top.write_text("# mine\n--flagfile=base.flags\n--kd_epochs=1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        flagfiles.check(["prog", f"--flagfile={top}"], "prog")
    assert exit_.value.code == flagfiles.USAGE_EXIT_STATUS
    err = capsys.readouterr().err
    assert f"{top}:2: '--flagfile=base.flags': cannot read the flagfile" in err, err
    assert str(tmp_path / "base.flags") in err and "current folder" in err, err
    assert f"--flagfile={tmp_path / 'conf' / 'base.flags'}" in err, err
