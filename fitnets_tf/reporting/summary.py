"""The closing table of a run: the teacher and every student, side by side."""

from __future__ import annotations

from fitnets_tf.reporting.tables import format_table

# (column, summary key, format)
_COLUMNS = (
    ("test acc", "test_accuracy", "{:.4f}"),
    ("params", "params", "{:,}"),
    ("mults", "mults", "{:,}"),
    ("ms/img b1", "latency_ms_per_image_batch1", "{:.3f}"),
    ("ms/img b128", "latency_ms_per_image_batch128", "{:.4f}"),
    ("train s", "train_seconds", "{:.0f}"),
)


def summary_table(rows: list[dict]) -> str:
    """The rows of ``summary.json["models"]`` as fixed-width text (the CLI prints it last)."""
    header = ("model", *(title for title, _, _ in _COLUMNS))
    cells = [
        (r["name"], *(None if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in _COLUMNS))
        for r in rows
    ]
    return format_table(header, cells)
