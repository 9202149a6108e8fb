"""What a search shows: its trials as rows, ``results.csv``, ``results.png``, ``summary.json``,
and a warning when its best trial is near chance."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re

from fitnets_tf.class_order import near_chance
from fitnets_tf.reporting import plots
from fitnets_tf.reporting.tables import format_table
from fitnets_tf.run import io
from fitnets_tf.run.layout import SearchLayout
from fitnets_tf.search.space import OPTIONAL, SearchSpace
from fitnets_tf.search.tuners import OBJECTIVE

# A failure's reason in results.csv: one line, long enough for the guard's "Non-finite loss
# term ... epoch E, step S." and an error's first sentences, short enough to read in a sheet.
REASON_CHARS = 200
# The printed table keeps each row on one terminal line; results.csv has the whole reason.
_TABLE_REASON_CHARS = 72
# A traceback's last exception line: "module.Name: message" or "Name" (no message).
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)(?:: (.*))?$")


def completed(trial) -> bool:
    return trial.status == "COMPLETED" and trial.score is not None and math.isfinite(trial.score)


def best_trial(oracle):
    """The completed trial with the highest validation accuracy, or None.

    Unlike ``oracle.get_best_trials``, never a failed trial (keras-tuner pads its list with
    them when too few trials completed). A tie goes to the defaults' trial, then to the
    earliest: a trial must beat the configuration being tuned to replace it in ``best.flags``
    (``oracle.trials`` is in no fixed order once a search is reloaded).
    """
    defaults = {hp.name: hp.default for hp in oracle.hyperparameters.space}

    def order(trial):
        return not _is_defaults(trial, defaults), *_trial_order(trial)

    done = sorted((t for t in oracle.trials.values() if completed(t)), key=order)
    return max(done, key=lambda t: t.score) if done else None  # max: the first of equals


def _trial_order(trial) -> tuple[int, str]:
    # Ids are numbers as text, zero-padded to the digits of --max_trials when made: "100"
    # comes after "99", and a search resumed with more trials goes on "7", "08", "09", "10".
    return len(trial.trial_id), trial.trial_id


def _is_defaults(trial, defaults: dict) -> bool:
    return all(trial.hyperparameters.values.get(k) == v for k, v in defaults.items())


def trial_rows(oracle, space: SearchSpace, trial_epochs: int) -> list[dict]:
    """One row per trial, in trial order."""
    defaults = {hp.name: hp.default for hp in oracle.hyperparameters.space}
    return [_row(trial, space, defaults, trial_epochs)
            for trial in sorted(oracle.trials.values(), key=_trial_order)]  # fmt: skip


def _row(trial, space: SearchSpace, defaults: dict, trial_epochs: int) -> dict:
    values = trial.hyperparameters.values
    row = {"trial_id": trial.trial_id, "status": trial.status}
    row.update({name: values.get(name) for name in space.names()})
    row["defaults"] = _is_defaults(trial, defaults)
    done = completed(trial)
    row[OBJECTIVE] = trial.score if done else None
    for metric in ("val_loss", "accuracy"):  # at the best epoch
        exists = done and trial.metrics.exists(metric)
        row[metric] = float(trial.metrics.get_history(metric)[-1].mean()) if exists else None
    # keras-tuner's best_step indexes this run's epochs; a Hyperband trial that continues an
    # earlier one starts at epoch `tuner/initial_epoch`, as its log.csv and its "epochs" count.
    first = values.get("tuner/initial_epoch", 0)
    row["best_epoch"] = first + trial.best_step + 1 if done else None
    row["epochs"] = values.get("tuner/epochs", trial_epochs)
    row["reason"] = None if done else failure_reason(getattr(trial, "message", None))
    return row


def failure_reason(message: str | None) -> str | None:
    """A trial's ``message`` (keras-tuner stores a whole traceback) as one short line.

    The last exception's text, its type named unless it is keras-tuner's
    ``FailedTrialError`` (the type of every diverged trial, which says nothing more); a
    message that is not a traceback (the chief's "Given up by the chief: ...") is kept as it
    is. Whitespace is collapsed and the line cut at ``REASON_CHARS`` characters.
    """
    if not message or not message.strip():
        return None
    lines = message.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if lines[0].startswith("Traceback") and frames:
        # The last exception's text is the first line after its last frame that is not the
        # frame's code or its ^^^ marks (indented); the message's own lines follow.
        start = next((i for i in range(frames[-1] + 1, len(lines))
                      if not lines[i].startswith(" ")), len(lines))  # fmt: skip
        found = _EXCEPTION_LINE.match(lines[start]) if start < len(lines) else None
        if found:
            kind, text = found.group(1), found.group(2) or ""
            rest = " ".join([text, *lines[start + 1 :]])
            lines = [rest if kind == "FailedTrialError" else f"{kind}: {rest}"]
    line = " ".join(" ".join(lines).split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"


def write_rows_csv(rows: list[dict], path: str | os.PathLike) -> None:
    header = list(rows[0]) if rows else ["trial_id"]
    io.write_csv(path, header, ([_csv_cell(r[k]) for k in header] for r in rows))


def _csv_cell(value):
    return "" if value is None else value


def plot_results(
    rows: list[dict], path: str | os.PathLike, title: str = "", space: SearchSpace | None = None
) -> None:
    """Validation accuracy over λ0 × τ: one dot per trial; failed trials as red crosses.

    With ``space``, the axes span the searched ranges, so the plot also shows the coverage.
    """
    fig, ax = plots.new_figure(figsize=(6.4, 4.8))
    ok = [r for r in rows if r[OBJECTIVE] is not None]
    if ok:
        _plot_scores(fig, ax, ok)
    for r in (r for r in rows if r["defaults"]):
        ax.scatter([r["kd_lambda"]], [r["temperature"]], marker="s", s=220, facecolors="none",
                   edgecolors="black", label="defaults (first trial)", zorder=4)  # fmt: skip
    failed = [r for r in rows if r["status"] in ("FAILED", "INVALID")]
    if failed:
        ax.scatter([r["kd_lambda"] for r in failed], [r["temperature"] for r in failed],
                   marker="x", c="red", s=70, label="failed (NaN)", zorder=3)  # fmt: skip
    _log_axes(ax, space)
    ax.set_title(title or "FitNets stage 2: validation accuracy per trial", fontsize=10)
    ax.legend(fontsize=8, loc="best", markerscale=0.5)
    fig.tight_layout()
    plots.save_figure(fig, path)


def _plot_scores(fig, ax, ok: list[dict]) -> None:
    points = ax.scatter([r["kd_lambda"] for r in ok], [r["temperature"] for r in ok],
                        c=[r[OBJECTIVE] for r in ok], cmap="viridis", s=90, edgecolors="k",
                        zorder=3)  # fmt: skip
    fig.colorbar(points, ax=ax, label="validation accuracy (best epoch)")
    for r in ok:
        ax.annotate(f"{r[OBJECTIVE]:.3f}", (r["kd_lambda"], r["temperature"]),
                    textcoords="offset points", xytext=(6, 5), fontsize=7)  # fmt: skip
    best = max(ok, key=lambda r: r[OBJECTIVE])
    ax.scatter([best["kd_lambda"]], [best["temperature"]], marker="*", s=420, facecolors="none",
               edgecolors="red", linewidths=1.5, label="best", zorder=4)  # fmt: skip


def _log_axes(ax, space: SearchSpace | None) -> None:
    from matplotlib import ticker

    for axis, name, label in ((ax.xaxis, "kd_lambda", "λ0 (kd_lambda)"),
                              (ax.yaxis, "temperature", "τ (temperature)")):  # fmt: skip
        is_x = axis is ax.xaxis
        (ax.set_xscale if is_x else ax.set_yscale)("log")
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 3, 5)))
        axis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(ticker.NullFormatter())
        axis.set_label_text(label)
        if space is not None:
            low, high = getattr(space, name)
            (ax.set_xlim if is_x else ax.set_ylim)(low / 1.1, high * 1.1)


def write_results(oracle, options, workdir: pathlib.Path, teacher_path=None) -> dict:
    """``results.csv``, ``results.png`` and ``summary.json`` from the oracle's trials.

    ``options`` is the search's :class:`~fitnets_tf.search.TuneOptions`.
    """
    files = SearchLayout(workdir)
    rows = trial_rows(oracle, options.space, options.trial_epochs)
    for row in rows:
        row["seconds"] = trial_seconds(files.trials / f"trial_{row['trial_id']}")
        row["reason"] = row.pop("reason")  # the last column: the one text of any length
    write_rows_csv(rows, files.results_csv)
    title = f"{options.oracle} search, {len(rows)} trials of {options.trial_epochs} epoch(s)"
    plot_results(rows, files.results_plot, title, options.space)
    best = best_trial(oracle)
    summary = {
        "objective": OBJECTIVE,
        "oracle": options.oracle,
        "completed": sum(r[OBJECTIVE] is not None for r in rows),
        "failed": sum(r["status"] == "FAILED" for r in rows),
        "best": next(r for r in rows if r["trial_id"] == best.trial_id) if best else None,
        "defaults": next((r for r in rows if r["defaults"]), None),
        "teacher_path": teacher_path,
        "trials": rows,
    }
    io.write_json(files.summary, summary)
    return summary


def warn_near_chance(summary: dict, num_classes: int, workdir: pathlib.Path, log,
                     hints_optimizer: str | None = "rmsprop",
                     hints_per_trial: bool = False) -> None:  # fmt: skip
    """A search whose best trial is near chance has nothing to choose between: say where to
    look. ``hints_optimizer``: stage 1's, when the search trained from hints (None: KD only);
    ``hints_per_trial``: each trial trained its own (no ``stage1/`` run)."""
    best = summary["best"]
    if best is None or best["val_accuracy"] is None or not near_chance(
            best["val_accuracy"], num_classes):
        return
    first = "the teacher's accuracy (logged before the trials), the learning rate"
    if hints_optimizer is not None:
        adam = " or use --hints_optimizer=adam" if hints_optimizer != "adam" else ""
        where = ("the hint loss of each trial's hint training (printed as it runs"
                 if hints_per_trial else
                 f"the hint loss of its hint training (logged under {workdir / 'stage1'}")  # fmt: skip
        first = (f"{where}; diverging: lower --hints_learning_rate{adam}), the teacher's "
                 "accuracy")  # fmt: skip
    log(f"warning: the best trial is near chance (validation accuracy {best['val_accuracy']:.4f}, "
        f"chance {1 / num_classes:.4f}): the search has nothing to choose between. Look first "
        f"at {first} and the trials' epochs.")  # fmt: skip


def trial_seconds(trial_dir: pathlib.Path) -> float | None:
    """Wall time of the trial's last run, from its ``runs.jsonl``."""
    path = trial_dir / "runs.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    if len(events) < 2 or events[-1]["event"] != "end" or events[-2]["event"] != "start":
        return None
    return round(events[-1]["time"] - events[-2]["time"], 1)


def table(rows: list[dict]) -> str:
    """The trials, best first, as fixed-width text (the CLI prints it last)."""
    rows = sorted(rows, key=lambda r: -1.0 if r[OBJECTIVE] is None else r[OBJECTIVE], reverse=True)
    names = [k for k in rows[0] if k in ("kd_lambda", "temperature", *OPTIONAL)] if rows else []
    # Hyperband's trials run for different numbers of epochs: a score is read with its own.
    if len({r["epochs"] for r in rows}) > 1:
        names.append("epochs")
    reasons = any(r.get("reason") for r in rows)
    lines = []
    for r in rows:
        cells = [None if r[n] is None else (str(r[n]) if isinstance(r[n], (bool, int))
                                            else f"{r[n]:.4g}") for n in names]  # fmt: skip
        acc = None if r[OBJECTIVE] is None else f"{r[OBJECTIVE]:.4f}"
        note = " (defaults)" if r["defaults"] else ""
        why = (_short(r.get("reason") or ""),) if reasons else ()
        lines.append((r["trial_id"], *cells, acc, r["status"] + note, *why))
    header = ("trial", *names, "val acc", "status", *(("reason",) if reasons else ()))
    return format_table(header, lines, align="<" * len(header))


def _short(reason: str) -> str:
    if len(reason) <= _TABLE_REASON_CHARS:
        return reason
    return reason[: _TABLE_REASON_CHARS - 1] + "…"
