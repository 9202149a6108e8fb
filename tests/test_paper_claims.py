"""bench/paper_claims.py: the study's runs and its report (tables, plots, results.md)."""

import json
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

from bench import paper_claims
from fitnets_tf import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _row(name, acc, architecture="mnist_fitnet", params=36_226, mults=5_625_144):
    return {"name": name, "architecture": architecture, "test_accuracy": acc, "params": params,
            "mults": mults, "train_seconds": 120.0, "latency_ms_per_image_batch1": 1.5,
            "latency_ms_per_image_batch128": 0.25}  # fmt: skip


def _run(path, rows, config):
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"models": rows}))
    (path / "run_state.json").write_text(json.dumps({"config": config}))


def test_report_tables_plots_and_results_page(tmp_path):
    config = config_lib.ExperimentConfig().fingerprint()
    teacher = _row("teacher", 0.88, "mnist_teacher", 361_066, 28_673_136)
    _run(tmp_path / "runs" / "teacher", [teacher], config)
    for seed, (fitnet, kd) in enumerate([(0.80, 0.10), (0.84, 0.12)]):
        rows = [teacher, _row("kd", kd), _row("fitnet", fitnet)]
        _run(tmp_path / "runs" / "main" / f"seed{seed}", rows, config)
    for seed, acc in enumerate([0.7, 0.74]):
        rows = [teacher, _row("kd", 0.1), _row("fitnet", acc)]
        _run(tmp_path / "runs" / "depth" / f"mnist_depth7_seed{seed}", rows, config)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text(
        f"# Mine\n\n{paper_claims.BEGIN}\nold\n{paper_claims.END}\nkept\n"
    )
    args = types.SimpleNamespace(workdir=tmp_path / "runs", docs=docs, seeds=(0, 1),
                                 parts=paper_claims.PARTS, command="python bench/paper_claims.py")  # fmt: skip

    text = paper_claims.report(args)

    # Mean ± sample std (min–max) over the seeds, in percent; the teacher from its own run.
    assert "| mnist_fitnet | FitNets (hints + KD) | 82.00 ± 2.83 (80.00–84.00) | 2 |" in text
    assert "| mnist_fitnet | KD | 11.00 ± 1.41 (10.00–12.00) | 2 |" in text
    assert "| mnist_teacher | teacher | 88.00 | 1 | 361,066 | 28.67 |" in text
    assert (
        "FitNets (hints + KD) − KD: +71.00 points (mean over 2 seeds; per seed +70.00, +72.00: "
        "ahead in 2 of 2)"
    ) in text
    assert (
        "| mnist_depth7 | 7 | 36,226 | 5.63 | 2 | — | 10.00 ± 0.00 (10.00–10.00) "
        "| 72.00 ± 2.83 (70.00–74.00) |"
    ) in text
    assert "- 7 layers: FitNets (hints + KD) − KD: +62.00 points (mean over 2 seeds; per seed +60.00, +64.00: ahead in 2 of 2)" in text
    assert (docs / "paper_claims_methods.png").stat().st_size > 10_000
    assert (docs / "paper_claims_depth.png").stat().st_size > 10_000
    assert ", load average not recorded. Fashion-MNIST: " in text  # runs made without a record
    page = (docs / "results.md").read_text()
    assert page.startswith("# Mine\n") and page.endswith(f"{paper_claims.END}\nkept\n")
    assert "old" not in page and text in page


def test_each_training_call_records_the_machine_and_its_load_for_the_headers(tmp_path, monkeypatch):
    # docs/results.md gave the machine of its runs but not its load, which bench/run.py records.
    from fitnets_tf import experiment

    def train(config, workdir, log):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "summary.json").write_text("{}")

    monkeypatch.setattr(experiment, "run", train)
    args = paper_claims.parse(["--workdir", str(tmp_path), "--seeds=0", "--docs", str(tmp_path),
                               "--parts=main"])  # fmt: skip
    paper_claims.run_all(args)  # the teacher, then main/seed0
    paper_claims.run_all(args)  # both finished: nothing trained, nothing recorded

    records = json.loads((tmp_path / paper_claims.MACHINE_FILE).read_text())
    assert sorted(records) == ["main/seed0", "teacher"]
    (call,) = records["teacher"]
    assert len(call["machine"]["load_average_start"]) == 3 and len(call["load_average_end"]) == 3
    assert call["machine"]["cpu_count"] == os.cpu_count() and call["seconds"] >= 0
    assert re.fullmatch(
        r"1-minute load average \d+\.\d–\d+\.\d at the start and end of its 2 training calls "
        r"\(`machine\.json` of the runs\)", paper_claims._load(tmp_path, ("teacher", "main/"))
    )  # fmt: skip
    assert paper_claims._load(tmp_path, ("pair/",)) == "load average not recorded"


