"""A run or a search takes only a directory of its own, and never writes over or among its
inputs (run/ownership.py)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from fitnets_tf import config as config_lib
from fitnets_tf import errors, experiment, search
from fitnets_tf.run import ownership, resume, runtime

SMOKE = config_lib.ExperimentConfig().with_values(
    dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", modes=("kd",),
    teacher_epochs=1, kd_epochs=1, batch_size=64, limit=128, measure_latency=False,
)  # fmt: skip


def _contents(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_users_folder_is_refused_before_anything_is_written(tmp_path):
    # --workdir=. in a project folder: the run's final student.keras and summary.json replaced
    # the user's own (the first given as --student), and the run went on.
    (tmp_path / "student.keras").write_bytes(b"the user's architecture file")
    (tmp_path / "summary.json").write_text('{"my": "notes"}')
    (tmp_path / "notes.txt").write_text("not a name a run writes")
    before = _contents(tmp_path)
    config = SMOKE.with_values(student=str(tmp_path / "student.keras"))
    with pytest.raises(errors.WorkdirError, match=r"is not a run directory, and it holds files "
                       r"a run writes: summary.json, student.keras\. .*Give an empty or new "
                       r"--workdir"):  # fmt: skip
        experiment.run(config, tmp_path)
    assert _contents(tmp_path) == before  # not even a lock file


@pytest.mark.parametrize(
    ("flag", "value", "written"),
    [
        ("student", "student.keras", "student.keras"),
        ("teacher_path", "kd/student.keras", "kd"),  # a mode's folder
        ("dataset", "npz:plots/images.npz", "plots"),
    ],
)
def test_a_run_never_writes_over_its_inputs(tmp_path, flag, value, written):
    # Even in a run directory of its own: the input would be replaced by the run's file.
    name = value.removeprefix("npz:")
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"an input")
    config = SMOKE.with_values(**{flag: value.replace(name, str(tmp_path / name))})
    resume.RunState(tmp_path, config.fingerprint()).save()  # a run started here
    with pytest.raises(errors.WorkdirError, match=rf"--{flag} names .*{name}', which the run in "
                       rf".* would replace with its own {written}: a run never writes over its "
                       r"inputs\."):  # fmt: skip
        experiment.run(config, tmp_path)
    assert (tmp_path / name).read_bytes() == b"an input"


def test_a_run_takes_a_new_an_empty_or_its_own_directory(tmp_path):
    ownership.claim(tmp_path / "missing", SMOKE, flags=True)
    ownership.claim(tmp_path, SMOKE, flags=True)  # empty
    (tmp_path / "teacher.keras").write_bytes(b"")  # not a name a run of kd writes
    ownership.claim(tmp_path, SMOKE, flags=True)
    # What a start refused before its first stage left: the CLI's flags.txt...
    flags = tmp_path / "flags.txt"
    flags.write_text(ownership.FLAGS_HEADER + "--mode=kd\n")
    ownership.claim(tmp_path, SMOKE, flags=True)
    # ...and the versions and data a run records first.
    flags.write_text("--mode=kd\n")  # a user's flagfile: no header
    with pytest.raises(errors.WorkdirError, match=r"holds files a run writes: flags.txt\."):
        ownership.claim(tmp_path, SMOKE, flags=True)
    ownership.claim(tmp_path, SMOKE, flags=False)  # a run from Python does not write flags.txt
    (tmp_path / "data.json").write_text("{}")
    versions = tmp_path / "versions.json"
    versions.write_text(json.dumps({"mine": 1}))
    with pytest.raises(errors.WorkdirError, match=r"flags.txt, versions.json, data.json\."):
        ownership.claim(tmp_path, SMOKE, flags=True)
    versions.write_text(json.dumps(runtime.versions(0)))
    ownership.claim(tmp_path, SMOKE, flags=True)
    versions.unlink()
    resume.RunState(tmp_path, SMOKE.fingerprint()).save()  # a run to resume
    ownership.claim(tmp_path, SMOKE, flags=True)


# -- a run directory inside the image folder ---------------------------------------------------


def _image_folder(path):
    for name in ("cat", "dog"):
        (path / name).mkdir(parents=True)
        (path / name / "1.png").write_bytes(b"an image")  # never read: refused before the data
    return path


def _tree(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    ("dataset", "workdir"),
    [("images", "images/run"), ("images", "images"), ("images", "images/cat/run"),
     ("link", "images/run"), ("images", "link/run")],  # either through a symlink to it
)  # fmt: skip
def test_a_workdir_in_the_image_folder_is_refused_before_it_is_made(
    tmp_path, monkeypatch, dataset, workdir
):
    # --dataset=folder:PATH --workdir=PATH/run: the run's folders landed among the class
    # folders, and the next run on PATH read them as a class.
    tmp_path = tmp_path.resolve()  # the paths the message names, resolved
    images = _image_folder(tmp_path / "images")
    (tmp_path / "link").symlink_to(images)
    monkeypatch.chdir(tmp_path)  # relative paths, resolved as the run resolves them
    before = _tree(images)
    where = "the" if workdir == "images" else "inside the"
    real = images / workdir.partition("/")[2] if "/" in workdir else images
    with pytest.raises(errors.WorkdirError) as info:
        experiment.run(SMOKE.with_values(dataset=f"folder:{dataset}"), workdir)
    assert str(info.value) == (
        f"The --workdir '{workdir}' ({real}) is {where} --dataset folder '{dataset}' ({images}): "
        "the run's files and folders would land among its class folders, and a later run on it "
        "would read them as a class. Put the run directory outside the image folder, e.g. "
        f"--workdir={tmp_path / 'runs' / real.name}."
    )
    assert _tree(images) == before  # not even the empty run directory


def test_a_workdir_beside_or_above_the_image_folder_is_taken(tmp_path):
    images = _image_folder(tmp_path / "images")
    config = SMOKE.with_values(dataset=f"folder:{images}")
    ownership.claim(tmp_path / "images_run", config)  # a name that only starts like it
    ownership.claim(tmp_path, config, flags=True)  # --workdir=. holding the images
    ownership.claim_search(tmp_path / "search", config)


def test_the_clis_refuse_a_workdir_in_the_image_folder_and_make_none(tmp_path):
    images = _image_folder(tmp_path.resolve() / "images")
    before = _tree(images)
    for program in ("train", "tune"):
        proc = subprocess.run(
            [sys.executable, "-m", f"fitnets_tf.{program}", "--flagfile=configs/smoke.flags",
             f"--dataset=folder:{images}", f"--workdir={images / 'run'}"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        kind = "run" if program == "train" else "search"
        assert (f"fitnets_tf.{program}: error: The --workdir '{images / 'run'}' is inside the "
                f"--dataset folder '{images}': the {kind}'s files and folders would land among "
                "its class folders" in proc.stderr), proc.stderr[-2000:]  # fmt: skip
        assert _tree(images) == before


# -- a search directory (python -m fitnets_tf.tune) --------------------------------------------

SEARCH_FLAGS = ownership.SEARCH_FLAGS_HEADER + "--mode=kd\n"
USERS_FLAGS = "--mode=kd\n"  # a user's flagfile, and the flags.txt of an earlier version's search


def _write(folder, files: dict) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_a_users_folder_is_refused_as_a_search_directory_before_anything_is_written(tmp_path):
    # --workdir=. in a project folder: the search wrote its results.csv and summary.json over
    # the user's, as nothing checked the tuner's directory.
    _write(tmp_path, {"results.csv": "my,numbers\n", "summary.json": '{"my": "notes"}',
                      "flags.txt": USERS_FLAGS, "notes.txt": "not a name a search writes"})  # fmt: skip
    before = _contents(tmp_path)
    options = search.TuneOptions(max_trials=1, trial_epochs=1)
    with pytest.raises(errors.WorkdirError) as info:
        search.tune(SMOKE, options, tmp_path)
    assert str(info.value) == (
        f"The --workdir '{tmp_path}' is not a search directory, and it holds files a search "
        "writes: results.csv, summary.json. A new search there would replace them. Give an "
        "empty or new --workdir."
    )
    assert _contents(tmp_path) == before  # not even a lock file
    with pytest.raises(errors.WorkdirError, match="holds files a search writes: flags.txt, res"):
        ownership.claim_search(tmp_path, SMOKE, flags=True)  # the CLI writes flags.txt too


DESCRIBED = json.dumps(search.describe(SMOKE, search.TuneOptions()))
ENDED = {"stage1.json": '{"teacher_path": "t.keras"}', "trials/oracle.json": "{}",
         "results.csv": "", "summary.json": "{}", "best.flags": ""}  # fmt: skip


@pytest.mark.parametrize(
    "left",
    [
        {"flags.txt": SEARCH_FLAGS},  # this version's CLI, refused or stopped before stage 1
        # An earlier version's (its flags.txt has no mark): stage 1 under way, ...
        {"flags.txt": USERS_FLAGS, "stage1/versions.json": json.dumps(runtime.versions(0))},
        {"flags.txt": USERS_FLAGS, "stage1/run_state.json": "{}"},
        # ... its description recorded, stage 1 done (no stage1/ with a given teacher), ended.
        {"flags.txt": USERS_FLAGS, "search.json": DESCRIBED},
        {"flags.txt": USERS_FLAGS, **ENDED},
    ],
    ids=["this-version", "stage1-started", "stage1-state", "described", "ended"],
)
def test_a_search_directory_of_this_or_an_earlier_version_is_taken(tmp_path, left):
    _write(tmp_path, left)
    ownership.claim_search(tmp_path, SMOKE, flags=True)
    ownership.claim_search(tmp_path, SMOKE)


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"flags.txt": USERS_FLAGS}, "flags.txt"),
        ({"search.json": '{"mine": 1}', "best.flags": "--mode=kd\n"}, "search.json, best.flags"),
        ({"stage1.json": "[1, 2]"}, "stage1.json"),
        ({"stage1/notes.txt": "mine", "trials/mine.csv": ""}, "stage1/, trials/"),
    ],
)
def test_files_only_named_as_a_searchs_mark_no_search_directory(tmp_path, files, named):
    _write(tmp_path, files)
    with pytest.raises(errors.WorkdirError, match=rf"holds files a search writes: {named}\. "):
        ownership.claim_search(tmp_path, SMOKE, flags=True)


def test_the_tuner_cli_refuses_a_users_folder_with_its_own_flagfile_and_leaves_it(tmp_path):
    # python -m fitnets_tf.tune --flagfile=flags.txt in the user's project folder, which the
    # flagfile names as --workdir: its flags.txt and results.csv were the search's to replace.
    _write(tmp_path, {"flags.txt": f"--flagfile={ROOT}/configs/tune_smoke.flags\n"
                      f"--workdir={tmp_path}\n", "results.csv": "my,numbers\n"})  # fmt: skip
    before = _contents(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "fitnets_tf.tune", f"--flagfile={tmp_path / 'flags.txt'}"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert ("is not a search directory, and it holds files a search writes: flags.txt, "
            "results.csv. A new search there would replace them." in proc.stderr)  # fmt: skip
    assert _contents(tmp_path) == before
