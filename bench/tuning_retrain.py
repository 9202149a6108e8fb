"""A tuning search's winner retrained against the values it was compared with, over seeds.

A search ranks its trials on short runs (``--trial_epochs``) and one seed; before adopting its
``best.flags``, train both settings at the full budget of the search's own flags on several
seeds and compare test accuracy. ``python -m bench.tuning_retrain --search=DIR`` runs
``python -m fitnets_tf.train --flagfile=DIR/best.flags`` once per seed as it is (the winner)
and once with the ``--kd_lambda`` and ``--temperature`` the search started from (its trial of
its own flags' values: the paper's in ``configs/tune_fashion_mnist.flags``); everything else,
the tuned teacher included, is the same. Writes ``--output`` (CSV, one row per run) and prints
the mean and spread of each setting and their paired differences.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import statistics
import subprocess
import sys
import time


def starting_values(search: pathlib.Path) -> dict[str, float]:
    """λ0 and τ of the search's trial of its flags' own values (``defaults`` in its CSV)."""
    with open(search / "results.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["defaults"] == "True")
    return {"kd_lambda": float(row["kd_lambda"]), "temperature": float(row["temperature"])}


def train(best_flags: pathlib.Path, workdir: pathlib.Path, seed: int, overrides: dict) -> dict:
    command = [sys.executable, "-m", "fitnets_tf.train", f"--flagfile={best_flags}",
               f"--workdir={workdir}", f"--seed={seed}", "--nomeasure_latency",
               *(f"--{name}={value}" for name, value in overrides.items())]  # fmt: skip
    start = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    summary = json.loads((workdir / "summary.json").read_text())
    student = next(m for m in summary["models"] if m["name"] == summary["final_student_mode"])
    return {"test_accuracy": student["test_accuracy"], "seconds": round(seconds, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", type=pathlib.Path, required=True, help="the search's --workdir")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", type=pathlib.Path, required=True, help="where the runs go")
    parser.add_argument("--output", type=pathlib.Path, required=True, help="CSV of the runs")
    args = parser.parse_args(argv)
    baseline = starting_values(args.search)
    settings = {"best": {}, "starting_values": baseline}
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, overrides in settings.items():  # the two settings alternate: same load
            result = train(args.search / "best.flags", args.runs / f"{name}_s{seed}", seed,
                           overrides)  # fmt: skip
            rows.append({"setting": name, "seed": seed, **result})
            print(rows[-1], flush=True)
    with open(args.output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for name in settings:
        accuracies = [r["test_accuracy"] for r in rows if r["setting"] == name]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(f"{name}: {statistics.mean(accuracies):.4f} ± {spread:.4f} over {len(accuracies)}")
    paired = [b["test_accuracy"] - f["test_accuracy"]
              for b, f in zip(rows[0::2], rows[1::2], strict=True)]  # fmt: skip
    print(f"best - starting_values per seed: {[round(d, 4) for d in paired]}")


if __name__ == "__main__":
    main()