def test_configs_share_one_teacher_and_cache_its_outputs(tmp_path):
    args = paper_claims.parse(["--workdir", str(tmp_path), "--seeds=0,1", "--docs", str(tmp_path),
                               "--parts=teacher,main,depth,init"])  # fmt: skip
    runs = paper_claims.configs(args)
    assert list(runs) == [
        "teacher",
        "main/seed0",
        "main/seed1",
        *(f"depth/mnist_depth{d}_seed{s}" for d in paper_claims.DEPTHS for s in (0, 1)),
        "init/seed0",
        "init/seed1",
    ]
    students = [c for name, c in runs.items() if name != "teacher"]
    assert {c.models.teacher_path for c in students} == {str(tmp_path / "teacher")}
    assert all(c.runtime.cache_teacher == "yes" for c in runs.values())
    assert all(c.runtime.stages == ("stage1", "stage2") for c in students)
    assert runs["teacher"].runtime.stages == ("teacher",)
    main = runs["main/seed1"].schedule
    assert main.modes == paper_claims.MAIN_MODES and main.seed == 1
    assert runs["init/seed0"].models.init == "he_uniform"
    for config in runs.values():
        config.validate()


@pytest.mark.slow
def test_whole_study_on_a_slice_of_fashion_mnist(tmp_path):
    # Every part end to end on 256 real examples per split, one epoch per stage (~3 min). In a
    # process of its own, as a user runs it: the script fixes TensorFlow's thread count, which
    # an earlier test of this process may already have started TensorFlow with.
    args = ["--workdir", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs"), "--seeds=0",
            "--limit=256", "--teacher_epochs=1", "--hints_epochs=1", "--kd_epochs=1"]  # fmt: skip

    def study():
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "paper_claims.py"), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    study()
    page = (tmp_path / "docs" / "results.md").read_text()
    for heading in ("Teacher and thin deep student", "He initialisation", "Depth at a fixed"):
        assert heading in page
    assert "| mnist_depth11 | 11 |" in page and "stage-wise on labels + KD" in page
    # A second call finds every run finished and only rewrites the page: the same but for the
    # minute each block says it was generated at (the two calls may straddle one).
    study()
    again = (tmp_path / "docs" / "results.md").read_text()
    assert _unstamped(again).split("\n", 4)[4] == _unstamped(page).split("\n", 4)[4]


