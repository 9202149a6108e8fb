"""bench/quickstart.py: the README's quick commands, how they are run, and the result file."""

import json
import pathlib
import subprocess

import pytest

from bench import quickstart, timed_command


def test_the_readmes_quick_commands():
    assert quickstart.readme_commands(quickstart.README.read_text()) == {
        "train_smoke": ".venv/bin/python -m fitnets_tf.train --flagfile=configs/smoke.flags",
        "tune_smoke": ".venv/bin/python -m fitnets_tf.tune --flagfile=configs/tune_smoke.flags "
        "--workdir=/tmp/t",
    }


def test_the_readmes_full_search_command():
    assert quickstart.readme_commands(quickstart.README.read_text(), quickstart.FULL_SEARCH) == {
        "tune_fashion_mnist": ".venv/bin/python -m fitnets_tf.tune "
        "--flagfile=configs/tune_fashion_mnist.flags",
    }


def test_a_readme_without_the_command_is_refused():
    with pytest.raises(SystemExit, match="--flagfile=configs/tune_smoke.flags"):
        quickstart.readme_commands(
            ".venv/bin/python -m fitnets_tf.train --flagfile=configs/smoke.flags"
        )


def test_as_run_swaps_the_interpreter_and_the_workdir():
    work = pathlib.Path("/tmp/q w/tune_smoke")
    assert quickstart.as_run(".venv/bin/python -m m --flagfile=f --workdir=/tmp/t --x=1", "/p y",
                             work) == "'/p y' -m m --flagfile=f --workdir='/tmp/q w/tune_smoke' --x=1"  # fmt: skip
    assert quickstart.as_run("fitnets-train --flagfile=f", "/p", pathlib.Path("/w")) == (
        "fitnets-train --flagfile=f --workdir=/w"
    )


def test_each_command_is_timed_and_appended_to_the_history(tmp_path):
    # Fake commands: each sees its own workdir flag, output and exit status are kept.
    commands = {"ok": "printf 'a\\nb\\n'; echo", "fails": ".venv/bin/python -c 'exit(3)'"}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    timed = quickstart.time_commands(commands, tmp_path, scratch, python="python3")
    assert [(t["name"], t["exit_status"]) for t in timed] == [("ok", 0), ("fails", 3)]
    assert timed[0]["output_tail"] == ["a", "b", f"--workdir={scratch / 'ok'}"]
    assert timed[1]["command"] == f"python3 -c 'exit(3)' --workdir={scratch / 'fails'}"
    assert timed[1]["readme_command"] == commands["fails"]
    assert {"wall_s", "user_s", "max_rss_kb", "load_start", "load_end", "date"} <= set(timed[0])
    results = tmp_path / "results" / "quickstart.json"
    quickstart.append_history({"date": "d1", "commands": timed}, results)
    quickstart.append_history({"date": "d2", "commands": []}, results)
    history = json.loads(results.read_text())["history"]
    assert [h["date"] for h in history] == ["d1", "d2"]
    assert history[0]["commands"][1]["exit_status"] == 3


def test_a_results_file_of_another_shape_is_not_overwritten(tmp_path):
    results = tmp_path / "quickstart.json"
    results.write_text('{"wall_s": 1}')
    with pytest.raises(SystemExit, match="no 'history' list"):
        quickstart.append_history({}, results)
    assert results.read_text() == '{"wall_s": 1}'


def test_revision_names_the_commit_and_uncommitted_changes(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, capture_output=True, text=True, check=True).stdout  # fmt: skip

    git("init", "-q")
    (tmp_path / "a").write_text("1")
    git("add", "a")
    git("commit", "-q", "-m", "one")
    commit = git("rev-parse", "--short", "HEAD").strip()
    assert timed_command.revision(tmp_path) == {"commit": commit, "dirty": False}
    (tmp_path / "a").write_text("2")
    assert timed_command.revision(tmp_path) == {"commit": commit, "dirty": True}
