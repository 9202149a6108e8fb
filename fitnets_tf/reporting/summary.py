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
    ("litert b1", "latency_ms_per_image_batch1_litert", "{:.3f}"),
    ("litert b128", "latency_ms_per_image_batch128_litert", "{:.4f}"),
    ("onnx b1", "latency_ms_per_image_batch1_onnxruntime", "{:.3f}"),
    ("onnx b128", "latency_ms_per_image_batch128_onnxruntime", "{:.4f}"),
    ("train s", "train_seconds", "{:.0f}"),
)
# Runtimes of the speed-up line: (name, suffix of the latency keys).
_RUNTIMES = (("TensorFlow", ""), ("LiteRT", "_litert"), ("ONNX Runtime", "_onnxruntime"))


def dataset_fields(dataset: str, class_names) -> dict:
    """The summary's data fields: the dataset, and the class of each output index (or None)."""
    # A served model answers with probabilities by index: this is the run's record of which
    # class each index is (a folder's sorted sub-folder names), for the code that serves it.
    return {"dataset": dataset, "class_names": list(class_names) if class_names else None}


def summary_table(rows: list[dict]) -> str:
    """The rows of ``summary.json["models"]`` as fixed-width text (the CLI prints it last).

    Columns no row has (latencies not measured) are left out. When the first student row (the
    final student) and the teacher were timed, a line gives the student's speed-up; a model
    whose multiplications are not counted has its layers named on a line of its own.
    """
    columns = [c for c in _COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    header = ("model", *(title for title, _, _ in columns))
    cells = [
        (r["name"], *(None if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in columns))
        for r in rows
    ]
    lines = [format_table(header, cells), speedup_line(rows)]
    lines += [f"{r['name']}: mults not counted: fitnets_tf does not know the multiplications of "
              f"its layers {', '.join(r['mults_uncounted'])}" for r in rows
              if r.get("mults_uncounted")]  # fmt: skip
    return "\n".join(line for line in lines if line)


def speedup_line(rows: list[dict]) -> str | None:
    """``"<student> vs teacher speed-up: TensorFlow 2.1x b1, 3.0x b128; ..."``, or None."""
    if len(rows) < 2 or rows[0]["name"] != "teacher":
        return None
    teacher, student = rows[0], rows[1]
    parts = []
    for runtime, suffix in _RUNTIMES:
        ratios = [
            f"{teacher[key] / student[key]:.1f}x b{batch}"
            for batch in (1, 128)
            if teacher.get(key := f"latency_ms_per_image_batch{batch}{suffix}") and student.get(key)
        ]
        if ratios:
            parts.append(f"{runtime} {', '.join(ratios)}")
    if not parts:
        return None
    return f"{student['name']} vs teacher speed-up: " + "; ".join(parts)
