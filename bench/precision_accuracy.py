"""Goal 4's accuracy half: the same config trained in float32 and in mixed precision.

Timing says how much faster ``--mixed_precision`` trains (:mod:`bench.precision`); this says
what it costs in test accuracy, per mode, for

- the smoke config (``configs/smoke.flags``), trained here in both precisions and, for the
  scale of its noise, in float32 at another seed (about two minutes on 2 cores), and
- the default experiment, when both of its runs exist: ``runs/fashion_mnist`` (its flagfile
  trains in mixed precision) and its float32 twin,
  ``python -m fitnets_tf.train --flagfile=configs/fashion_mnist.flags --nomixed_precision
  --workdir=runs/fashion_mnist_float32`` (about 17 minutes; not run by the benchmark).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "configs/smoke.flags"
# (config, its float32 run, its mixed-precision run), relative to the checkout.
DEFAULT_TWINS = ("configs/fashion_mnist.flags", "runs/fashion_mnist_float32", "runs/fashion_mnist")


def _accuracies(run_dir: pathlib.Path) -> dict[str, float]:
    models = json.loads((run_dir / "summary.json").read_text())["models"]
    return {row["name"]: row["test_accuracy"] for row in models}


def _train(flagfile: str, workdir: pathlib.Path, mixed: bool, seed: int) -> dict[str, float]:
    subprocess.run(
        [sys.executable, "-m", "fitnets_tf.train", f"--flagfile={flagfile}", f"--workdir={workdir}",
         "--mixed_precision" if mixed else "--nomixed_precision", f"--seed={seed}",
         "--nomeasure_latency"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return _accuracies(workdir)


def _rows(config: str, float32: dict, mixed: dict, other_seed: dict | None = None) -> list[dict]:
    return [{"config": config, "model": name, "float32": float32[name], "mixed": mixed[name],
             "float32_other_seed": (other_seed or {}).get(name)}
            for name in float32 if name in mixed]  # fmt: skip


def accuracy_twins(root: pathlib.Path = ROOT) -> list[dict]:
    """Per config and model: test accuracy trained in float32 and in mixed precision."""
    runs = {"float32": (False, 0), "mixed": (True, 0), "float32_seed1": (False, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        smoke = {k: _train(SMOKE, pathlib.Path(tmp) / k, *how) for k, how in runs.items()}
    rows = _rows(SMOKE, smoke["float32"], smoke["mixed"], smoke["float32_seed1"])
    config, float32_run, mixed_run = (root / p for p in DEFAULT_TWINS)
    if (float32_run / "summary.json").exists() and (mixed_run / "summary.json").exists():
        rows += _rows(DEFAULT_TWINS[0], _accuracies(float32_run), _accuracies(mixed_run))
    return rows


def markdown(rows: list[dict], mixed_policy: str) -> list[str]:
    lines = [f"Test accuracy trained in float32 and in {mixed_policy} (every model evaluated in "
             "float32; the teacher of the default experiment is the shipped file in both):", "",
             f"| config | model | float32 | {mixed_policy} | change (points) | float32, seed 1: "
             "change (the noise) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        other = r.get("float32_other_seed")
        noise = "—" if other is None else f"{100 * (other - r['float32']):+.2f}"
        lines.append(f"| {r['config']} | {r['model']} | {100 * r['float32']:.2f} | "
                     f"{100 * r['mixed']:.2f} | {100 * (r['mixed'] - r['float32']):+.2f} | {noise} |")  # fmt: skip
    return [*lines, ""]
