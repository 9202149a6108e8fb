"""The plots of docs/results.md: accuracy by method, by depth, and against served latency.

Every plot reads the rows of the runs' ``summary.json`` files (one row per model and seed), so a
plot shows the same numbers as the table beside it. One colour per method in every plot.
"""

from __future__ import annotations

import pathlib
import statistics

METHODS = ("teacher", "scratch", "kd", "fitnet", "stagewise_labels")
SHORT = {"teacher": "teacher", "scratch": "labels only", "kd": "KD",
         "fitnet": "FitNets", "stagewise_labels": "stage-wise"}  # fmt: skip


def color(mode: str) -> str:
    return f"C{METHODS.index(mode)}" if mode in METHODS else "C9"


def _accuracies(rows: list[dict]) -> list[float]:
    return [100 * r["test_accuracy"] for r in rows]


def _y_range(groups: dict[str, dict[str, list[dict]]]) -> tuple[float, float]:
    """0–100 when a method sits near chance (the failure is the message); else zoomed in, since
    methods a fraction of a point apart would otherwise look identical."""
    accs = [a for rows_by_mode in groups.values() for rows in rows_by_mode.values()
            for a in _accuracies(rows)]  # fmt: skip
    if min(accs) < 50:
        return 0.0, 100.0
    return max(0.0, min(accs) - 1.0), min(100.0, max(accs) + 0.5)


def plot_methods(groups: dict[str, dict[str, list[dict]]], path: pathlib.Path) -> None:
    """One panel per group: a bar per method at its mean, a dot per seed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(groups), 3.4))
    low, high = _y_range(groups)
    for i, (title, rows_by_mode) in enumerate(groups.items(), start=1):
        ax = fig.add_subplot(1, len(groups), i)
        names = list(rows_by_mode)
        for x, mode in enumerate(names):
            accs = _accuracies(rows_by_mode[mode])
            ax.bar(x, statistics.fmean(accs) - low, bottom=low, color=color(mode), alpha=0.6)
            ax.plot([x] * len(accs), accs, "k.", markersize=5)
        ax.set_xticks(range(len(names)), [SHORT.get(n, n) for n in names],
                      rotation=30, ha="right", fontsize=8)  # fmt: skip
        ax.set_ylabel("test accuracy % (bars: mean, dots: seeds)", fontsize=8)
        ax.set_ylim(low, high)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_depth(rows_by_depth: dict[int, dict[str, list[dict]]], path: pathlib.Path,
               title: str) -> None:  # fmt: skip
    """Mean test accuracy per depth and method; the bars span the seeds (min to max)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 3.4))
    ax = fig.add_subplot()
    # Distinct markers and dashes: methods stuck at the same accuracy overlap exactly.
    styles = {"scratch": "o-", "kd": "s--", "fitnet": "^-"}
    depths = sorted(rows_by_depth)
    for mode in styles:
        found = [d for d in depths if mode in rows_by_depth[d]]
        if not found:
            continue
        accs = [_accuracies(rows_by_depth[d][mode]) for d in found]
        means = [statistics.fmean(a) for a in accs]
        spread = [
            [m - min(a) for m, a in zip(means, accs, strict=True)],
            [max(a) - m for m, a in zip(means, accs, strict=True)],
        ]
        ax.errorbar(found, means, yerr=spread, fmt=styles[mode], color=color(mode), capsize=3,
                    label=SHORT[mode], markerfacecolor="none")  # fmt: skip
    ax.set_xlabel("layers (~5.5M multiplications each)")
    ax.set_ylabel("test accuracy %")
    ax.set_xticks(depths)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_speed(rows_by_mode: dict[str, list[dict]], key: str, runtime: str,
               path: pathlib.Path) -> None:  # fmt: skip
    """Test accuracy against served ms / image (log scale), one point per model and seed: where
    a student lands between its teacher's accuracy and its own speed."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = Figure(figsize=(4.8, 3.4))
    ax = fig.add_subplot()
    for mode, rows in rows_by_mode.items():
        points = [(r[key], 100 * r["test_accuracy"]) for r in rows if r.get(key)]
        if points:
            ax.plot(*zip(*points, strict=True), "o", color=color(mode), label=SHORT.get(mode, mode),
                    alpha=0.8, markerfacecolor="none" if mode == "scratch" else color(mode))  # fmt: skip
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.set_xticks([t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10) if low <= t <= high])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short axis
    ax.set_xlabel(f"{runtime} ms / image (log scale)")
    ax.set_ylabel("test accuracy %")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
