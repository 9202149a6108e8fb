"""The paper's claims on real Fashion-MNIST, on a CPU; writes docs/results.md and its plots.

    python bench/paper_claims.py                         # every part, ~2 h on 2 CPU cores
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

PARTS = ("teacher", "main", "depth", "init", "pair", "depth_he")
DEPTHS_HE = (5, 7, 9, 11, 13, 15)
PAIR_MODES = ("fitnet", "kd", "scratch")  # the default experiment's, in its order
MAIN_MODES = ("scratch", "kd", "fitnet", "stagewise_labels")
DEPTH_MODES = ("scratch", "kd", "fitnet")
DEPTHS = (5, 7, 9, 11)
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"
PAIR_BEGIN, PAIR_END = "<!-- pair:begin -->", "<!-- pair:end -->"
DEPTH_HE_BEGIN, DEPTH_HE_END = "<!-- depth_he:begin -->", "<!-- depth_he:end -->"
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
            runs[f"depth/mnist_depth{depth}"] = students.with_values(
                student=f"mnist_depth{depth}", modes=DEPTH_MODES, seed=args.seeds[0]
            )
    if "depth_he" in args.parts:
        for depth in args.depth_he_depths:
            for seed in args.seeds:
                runs[f"depth_he/mnist_depth{depth}_seed{seed}"] = students.with_values(
                    student=f"mnist_depth{depth}", modes=DEPTH_MODES, init="he_uniform", seed=seed
                )
    for seed in args.seeds:
        if "pair" in args.parts:
            runs[f"pair/seed{seed}"] = config_lib.DEFAULT.with_values(seed=seed)
    for seed in args.seeds:
        if "init" in args.parts:
            runs[f"init/seed{seed}"] = students.with_values(
                modes=DEPTH_MODES, init="he_uniform", seed=seed
            )
    return runs


def run_all(args) -> None:
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
        experiment.run(config, args.workdir / name, log=lambda m: print(m, flush=True))
        print(f"[claims] {name} done in {time.perf_counter() - start:.0f} s", flush=True)


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
            ratio = f" ({teacher[key] / ms:.1f}×)" if ms and teacher[key] and mode != "teacher" else ""
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


def depth_table(summaries: dict[str, dict]) -> tuple[list[str], dict]:
    lines = [
        "| student | layers | parameters | M multiplications | "
        + " | ".join(f"{LABELS[m]} %" for m in DEPTH_MODES)
        + " |",
        "|---|---|---|---|" + "---|" * len(DEPTH_MODES),
    ]
    curves: dict[str, dict[int, float]] = {m: {} for m in DEPTH_MODES}
    for name, summary in sorted(summaries.items(), key=lambda kv: int(kv[0].split("depth")[-1])):
        depth = int(name.split("depth")[-1])
        rows = {r["name"]: r for r in summary["models"]}
        student = next(rows[m] for m in DEPTH_MODES if m in rows)
        cells = []
        for mode in DEPTH_MODES:
            if mode in rows:
                curves[mode][depth] = rows[mode]["test_accuracy"]
                cells.append(f"{100 * rows[mode]['test_accuracy']:.2f}")
            else:
                cells.append("—")
        lines.append(
            f"| {name} | {depth} | {student['params']:,} | {student['mults'] / 1e6:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines, curves


def depth_seeds_table(summaries: dict[str, dict]) -> list[str]:
    """Per depth, each method's test accuracy over seeds (run names ``mnist_depth{d}_seed{s}``)."""
    by_depth: dict[int, dict[str, list[dict]]] = {}
    for name, summary in summaries.items():
        depth = int(name.split("depth")[1].split("_")[0])
        for row in summary["models"]:
            if row["name"] in DEPTH_MODES:
                by_depth.setdefault(depth, {}).setdefault(row["name"], []).append(row)
    lines = ["| student | layers | parameters | M multiplications | seeds | "
             + " | ".join(f"{LABELS[m]} %" for m in DEPTH_MODES) + " |",
             "|---|---|---|---|---|" + "---|" * len(DEPTH_MODES)]  # fmt: skip
    for depth, rows in sorted(by_depth.items()):
        any_row = next(iter(rows.values()))[0]
        cells = [_acc(_stats([r["test_accuracy"] for r in rows[m]])) if m in rows else "—"
                 for m in DEPTH_MODES]  # fmt: skip
        seeds = max(len(r) for r in rows.values())
        lines.append(f"| mnist_depth{depth} | {depth} | {any_row['params']:,} | "
                     f"{any_row['mults'] / 1e6:.2f} | {seeds} | " + " | ".join(cells) + " |")  # fmt: skip
    return lines


