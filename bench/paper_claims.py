"""The paper's claims on real Fashion-MNIST, on a CPU; writes docs/results.md and its plots.

    python bench/paper_claims.py                         # every part: over 4 h on 2 cores (docs/results.md)
    python bench/paper_claims.py --parts=main --seeds=0  # a subset
    python bench/paper_claims.py --report_only           # rebuild docs/ from the runs so far

Parts (see docs/results.md for what each one asks):

- ``teacher``: ``mnist_teacher`` trained once; every student below learns from this one teacher,
  as in the paper.
- ``main``: the thin deep ``mnist_fitnet`` trained from the same initial weights by labels alone
  (``scratch``), KD, FitNets (hints then KD, λ annealed) and stage-wise training on labels
  (``stagewise_labels``), with the paper's initialisation, once per seed.
- ``depth``: Figure 2 in small: Table 6's depth nets at half width (``mnist_depth{5,7,9,11}``,
  all ~5.5M multiplications, the budget of ``mnist_fitnet``) by labels, KD and FitNets.
- ``init``: labels, KD and FitNets again with He initialisation, where back-propagation alone
  does train this student.
- ``depth_he``: the depth question with a modern initialisation (He uniform): 5 to 15 layers
  (``mnist_depth13``/``15`` go beyond Table 6) at the same budget, by labels, KD and FitNets,
  once per seed (``--depth_he_depths`` narrows it to the depths that decide the question).
- ``pair``: the default experiment (``configs/fashion_mnist.flags``: the shipped ``wide_cnn``
  teacher, the ``thin_cnn`` student by FitNets, KD and labels alone, its modern recipe) once
  per seed, with its latencies in TensorFlow, LiteRT and ONNX Runtime. Seed 0 is the README's
  run: pass ``--pair_seed0=runs/fashion_mnist`` to count a finished default run instead of
  training it again.

Each (part, arm, seed) is one :func:`fitnets_tf.experiment.run` directory under ``--workdir``:
a killed run resumes where it stopped, a finished one is skipped. The 10K validation split
picks each stage's best epoch (early stopping with ``--patience``); test accuracy is measured
once, on the 10K test split. Teacher outputs are cached (``cache_teacher``): the same batches
and targets as a live teacher, at about the cost of a plain student epoch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import claims_plots  # noqa: E402 (after the path is set)

PARTS = ("teacher", "main", "depth", "init", "pair", "depth_he")
DEPTHS_HE = (5, 7, 9, 11, 13, 15)
PAIR_MODES = ("fitnet", "kd", "scratch")  # the default experiment's, in its order
MAIN_MODES = ("scratch", "kd", "fitnet", "stagewise_labels")
DEPTH_MODES = ("scratch", "kd", "fitnet")
DEPTHS = (5, 7, 9, 11)
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"
PAIR_BEGIN, PAIR_END = "<!-- pair:begin -->", "<!-- pair:end -->"
DEPTH_HE_BEGIN, DEPTH_HE_END = "<!-- depth_he:begin -->", "<!-- depth_he:end -->"
# Beside the runs: per run, each call that trained it, with the machine and its load average.
MACHINE_FILE = "machine.json"
LABELS = {
    "teacher": "teacher",
    "scratch": "labels only (back-propagation)",
    "kd": "KD",
    "fitnet": "FitNets (hints + KD)",
    "stagewise_labels": "stage-wise on labels + KD",
}


def configs(args) -> dict[str, object]:
    """Every run of the study: run directory (relative) -> ExperimentConfig."""
    from fitnets_tf import config as config_lib

    base = config_lib.FLAG_DEFAULTS.with_values(
        teacher_epochs=args.teacher_epochs,
        hints_epochs=args.hints_epochs,
        kd_epochs=args.kd_epochs,
        early_stopping_patience=args.patience,
        limit=args.limit,
        cache_teacher="yes",
    )
    teacher = base.with_values(modes=("fitnet",), stages=("teacher",),
                                  early_stopping_patience=args.teacher_patience)  # fmt: skip
    students = base.with_values(
        stages=("stage1", "stage2"), teacher_path=str(args.workdir / "teacher")
    )
    runs = {}
    if "teacher" in args.parts:
        runs["teacher"] = teacher
    for seed in args.seeds:
        if "main" in args.parts:
            runs[f"main/seed{seed}"] = students.with_values(modes=MAIN_MODES, seed=seed)
    if "depth" in args.parts:
        for depth in DEPTHS:
            for seed in args.seeds:
                runs[f"depth/mnist_depth{depth}_seed{seed}"] = students.with_values(
                    student=f"mnist_depth{depth}", modes=DEPTH_MODES, seed=seed
                )
    if "depth_he" in args.parts:
        for depth in args.depth_he_depths:
            for seed in args.seeds:
                runs[f"depth_he/mnist_depth{depth}_seed{seed}"] = students.with_values(
                    student=f"mnist_depth{depth}", modes=DEPTH_MODES, init="he_uniform", seed=seed
                )
    # The default experiment's own recipe; --limit (a smoke run) slices its data too.
    pair = config_lib.DEFAULT.with_values(limit=args.limit)
    for seed in args.seeds:
        if "pair" in args.parts:
            runs[f"pair/seed{seed}"] = pair.with_values(seed=seed)
    for seed in args.seeds:
        if "pair" in args.parts:
            # Its own run: the mode list is part of a run's fingerprint, and seed 0 of the
            # pair may be the README's finished run. Same seed = same initial weights.
            runs[f"pair_stagewise/seed{seed}"] = pair.with_values(
                seed=seed, modes=("stagewise_labels",)
            )
    for seed in args.seeds:
        if "init" in args.parts:
            runs[f"init/seed{seed}"] = students.with_values(
                modes=DEPTH_MODES, init="he_uniform", seed=seed
            )
    return runs


def run_all(args) -> None:
    from bench.run import machine
    from fitnets_tf import experiment

    for name, config in configs(args).items():
        if name == "pair/seed0" and args.pair_seed0:
            _link(args.workdir / name, pathlib.Path(args.pair_seed0).resolve())
        start = time.perf_counter()
        what = (
            "teacher"
            if name == "teacher"
            else f"{config.models.student}, modes {', '.join(config.schedule.modes)}"
        )
        print(f"[claims] {name}: {what}", flush=True)
        finished = (args.workdir / name / "summary.json").exists()  # then nothing is trained
        started_on = machine()
        experiment.run(config, args.workdir / name, log=lambda m: print(m, flush=True))
        if not finished:
            _record_machine(args.workdir, name, started_on, time.perf_counter() - start)
        print(f"[claims] {name} done in {time.perf_counter() - start:.0f} s", flush=True)


def _record_machine(workdir: pathlib.Path, name: str, started_on: dict, seconds: float) -> None:
    """Appends one training call of run ``name`` to ``workdir/MACHINE_FILE``: the machine and
    its load average at the call's start (``bench.run.machine``, as ``bench/run.py`` records
    them), the load average at its end, and its length."""
    from fitnets_tf.run import io

    path = workdir / MACHINE_FILE
    records = json.loads(path.read_text()) if path.exists() else {}
    records.setdefault(name, []).append({
        "date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "seconds": round(seconds, 1),
        "machine": started_on, "load_average_end": os.getloadavg(),
    })  # fmt: skip
    io.write_json(path, records)


def _load(workdir: pathlib.Path, prefixes: tuple[str, ...]) -> str:
    """The 1-minute load average over the recorded training calls of the runs whose names
    start with one of ``prefixes``, for a block's header."""
    path = workdir / MACHINE_FILE
    records = json.loads(path.read_text()) if path.exists() else {}
    calls = [c for name, found in records.items() if name.startswith(prefixes) for c in found]
    if not calls:
        return "load average not recorded"
    loads = [v for c in calls for v in (c["machine"]["load_average_start"][0],
                                        c["load_average_end"][0])]  # fmt: skip
    return (
        f"1-minute load average {min(loads):.1f}–{max(loads):.1f} at the start and end of its "
        f"{len(calls)} training call{'s' * (len(calls) > 1)} (`{MACHINE_FILE}` of the runs)"
    )


