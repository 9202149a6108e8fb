"""What a run shows a person: training curves, the teacher-vs-students comparison, a table."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only: runs on servers and in CI without a display

import matplotlib.pyplot as plt  # noqa: E402

from fitnets_tf import rundir  # noqa: E402

# Curves worth a panel each, in this order, when a stage logged them.
_PANELS = ("hint_loss", "ce_loss", "kd_loss", "kd_lambda", "loss", "accuracy")


def plot_curves(histories: dict[str, dict], title: str, path: str | os.PathLike) -> None:
    """One row per stage, one panel per logged quantity, validation dashed."""
    stages = [s for s, h in histories.items() if h]
    if not stages:
        return
    cols = max(sum(k in h for k in _PANELS) for h in histories.values())
    fig, axes = plt.subplots(
        len(stages), cols, figsize=(3.2 * cols, 2.6 * len(stages)), squeeze=False
    )
    for row, stage in enumerate(stages):
        history = histories[stage]
        keys = [k for k in _PANELS if k in history]
        for col, ax in enumerate(axes[row]):
            if col >= len(keys):
                ax.axis("off")
                continue
            key = keys[col]
            epochs = range(1, len(history[key]) + 1)
            ax.plot(epochs, history[key], ".-", label="train")
            if f"val_{key}" in history:
                ax.plot(epochs, history[f"val_{key}"], ".--", label="validation")
            ax.set_title(f"{stage}: {key}", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_comparison(rows: list[dict], path: str | os.PathLike) -> None:
    """Bars of test accuracy, parameters and latency for the teacher and every student."""
    names = [r["name"] for r in rows]
    panels = [
        ("test_accuracy", "test accuracy", 1.0),
        ("params", "parameters (thousands)", 1e-3),
        ("latency_ms_per_image_batch1", "CPU latency, batch 1 (ms/image)", 1.0),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        values = [(r.get(key) or 0) * scale for r in rows]
        bars = ax.bar(names, values, color=["#777"] + ["#3a7"] * (len(rows) - 1))
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path) -> None:
    with rundir.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """The comparison as a fixed-width text table (the CLI prints it last)."""
    header = ("model", "test acc", "params", "mults", "ms/img b1", "ms/img b128", "train s")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["name"],
                _fmt(r.get("test_accuracy"), "{:.4f}"),
                _fmt(r.get("params"), "{:,}"),
                _fmt(r.get("mults"), "{:,}"),
                _fmt(r.get("latency_ms_per_image_batch1"), "{:.3f}"),
                _fmt(r.get("latency_ms_per_image_batch128"), "{:.4f}"),
                _fmt(r.get("train_seconds"), "{:.0f}"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)