def _color(mode: str) -> str:
    return f"C{list(LABELS).index(mode)}"  # one colour per method in every plot


def plot_methods(groups: dict[str, dict[str, list[dict]]], path: pathlib.Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(groups), 3.4))
    for i, (title, rows_by_mode) in enumerate(groups.items(), start=1):
        ax = fig.add_subplot(1, len(groups), i)
        names = list(rows_by_mode)
        for x, mode in enumerate(names):
            accs = [100 * r["test_accuracy"] for r in rows_by_mode[mode]]
            ax.bar(x, statistics.fmean(accs), color=_color(mode), alpha=0.6)
            ax.plot([x] * len(accs), accs, "k.", markersize=5)
        ax.set_xticks(range(len(names)), [LABELS.get(n, n).split(" (")[0] for n in names],
                      rotation=30, ha="right", fontsize=8)  # fmt: skip
        ax.set_ylabel("test accuracy % (bars: mean, dots: seeds)", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_depth(curves: dict[str, dict[int, float]], path: pathlib.Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 3.4))
    ax = fig.add_subplot()
    # Distinct markers and dashes: methods stuck at the same accuracy overlap exactly.
    styles = {"scratch": "o-", "kd": "s--", "fitnet": "^-"}
    for mode, points in curves.items():
        if points:
            depths = sorted(points)
            ax.plot(depths, [100 * points[d] for d in depths], styles.get(mode, "o-"),
                    color=_color(mode), label=LABELS[mode], markerfacecolor="none")  # fmt: skip
    ax.set_xlabel("layers (~5.5M multiplications each)")
    ax.set_ylabel("test accuracy %")
    ax.set_xticks(DEPTHS)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


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
    return "\n".join([
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `{args.command}`; {_cpu()}, "
        f"{os.cpu_count()} cores, no GPU. The paper's teacher (`mnist_teacher`, "
        f"{100 * teacher['test_accuracy']:.2f}% test) guides every net; He-uniform initialisation; "
        f"{s['hints_epochs']} epochs of stage 1 and {s['kd_epochs']} of stage 2 (labels only: "
        f"{s['kd_epochs']}), RMSProp lr {s['learning_rate']:g}, τ = {s['temperature']:g}, λ "
        f"{s['kd_lambda']:g} → {s['lambda_end']:g}; the best validation epoch kept.",
        "", "### Depth at a fixed budget with He initialisation (5 to 15 layers)", "",
        *depth_seeds_table(summaries), "",
    ])  # fmt: skip


def pair_section(pair: dict[str, dict]) -> list[str]:
    """The default experiment over seeds: accuracy, paired differences, served latency."""
    by_mode = _rows_by_mode(pair)
    rows = {m: by_mode[m] for m in ("teacher", *PAIR_MODES) if m in by_mode}
    lines = ["### The default experiment over seeds: wide_cnn → thin_cnn (shipped teacher)", "",
             "The teacher is the same shipped file in every run (it is not retrained per seed); "
             "each seed changes the students' initial weights, data order and augmentation.",
             "", *method_table(rows), ""]  # fmt: skip
    lines += [f"- {c}" for c in (_comparison(rows, "fitnet", "kd"),
                                 _comparison(rows, "fitnet", "scratch"),
                                 _comparison(rows, "kd", "scratch"),
                                 _comparison(rows, "fitnet", "teacher")) if c]  # fmt: skip
    lines += ["", "Served latency, ms / image (median over seeds; speed-up over the teacher):", "",
              *serving_table(rows), ""]  # fmt: skip
    return lines