def _link(run_dir: pathlib.Path, finished: pathlib.Path) -> None:
    """Counts a finished run of the same config as ``run_dir`` (its fingerprint is checked by
    the run itself: a different config is refused, not mixed)."""
    if not run_dir.exists():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.symlink_to(finished, target_is_directory=True)


# ------------------------------------------------------------------------------- report


def _summaries(workdir: pathlib.Path, prefix: str) -> dict[str, dict]:
    found = {}
    for path in sorted(workdir.glob(f"{prefix}*/summary.json")):
        found[path.parent.name] = json.loads(path.read_text())
    return found


def _rows_by_mode(summaries: dict[str, dict]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for summary in summaries.values():
        for row in summary["models"]:
            rows.setdefault(row["name"], []).append(row)
    return rows


def _stats(values: list[float]) -> dict:
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def _acc(stats: dict) -> str:
    text = f"{100 * stats['mean']:.2f}"
    if stats["n"] > 1:
        text += f" ± {100 * stats['std']:.2f} ({100 * stats['min']:.2f}–{100 * stats['max']:.2f})"
    return text


def _median(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _ms(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def method_table(rows_by_mode: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| model | trained by | test accuracy % (mean ± std (min–max)) | seeds | parameters "
        "| M multiplications | ms / image, batch 1 | ms / image, batch 128 | train minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, rows in rows_by_mode.items():
        stats = _stats([r["test_accuracy"] for r in rows])
        b1 = _ms(_median(rows, "latency_ms_per_image_batch1"), 3)
        b128 = _ms(_median(rows, "latency_ms_per_image_batch128"), 4)
        train = [r["train_seconds"] for r in rows if r.get("train_seconds")]
        lines.append(
            f"| {rows[0]['architecture']} | {LABELS.get(mode, mode)} | {_acc(stats)} | "
            f"{len(rows)} | {rows[0]['params']:,} | {rows[0]['mults'] / 1e6:.2f} | "
            f"{b1} | {b128} | " + (f"{statistics.fmean(train) / 60:.1f}" if train else "—") + " |"
        )
    return lines


RUNTIMES = (("TensorFlow", ""), ("LiteRT", "_litert"), ("ONNX Runtime", "_onnxruntime"))


def serving_table(rows_by_mode: dict[str, list[dict]]) -> list[str]:
    """Median ms / image per runtime and batch size, and the speed-up over the teacher."""
    lines = ["| model | " + " | ".join(f"{r} b{b}" for r, _ in RUNTIMES for b in (1, 128)) + " |",
             "|---|" + "---|" * 2 * len(RUNTIMES)]  # fmt: skip
    keys = [f"latency_ms_per_image_batch{b}{suffix}" for _, suffix in RUNTIMES for b in (1, 128)]
    teacher = {k: _median(rows_by_mode.get("teacher", []), k) for k in keys}
    for mode, rows in rows_by_mode.items():
        cells = []
        for key in keys:
            ms = _median(rows, key)
            ratio = (
                f" ({teacher[key] / ms:.1f}×)" if ms and teacher[key] and mode != "teacher" else ""
            )
            cells.append(_ms(ms, 4) + ratio)
        lines.append(f"| {LABELS.get(mode, mode)} | " + " | ".join(cells) + " |")
    return lines


def _comparison(rows_by_mode: dict[str, list[dict]], a: str, b: str) -> str | None:
    """Mean difference in points and, for methods run in the same runs, the per-seed ones."""
    if a not in rows_by_mode or b not in rows_by_mode:
        return None
    accs = {m: [100 * r["test_accuracy"] for r in rows_by_mode[m]] for m in (a, b)}
    diff = statistics.fmean(accs[a]) - statistics.fmean(accs[b])
    text = f"{LABELS[a]} − {LABELS[b]}: {diff:+.2f} points (mean over {len(accs[a])} seeds"
    if b != "teacher" and len(accs[a]) == len(accs[b]) > 1:
        # Same seed = same initial weights and data order for both methods.
        paired = [x - y for x, y in zip(accs[a], accs[b], strict=True)]
        wins = sum(d > 0 for d in paired)
        text += (
            f"; per seed {', '.join(f'{d:+.2f}' for d in paired)}: ahead in {wins} of {len(paired)}"
        )
    return text + ")"


def rows_by_depth(summaries: dict[str, dict]) -> dict[int, dict[str, list[dict]]]:
    """Per depth, each method's rows over seeds (run names ``mnist_depth{d}_seed{s}``)."""
    found: dict[int, dict[str, list[dict]]] = {}
    for name, summary in summaries.items():
        depth = int(name.split("depth")[1].split("_")[0])
        for row in summary["models"]:
            if row["name"] in DEPTH_MODES:
                found.setdefault(depth, {}).setdefault(row["name"], []).append(row)
    return dict(sorted(found.items()))


def depth_seeds_table(summaries: dict[str, dict]) -> list[str]:
    """Per depth, each method's test accuracy over seeds."""
    lines = ["| student | layers | parameters | M multiplications | seeds | "
             + " | ".join(f"{LABELS[m]} %" for m in DEPTH_MODES) + " |",
             "|---|---|---|---|---|" + "---|" * len(DEPTH_MODES)]  # fmt: skip
    for depth, rows in rows_by_depth(summaries).items():
        any_row = next(iter(rows.values()))[0]
        cells = [_acc(_stats([r["test_accuracy"] for r in rows[m]])) if m in rows else "—"
                 for m in DEPTH_MODES]  # fmt: skip
        seeds = max(len(r) for r in rows.values())
        lines.append(f"| mnist_depth{depth} | {depth} | {any_row['params']:,} | "
                     f"{any_row['mults'] / 1e6:.2f} | {seeds} | " + " | ".join(cells) + " |")  # fmt: skip
    return lines


def _config_of(run_dir: pathlib.Path) -> dict:
    from fitnets_tf.config import upgrade_fingerprint
    from fitnets_tf.run.layout import RunLayout

    # Runs made before the configuration had sections recorded it in another form.
    return upgrade_fingerprint(json.loads(RunLayout(run_dir).run_state.read_text())["config"])


def _size(limit, full: int) -> str:
    return f"{min(limit, full) if limit else full:,}"


def _cpu() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "CPU")


def depth_he_section(args, teacher: dict, summaries: dict[str, dict]) -> str:
    """The depth question with He initialisation: the table over seeds, under its settings."""
    s = _config_of(next(args.workdir.glob("depth_he/*")))
    claims_plots.plot_depth(rows_by_depth(summaries), args.docs / "depth_he.png",
                            "He initialisation: mean, bars min–max over seeds")  # fmt: skip
    return "\n".join([
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `{args.command}`; {_cpu()}, "
        f"{os.cpu_count()} cores, no GPU, {_load(args.workdir, ('teacher', 'depth_he/'))}. "
        "The paper's teacher (`mnist_teacher`, "
        f"{100 * teacher['test_accuracy']:.2f}% test) guides every net; He-uniform initialisation; "
        f"{s['hints_epochs']} epochs of stage 1 and {s['kd_epochs']} of stage 2 (labels only: "
        f"{s['kd_epochs']}), RMSProp lr {s['learning_rate']:g}, τ = {s['temperature']:g}, λ "
        f"{s['kd_lambda']:g} → {s['lambda_end']:g}; the best validation epoch kept.",
        "", "### Depth at a fixed budget with He initialisation (5 to 15 layers)", "",
        *depth_seeds_table(summaries), "",
        *_depth_comparisons(summaries), "",
        "![test accuracy by depth, He initialisation](depth_he.png)", "",
    ])  # fmt: skip


def _depth_comparisons(summaries: dict[str, dict]) -> list[str]:
    """Paired per-seed differences at each depth run with more than one seed."""
    lines = []
    for depth, rows in rows_by_depth(summaries).items():
        if max(len(r) for r in rows.values()) > 1:
            found = [_comparison(rows, "fitnet", "kd"), _comparison(rows, "fitnet", "scratch")]
            lines += [f"- {depth} layers: {c}" for c in found if c]
    return lines


def pair_section(
    pair: dict[str, dict], stagewise: dict[str, dict], docs: pathlib.Path
) -> list[str]:
    """The default experiment over seeds: accuracy, paired differences, served latency, plots."""
    by_mode = _rows_by_mode(pair)
    by_mode.update({m: r for m, r in _rows_by_mode(stagewise).items() if m != "teacher"})
    rows = {m: by_mode[m] for m in ("teacher", *PAIR_MODES, "stagewise_labels") if m in by_mode}
    lines = ["### The default experiment over seeds: wide_cnn → thin_cnn (shipped teacher)", "",
             "The teacher is the same shipped file in every run (it is not retrained per seed); "
             "each seed changes the students' initial weights, data order and augmentation. "
             "Stage-wise training on labels (stage 1 on the labels: the student up to its guided layer "
             "with a temporary classifier head, in place of hints; then the same KD) is its own run "
             "per seed, from the same initial weights.",
             "", *method_table(rows), ""]  # fmt: skip
    lines += [f"- {c}" for c in (_comparison(rows, "fitnet", "kd"),
                                 _comparison(rows, "fitnet", "scratch"),
                                 _comparison(rows, "kd", "scratch"),
                                 _comparison(rows, "fitnet", "stagewise_labels"),
                                 _comparison(rows, "fitnet", "teacher")) if c]  # fmt: skip
    lines += ["", "Served latency, ms / image (median over seeds; speed-up over the teacher):", "",
              *serving_table(rows), ""]  # fmt: skip
    claims_plots.plot_methods({"wide_cnn → thin_cnn, over seeds": rows}, docs / "pair_methods.png")
    key = "latency_ms_per_image_batch1_litert"
    claims_plots.plot_speed(rows, key, "LiteRT, batch 1,", docs / "pair_speed.png")
    lines += ["![test accuracy by method, default experiment](pair_methods.png) "
              "![test accuracy against LiteRT latency](pair_speed.png)", ""]  # fmt: skip
    return lines


def _claims_header(args, teacher_run: dict, s: dict) -> str:
    """The settings the paper study's runs were made with, as their run directories recorded."""
    t, workdir = teacher_run, args.workdir
    return (
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `{args.command}` from the runs "
        f"in `{workdir.relative_to(ROOT) if workdir.is_relative_to(ROOT) else workdir}`; "
        f"{_cpu()}, {os.cpu_count()} cores, no GPU, "
        f"{_load(workdir, ('teacher', 'main/', 'init/', 'depth/'))}. Fashion-MNIST: "
        f"{_size(s['limit'], 50_000)} training, {_size(s['limit'], 10_000)} validation "
        f"(early stopping on validation accuracy, patience {s['early_stopping_patience']}, best "
        f"epoch kept), {_size(s['limit'], 10_000)} test images. Teacher: {t['teacher_epochs']} "
        f"epochs at most (patience {t['early_stopping_patience']}), dropout "
        f"{t['teacher_dropout'] if t['teacher_dropout'] is not None else 'as in the paper'}. "
        f"Students: {s['hints_epochs']} epochs of stage 1 and {s['kd_epochs']} of stage 2 "
        f"({s['kd_epochs']} on labels only); RMSProp lr {s['learning_rate']:g}, τ = "
        f"{s['temperature']:g}, λ {s['kd_lambda']:g} → {s['lambda_end']:g}, batch "
        f"{s['batch_size']}. Spread is over student seeds (weights and data order); the teacher "
        "is the same in every run."
    )


def _methods_lines(title: str, rows: dict[str, list[dict]], versus: tuple[str, ...]) -> list[str]:
    lines = [f"### {title}", "", *method_table(rows), ""]
    lines += [f"- {c}" for c in (_comparison(rows, "fitnet", b) for b in versus) if c]
    return [*lines, ""]


def claims_section(args, teacher: dict, main: dict, init: dict, depth: dict) -> str:
    """The paper study: its methods with both initialisations, and depth with the paper's."""
    workdir = args.workdir
    student_runs = [p for part in ("main", "init", "depth")
                    for p in sorted((workdir / part).glob("*")) if (p / "run_state.json").exists()]  # fmt: skip
    teacher_run = _config_of(workdir / "teacher")
    lines = [
        _claims_header(
            args, teacher_run, _config_of(student_runs[0]) if student_runs else teacher_run
        ),
        "",
    ]
    groups = {}
    if main:
        # The teacher's row from its own run (every student run re-measures the same teacher).
        by_mode = _rows_by_mode(main)
        rows = {"teacher": [teacher], **{m: by_mode[m] for m in MAIN_MODES if m in by_mode}}
        groups["mnist_fitnet, paper init U(±0.005)"] = rows
        lines += _methods_lines("Teacher and thin deep student (paper initialisation)", rows,
                                ("kd", "scratch", "stagewise_labels", "teacher"))  # fmt: skip
    if init:
        by_mode = _rows_by_mode(init)
        rows = {m: by_mode[m] for m in DEPTH_MODES if m in by_mode}
        groups["mnist_fitnet, He init"] = rows
        lines += _methods_lines("The same student with He initialisation", rows, ("kd", "scratch"))
    if groups:
        claims_plots.plot_methods(groups, args.docs / "paper_claims_methods.png")
        lines += ["![test accuracy by training method](paper_claims_methods.png)", ""]
    if depth:
        claims_plots.plot_depth(rows_by_depth(depth), args.docs / "paper_claims_depth.png",
                                "Paper initialisation: mean, bars min–max over seeds")  # fmt: skip
        lines += ["### Depth at a fixed budget (Figure 2 in small; paper initialisation)", "",
                  *depth_seeds_table(depth), "", *_depth_comparisons(depth), "",
                  "![test accuracy by depth](paper_claims_depth.png)", ""]  # fmt: skip
    seconds = [r.get("train_seconds") or 0 for s in (main, init, depth) for summ in s.values()
               for r in summ["models"] if r["name"] != "teacher"]  # fmt: skip
    lines.append(
        f"Training time of all students: {sum(seconds) / 60:.0f} min; the teacher "
        f"{(teacher.get('train_seconds') or 0) / 60:.0f} min."
    )
    return "\n".join(lines)


def report(args) -> str:
    """Rewrites the blocks of docs/results.md of ``args.parts`` whose runs exist (a block whose
    study is still running keeps its last full version); returns the text written."""
    workdir, written, parts = args.workdir, [], set(args.parts)
    pair = _summaries(workdir / "pair", "seed") if "pair" in parts else {}
    if pair:
        stagewise = _summaries(workdir / "pair_stagewise", "seed")
        text = f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `{args.command}`; {_cpu()}, "
        text += f"{os.cpu_count()} cores, no GPU, {_load(workdir, ('pair/', 'pair_stagewise/'))}."
        text += "\n\n" + "\n".join(pair_section(pair, stagewise, args.docs))
        _write_block(args.docs / "results.md", PAIR_BEGIN, PAIR_END, text)
        written.append(text)
    if not (workdir / "teacher" / "summary.json").exists():
        return "\n".join(written)
    teacher = json.loads((workdir / "teacher" / "summary.json").read_text())["models"][0]
    depth_he = _summaries(workdir / "depth_he", "mnist_depth") if "depth_he" in parts else {}
    if depth_he:
        text = depth_he_section(args, teacher, depth_he)
        _write_block(args.docs / "results.md", DEPTH_HE_BEGIN, DEPTH_HE_END, text)
        written.append(text)
    main, init, depth = (_summaries(workdir / part, prefix) if part in parts else {}
                         for part, prefix in (("main", "seed"), ("init", "seed"), ("depth", "mnist_depth")))  # fmt: skip
    if main or init or depth:  # else the study's own block is left as its runs wrote it
        text = claims_section(args, teacher, main, init, depth)
        _write_block(args.docs / "results.md", BEGIN, END, text)
        written.append(text)
    return "\n".join(written)


def _write_block(results: pathlib.Path, begin: str, end: str, text: str) -> None:
    """Replaces the text between ``begin`` and ``end`` in results.md (appends the block)."""
    page = results.read_text() if results.exists() else "# Results\n"
    if begin not in page:
        page = page.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, _, rest = page.partition(begin)
    _, _, tail = rest.partition(end)
    results.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "paper_claims"))
    parser.add_argument("--teacher_epochs", type=int, default=8)
    parser.add_argument("--teacher_patience", type=int, default=3)
    parser.add_argument("--hints_epochs", type=int, default=2)
    parser.add_argument("--kd_epochs", type=int, default=5)
    parser.add_argument(
        "--patience",
        type=int,
        default=5,
        help="5 = each stage runs all its epochs; the best validation epoch is kept",
    )
    parser.add_argument("--limit", type=int, default=None, help="examples per split (smoke runs)")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where results.md goes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report_only", action="store_true",
                        help="rebuild the results.md blocks of --parts from the runs so far")  # fmt: skip
    parser.add_argument("--depth_he_depths", default=",".join(map(str, DEPTHS_HE)))
    parser.add_argument(
        "--pair_seed0",
        default=None,
        help="a finished run of configs/fashion_mnist.flags to count as pair seed 0",
    )
    args = parser.parse_args(argv)
    args.parts = tuple(p for p in args.parts.split(",") if p)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)} (valid: {', '.join(PARTS)})")
    needs_teacher = {"main", "depth", "init", "depth_he"} & set(args.parts)
    if needs_teacher and "teacher" not in args.parts and not args.report_only:
        # Students need the teacher: train it first unless it is there already.
        args.parts = ("teacher", *args.parts)
    args.seeds = tuple(int(s) for s in args.seeds.split(","))
    args.depth_he_depths = tuple(int(d) for d in args.depth_he_depths.split(","))
    args.workdir = pathlib.Path(args.workdir).resolve()
    args.docs = pathlib.Path(args.docs).resolve()
    args.docs.mkdir(parents=True, exist_ok=True)
    args.command = "python bench/paper_claims.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    return args


def main(argv=None) -> None:
    args = parse(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if not args.report_only:
        from fitnets_tf.run import preemption

        try:
            run_all(args)
        except preemption.Preempted as stopped:  # SIGTERM/SIGINT: checkpointed, as the CLI does
            print(f"[claims] {stopped}", flush=True)
            sys.exit(preemption.EXIT_STATUS)
    print(report(args))


if __name__ == "__main__":
    main()
