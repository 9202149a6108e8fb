"""The CLI end to end on configs/smoke.flags, and its refusals of bad input."""

import csv
import json
import os

import pytest
from conftest import cli_run_once, train_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    return cli_run_once(tmp_path_factory, "train-smoke", lambda workdir: train_cli(
        "--flagfile=configs/smoke.flags", f"--workdir={workdir}"))


def test_smoke_run_leaves_a_complete_run_directory(smoke_run):
    workdir, proc = smoke_run
    for path in [
        "flags.txt", "versions.json", "summary.json", "student.keras",
        "student_saved_model/saved_model.pb", "preprocessor.keras", "teacher/teacher.keras",
        "teacher/log.csv", "fitnet/hints/log.csv", "fitnet/kd/log.csv", "fitnet/student.keras",
        "kd/kd/log.csv", "scratch/scratch/log.csv", "stagewise_labels/guided_labels/log.csv",
        "plots/comparison.png", "plots/curves_fitnet.png", "plots/curves_teacher.png",
    ]:  # fmt: skip
        assert (workdir / path).exists(), path
    assert list((workdir / "fitnet" / "kd" / "tensorboard").rglob("events.out.tfevents*"))

    def columns(path):
        with open(workdir / path) as f:
            return set(next(csv.reader(f)))

    assert "hint_loss" in columns("fitnet/hints/log.csv")
    assert {"ce_loss", "kd_loss", "kd_lambda", "temperature", "learning_rate", "accuracy",
            "val_accuracy"} <= columns("fitnet/kd/log.csv")  # fmt: skip
    summary = json.loads((workdir / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["models"]}
    assert list(rows) == ["teacher", "fitnet", "kd", "scratch", "stagewise_labels"]
    for row in rows.values():
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["latency_ms_per_image_batch1"] > 0 and row["train_seconds"] >= 0
    assert rows["fitnet"]["params"] == 36_226 and rows["teacher"]["params"] == 361_066
    assert rows["teacher"]["test_accuracy"] > 0.3  # well above chance (0.1): the teacher learned
    assert set(rows["fitnet"]["stage_seconds"]) == {"hints", "kd"}
    versions = json.loads((workdir / "versions.json").read_text())
    assert versions["seed"] == 0 and versions["tensorflow"]
    # The closing table is printed.
    assert "test acc" in proc.stdout and "stagewise_labels" in proc.stdout


def test_resolved_flagfile_reruns_as_is(smoke_run, tmp_path):
    workdir, _ = smoke_run
    flags = (workdir / "flags.txt").read_text()
    assert "--mode=fitnet,kd,scratch,stagewise_labels" in flags
    # Re-run only the kd stage of a cheap mode from the saved teacher: proves the file parses
    # and that a previous run directory provides the teacher.
    proc = train_cli(f"--flagfile={workdir / 'flags.txt'}", f"--workdir={tmp_path}", "--mode=kd",
                  "--stages=kd", f"--teacher_path={workdir}", "--kd_epochs=1",
                  "--nomeasure_latency")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "kd" / "student.keras").exists()
    assert not (tmp_path / "teacher").exists()