def report(args) -> str:
    workdir = args.workdir
    pair = _summaries(workdir / "pair", "seed")
    if pair:
        text = f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `{args.command}`; {_cpu()}, "
        text += f"{os.cpu_count()} cores, no GPU.\n\n" + "\n".join(pair_section(pair))
        _write_block(args.docs / "results.md", PAIR_BEGIN, PAIR_END, text)
    if not (workdir / "teacher" / "summary.json").exists():
        return text if pair else ""
    teacher = json.loads((workdir / "teacher" / "summary.json").read_text())["models"][0]
    main, init = _summaries(workdir / "main", "seed"), _summaries(workdir / "init", "seed")
    depth = _summaries(workdir / "depth", "mnist_depth")
    depth_he = _summaries(workdir / "depth_he", "mnist_depth")
    if depth_he:
        _write_block(args.docs / "results.md", DEPTH_HE_BEGIN, DEPTH_HE_END,
                     depth_he_section(args, teacher, depth_he))  # fmt: skip
    if not (main or init or depth):  # the study's own block is left as its runs wrote it
        return ""
    # The settings the runs were made with, as their run directories recorded them.
    t = _config_of(workdir / "teacher")
    student_runs = [p for part in ("main", "init", "depth")
                    for p in sorted((workdir / part).glob("*")) if (p / "run_state.json").exists()]  # fmt: skip
    s = _config_of(student_runs[0]) if student_runs else t
    hp = s
    lines = [
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `{args.command}` from the runs "
        f"in `{workdir.relative_to(ROOT) if workdir.is_relative_to(ROOT) else workdir}`; "
        f"{_cpu()}, {os.cpu_count()} cores, no GPU. Fashion-MNIST: "
        f"{_size(s['limit'], 50_000)} training, {_size(s['limit'], 10_000)} validation "
        f"(early stopping on validation accuracy, patience {s['early_stopping_patience']}, best "
        f"epoch kept), {_size(s['limit'], 10_000)} test images. Teacher: {t['teacher_epochs']} "
        f"epochs at most (patience {t['early_stopping_patience']}), dropout "
        f"{t['teacher_dropout'] if t['teacher_dropout'] is not None else 'as in the paper'}. Students: {s['hints_epochs']} epochs of stage 1 and "
        f"{s['kd_epochs']} of stage 2 ({s['kd_epochs']} on labels only); RMSProp lr "
        f"{hp['learning_rate']:g}, τ = {hp['temperature']:g}, λ {hp['kd_lambda']:g} → "
        f"{hp['lambda_end']:g}, batch {s['batch_size']}. Spread is over student seeds (weights "
        "and data order); the teacher is the same in every run.",
        "",
    ]
    groups = {}
    if main:
        # The teacher's row from its own run (every student run re-measures the same teacher).
        by_mode = _rows_by_mode(main)
        rows = {"teacher": [teacher], **{m: by_mode[m] for m in MAIN_MODES if m in by_mode}}
        table = method_table(rows)
        groups["mnist_fitnet, paper init U(±0.005)"] = rows
        lines += ["### Teacher and thin deep student (paper initialisation)", "", *table, ""]
        lines += [f"- {c}" for c in (_comparison(rows, "fitnet", "kd"),
                                     _comparison(rows, "fitnet", "scratch"),
                                     _comparison(rows, "fitnet", "stagewise_labels"),
                                     _comparison(rows, "fitnet", "teacher")) if c]  # fmt: skip
        lines.append("")
    if init:
        by_mode = _rows_by_mode(init)
        rows = {m: by_mode[m] for m in DEPTH_MODES if m in by_mode}
        table = method_table(rows)
        groups["mnist_fitnet, He init"] = rows
        lines += ["### The same student with He initialisation", "", *table, ""]
        lines += [f"- {c}" for c in (_comparison(rows, "fitnet", "kd"),
                                     _comparison(rows, "fitnet", "scratch")) if c]  # fmt: skip
        lines.append("")
    if groups:
        plot_methods(groups, args.docs / "paper_claims_methods.png")
        lines += ["![test accuracy by training method](paper_claims_methods.png)", ""]
    if depth:
        table, curves = depth_table(depth)
        plot_depth(curves, args.docs / "paper_claims_depth.png")
        lines += [
            f"### Depth at a fixed budget (Figure 2 in small; paper init, seed {args.seeds[0]})",
            "",
            *table,
            "",
            "![test accuracy by depth](paper_claims_depth.png)",
            "",
        ]
    seconds = [r.get("train_seconds") or 0 for s in (main, init, depth) for summ in s.values()
               for r in summ["models"] if r["name"] != "teacher"]  # fmt: skip
    lines.append(
        f"Training time of all students: {sum(seconds) / 60:.0f} min; the teacher "
        f"{(teacher.get('train_seconds') or 0) / 60:.0f} min."
    )
    text = "\n".join(lines)
    _write_block(args.docs / "results.md", BEGIN, END, text)
    return text


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
    parser.add_argument("--report_only", action="store_true")
    parser.add_argument("--depth_he_depths", default=",".join(map(str, DEPTHS_HE)))
    parser.add_argument("--pair_seed0", default=None,
                        help="a finished run of configs/fashion_mnist.flags to count as pair seed 0")
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
        run_all(args)
    print(report(args))


if __name__ == "__main__":
    main()
