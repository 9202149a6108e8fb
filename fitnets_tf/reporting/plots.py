"""What a run shows a person as pictures: training curves, the teacher-vs-students comparison.

Figures are made with ``matplotlib.figure.Figure`` on an Agg canvas, never through
``pyplot``: nothing here changes matplotlib's global backend or figure list, so a notebook's
own plots are left as they were.
"""

from __future__ import annotations

import os

from fitnets_tf.run import io

# Curves worth a panel each, in this order, when a stage logged them.
_PANELS = ("hint_loss", "ce_loss", "kd_loss", "kd_lambda", "loss", "accuracy")


def new_figure(**subplots):
    """A figure drawn off-screen and its axes (``Figure.subplots`` arguments, ``figsize``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=subplots.pop("figsize", None))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Writes ``fig`` as a PNG, atomically."""
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def plot_curves(histories: dict[str, dict], title: str, path: str | os.PathLike) -> None:
    """One row per stage, one panel per logged quantity, validation dashed."""
    stages = [s for s, h in histories.items() if h]
    if not stages:
        return
    cols = max(sum(k in h for k in _PANELS) for h in histories.values())
    fig, axes = new_figure(nrows=len(stages), ncols=cols, squeeze=False,
                           figsize=(3.2 * cols, 2.6 * len(stages)))  # fmt: skip
    for row, stage in enumerate(stages):
        history = histories[stage]
        keys = [k for k in _PANELS if k in history]
        for col, ax in enumerate(axes[row]):
            if col >= len(keys):
                ax.axis("off")
                continue
            _plot_history(ax, history, keys[col], stage)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_history(ax, history: dict, key: str, stage: str) -> None:
    epochs = range(1, len(history[key]) + 1)
    ax.plot(epochs, history[key], ".-", label="train")
    if f"val_{key}" in history:
        ax.plot(epochs, history[f"val_{key}"], ".--", label="validation")
    ax.set_title(f"{stage}: {key}", fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    ax.legend(fontsize=7)


def plot_comparison(rows: list[dict], path: str | os.PathLike) -> None:
    """Bars of test accuracy, parameters and latency for the teacher and every student."""
    names = [r["name"] for r in rows]
    panels = [
        ("test_accuracy", "test accuracy", 1.0),
        ("params", "parameters (thousands)", 1e-3),
        ("latency_ms_per_image_batch1", "CPU latency, batch 1 (ms/image)", 1.0),
    ]
    fig, axes = new_figure(ncols=len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        values = [(r.get(key) or 0) * scale for r in rows]
        bars = ax.bar(names, values, color=["#777"] + ["#3a7"] * (len(rows) - 1))
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    save_figure(fig, path)