def test_stage_two_alone_needs_stage_one_of_the_same_workdir(smoke_run, tmp_path):
    workdir, _ = smoke_run
    args = ["--flagfile=configs/smoke.flags", "--mode=fitnet", f"--teacher_path={workdir}",
            "--kd_epochs=1", "--nomeasure_latency", f"--workdir={tmp_path}"]  # fmt: skip
    proc = train_cli(*args, "--stages=kd", timeout=120)
    assert proc.returncode != 0 and "run that stage first" in proc.stderr
    assert train_cli(*args, "--stages=hints", timeout=180).returncode == 0
    proc = train_cli(*args, "--stages=kd", timeout=180)  # stage 1 is there now: runs
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stages kd" in proc.stdout and (tmp_path / "fitnet" / "kd" / "student.keras").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature=0"], "--temperature must be > 0"),
        (["--kd_lambda=-1"], "kd_lambda"),
        (["--dataset=imagenet"], "dataset"),
        (["--student=resnet"], "student"),
        (["--mode=joint"], "unknown mode 'joint'"),
        (["--guided_layer=conv99"], "Unknown guided_layer 'conv99'.*conv1"),
        (["--hint_layer=conv1", "--guided_layer=pool2"], "hint map is larger"),
        (["--teacher_path=/nonexistent/teacher.keras"], "No teacher at"),
        (["--flagfile=/nonexistent.flags"], "nonexistent.flags"),
        (["--workdir=/proc/forbidden"], "Cannot write to the run directory"),
        (["--preprocessing=standardize", "--input_mean=0.2860", "--input_std=-0.3530"],
         r"--input_std must be positive and finite \(a standard deviation\), got -0.353"),
    ],
)
def test_bad_input_fails_fast_without_traceback(args, message, tmp_path):
    base = ["--flagfile=configs/smoke.flags", f"--workdir={tmp_path}"]
    proc = train_cli(*base, *args, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(message, proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / "teacher" / "teacher.keras").exists()  # nothing expensive ran


def test_a_refused_configuration_leaves_the_runs_flags_txt_as_it_was(tmp_path):
    # flags.txt is what re-runs (and exports) the run in the directory: a command refused for
    # its other configuration must not replace it with its own.
    from fitnets_tf.run import resume

    resume.RunState(tmp_path, {"seed": 12345}).save()  # a run of another configuration
    (tmp_path / "flags.txt").write_text("--seed=12345\n")
    proc = train_cli("--flagfile=configs/smoke.flags", f"--workdir={tmp_path}", timeout=60)
    assert proc.returncode == 1 and "different configuration" in proc.stderr, proc.stderr[-2000:]
    assert (tmp_path / "flags.txt").read_text() == "--seed=12345\n"


def test_the_fixed_command_runs_where_a_start_refused_before_training_left_files(tmp_path):
    # The refusal came once the data was recorded; the same command with its fix (here other
    # layers, and data of another size) was refused as "not what the run started with".
    base = ["--flagfile=configs/smoke.flags", f"--workdir={tmp_path}", "--teacher_epochs=1",
            "--kd_epochs=1", "--nomeasure_latency"]  # fmt: skip
    proc = train_cli(*base, "--mode=fitnet", "--hint_layer=conv1", "--guided_layer=pool2",
                     "--limit=128", timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "hint map is larger" in proc.stderr, proc.stderr[-2000:]
    assert {"flags.txt", "versions.json", "data.json"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "flags.txt").read_text().startswith("# The resolved flags of the ")
    proc = train_cli(*base, "--mode=kd", "--limit=64", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "data.json").read_text())["examples"]["test"] == 64


def test_a_standardized_run_saves_the_preprocessing_its_teacher_was_fed(tmp_path):
    # A PyTorch teacher trained behind Normalize(mean, std) and exported without it: the run
    # feeds both models that, and its preprocessor.keras (what exports bake in) does it too.
    import keras
    import numpy as np

    import fitnets_tf  # noqa: F401  (registers the Preprocessor the file holds)

    proc = train_cli("--flagfile=configs/smoke.flags", f"--workdir={tmp_path}", "--mode=kd",
                     "--teacher_epochs=1", "--kd_epochs=1", "--limit=64", "--nomeasure_latency",
                     "--preprocessing=standardize", "--input_mean=0.2860", "--input_std=0.3530",
                     timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags_txt = (tmp_path / "flags.txt").read_text()
    assert "--preprocessing=standardize" in flags_txt and "--input_mean=0.286" in flags_txt
    preprocessor = keras.saving.load_model(tmp_path / "preprocessor.keras", safe_mode=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(preprocessor.predict(x, verbose=0), (x / 255 - 0.2860) / 0.3530,
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_a_users_folder_with_its_own_flagfile_is_refused_and_left_as_it_was(tmp_path):
    # --flagfile=flags.txt --workdir=. in the user's project folder: flags.txt, student.keras
    # (their --student) and summary.json were overwritten by the run's.
    (tmp_path / "flags.txt").write_text(
        "# my experiment\n--flagfile=configs/smoke.flags\n--mode=kd\n"
        f"--student={tmp_path / 'student.keras'}\n--workdir={tmp_path}\n"
    )
    (tmp_path / "student.keras").write_bytes(b"the user's architecture file")
    (tmp_path / "summary.json").write_text('{"my": "notes"}')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = train_cli(f"--flagfile={tmp_path / 'flags.txt'}", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert ("is not a run directory, and it holds files a run writes: flags.txt, summary.json, "
            "student.keras. A new run there would replace them. Give an empty or new --workdir."
            in proc.stderr), proc.stderr[-2000:]  # fmt: skip
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_corrupt_teacher_file_is_refused(tmp_path):
    bad = tmp_path / "teacher.keras"
    bad.write_bytes(b"not a zip file")
    proc = train_cli("--flagfile=configs/smoke.flags", f"--workdir={tmp_path / 'run'}",
                  f"--teacher_path={bad}", timeout=60)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "Cannot load the teacher" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--mixed_precision"], ["--jit_compile"]])
def test_mixed_precision_and_xla_runs_on_cpu(tmp_path, extra):
    proc = train_cli("--flagfile=configs/smoke.flags", f"--workdir={tmp_path}", "--mode=fitnet",
                  "--nomeasure_latency", *extra, timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in summary["models"])


def test_the_default_experiment_cut_short_reaches_its_report(tmp_path):
    # The README's first command, on 256 images: its shipped BatchNorm teacher, mixed_bfloat16
    # training and the served float32 copies timed in every runtime. Its report step once
    # failed after 10 minutes of training (a folded copy took the global mixed policy).
    proc = train_cli("--flagfile=configs/fashion_mnist.flags", f"--workdir={tmp_path}",
                     "--mode=fitnet", "--limit=256", "--hints_epochs=1", "--kd_epochs=2",
                     timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = summary["models"]
    assert [r["name"] for r in rows] == ["teacher", "fitnet"]
    assert rows[0]["test_accuracy"] > 0.9  # the shipped teacher, on the 10,000 test images
    # Fashion-MNIST's names (TFDS's), in the summary and inside the served student.
    assert summary["class_names"][0] == "T-shirt/top" and len(summary["class_names"]) == 10
    served = tmp_path / "student_saved_model" / "assets.extra" / "class_names.json"
    assert json.loads(served.read_text()) == summary["class_names"]
    for runtime in ("", "_litert", "_onnxruntime"):
        assert all(r[f"latency_ms_per_image_batch1{runtime}"] > 0 for r in rows)