def _unstamped(page: str) -> str:
    return re.sub(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d ", "Generated (when) ", page)


def test_pair_part_runs_the_default_experiment_per_seed_and_reports_served_speed(tmp_path):
    args = paper_claims.parse(["--workdir", str(tmp_path), "--seeds=0,1", "--docs", str(tmp_path),
                               "--parts=pair"])  # fmt: skip
    runs = paper_claims.configs(args)
    # No paper teacher to train; stage-wise in its own runs (modes are in the fingerprint).
    assert list(runs) == ["pair/seed0", "pair/seed1", "pair_stagewise/seed0", "pair_stagewise/seed1"]
    assert runs["pair/seed1"] == config_lib.DEFAULT.with_values(seed=1)
    stagewise = runs["pair_stagewise/seed1"]
    assert stagewise == config_lib.DEFAULT.with_values(seed=1, modes=("stagewise_labels",))
    fast = {"latency_ms_per_image_batch1_onnxruntime": 0.04, "latency_ms_per_image_batch128_litert": 0.02,
            "latency_ms_per_image_batch1_litert": 0.03}
    teacher = {**_row("teacher", 0.94, "wide_cnn"), "latency_ms_per_image_batch1_onnxruntime": 0.44,
               "latency_ms_per_image_batch1_litert": 0.25}
    for seed, (fitnet, scratch) in enumerate([(0.927, 0.923), (0.925, 0.926)]):
        rows = [teacher, {**_row("fitnet", fitnet, "thin_cnn"), **fast},
                {**_row("scratch", scratch, "thin_cnn"), **fast}]  # fmt: skip
        _run(tmp_path / "pair" / f"seed{seed}", rows, {})
        rows = [teacher, {**_row("stagewise_labels", 0.921 + seed / 200, "thin_cnn"), **fast}]
        _run(tmp_path / "pair_stagewise" / f"seed{seed}", rows, {})
    text = paper_claims.report(args)
    assert "| thin_cnn | FitNets (hints + KD) | 92.60 ± 0.14 (92.50–92.70) | 2 |" in text
    assert "per seed +0.40, -0.10: ahead in 1 of 2" in text
    assert "| FitNets (hints + KD) | 1.5000 (1.0×) | 0.2500 (1.0×) | 0.0300 (8.3×) | 0.0200 | 0.0400 (11.0×) |" in text
    # The stage-wise runs' teacher row is not counted twice; their students are compared per seed.
    assert "| wide_cnn | teacher | 94.00 ± 0.00 (94.00–94.00) | 2 |" in text
    assert "| thin_cnn | stage-wise on labels + KD | 92.35 ± 0.35 (92.10–92.60) | 2 |" in text
    assert "− stage-wise on labels + KD: +0.25 points (mean over 2 seeds; per seed +0.60, -0.10" in text
    for plot in ("pair_methods.png", "pair_speed.png"):
        assert (tmp_path / plot).stat().st_size > 10_000 and f"]({plot})" in text
    page = (tmp_path / "results.md").read_text()
    assert paper_claims.PAIR_BEGIN in page and paper_claims.BEGIN not in page


def test_depth_with_he_init_goes_to_15_layers_and_reports_over_seeds(tmp_path):
    args = paper_claims.parse(["--workdir", str(tmp_path), "--seeds=0,1", "--docs", str(tmp_path),
                               "--parts=depth_he", "--depth_he_depths=13,15"])  # fmt: skip
    runs = paper_claims.configs(args)
    assert list(runs)[1:] == ["depth_he/mnist_depth13_seed0", "depth_he/mnist_depth13_seed1",
                              "depth_he/mnist_depth15_seed0", "depth_he/mnist_depth15_seed1"]  # fmt: skip
    assert list(runs)[0] == "teacher"  # the paper's teacher guides them
    assert {c.models.init for n, c in runs.items() if n != "teacher"} == {"he_uniform"}
    summaries = {f"mnist_depth15_seed{s}": {"models": [_row("kd", acc, "mnist_depth15"),
                                                        _row("fitnet", 0.8, "mnist_depth15")]}
                 for s, acc in ((0, 0.1), (1, 0.3))}  # fmt: skip
    table = paper_claims.depth_seeds_table(summaries)
    assert table[2] == ("| mnist_depth15 | 15 | 36,226 | 5.63 | 2 | — | 20.00 ± 14.14 (10.00–30.00) "
                        "| 80.00 ± 0.00 (80.00–80.00) |")


def test_a_report_rewrites_only_the_blocks_of_its_parts(tmp_path):
    config = config_lib.ExperimentConfig().fingerprint()
    teacher = _row("teacher", 0.88, "mnist_teacher", 361_066, 28_673_136)
    _run(tmp_path / "runs" / "teacher", [teacher], config)
    _run(tmp_path / "runs" / "main" / "seed0", [teacher, _row("fitnet", 0.8)], config)
    _run(tmp_path / "runs" / "depth_he" / "mnist_depth5_seed0", [teacher, _row("fitnet", 0.8)], config)
    page = f"{paper_claims.BEGIN}\nkept\n{paper_claims.END}\n"
    (tmp_path / "results.md").write_text(page)
    args = paper_claims.parse(["--workdir", str(tmp_path / "runs"), "--docs", str(tmp_path),
                               "--parts=depth_he", "--report_only"])  # fmt: skip
    paper_claims.report(args)
    text = (tmp_path / "results.md").read_text()
    assert text.startswith(page) and paper_claims.DEPTH_HE_BEGIN in text
