"""Runs the benchmarks of bench/README.md and writes results/latest.{json,md}.

    python bench/run.py [--quick] [--out bench/results] [--only step_overhead,inference]

TensorFlow's thread pools are fixed when its runtime starts, so the thread count is set here,
before anything runs an op. The README's table (between its markers) is regenerated from the
same numbers when writing to the default output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Idle OpenMP threads sleep instead of spinning: on a shared machine a spinning pool takes the
# cores other jobs (and, in one process, the other runtime) need. PyTorch's eager student step
# ran 10-16x slower (measured by hand) with spinning than with PASSIVE at load 6-7, even alone
# in its process (bench/peer_process.py sets it for its workers too). Read when torch is
# imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.cpu_features import cpu_features  # noqa: E402
from fitnets_tf import latency  # noqa: E402

tf.get_logger().setLevel("ERROR")  # retracing notices: each timed function is traced once

BENCHMARKS = ("step_overhead", "keras_distiller", "caching", "inference", "xla_mixed", "pipeline",
              "student_profile", "torch_peer", "serving", "precision")  # fmt: skip
# Repeats (rounds), steps per timed call, examples per epoch: quick is a smoke run.
SIZES = {
    "quick": dict(repeats=3, steps=2, examples=1280, inference_repeats=3, pairs=("mnist",),
                  torch_variants=("eager_nchw", "eager_channels_last"), serving_rounds=2,
                  accuracy_twins=False),
    "full": dict(repeats=9, steps=3, examples=3840, inference_repeats=5, pairs=("mnist",),
                 torch_variants=("eager_nchw", "eager_channels_last", "compile_nchw",
                                 "compile_channels_last"),
                 serving_rounds=7, accuracy_twins=True),
}
README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def machine() -> dict:
    cpu = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), cpu)
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_features": cpu_features(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "load_average_start": os.getloadavg(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def run(names, size: str, pairs=None) -> dict:
    from bench import benchmarks  # after the thread settings: it builds models at import

    s = dict(SIZES[size], **({"pairs": pairs} if pairs else {}))
    steps = dict(repeats=s["repeats"], steps=s["steps"])
    results = {}
    for name in names:
        start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        try:
            results[name] = _one(benchmarks, name, s, steps)
        except Exception as err:  # the other benchmarks still run; the error is reported
            results.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"[:500]
            print(f"[bench] {name} failed: {err}", flush=True)
        results.setdefault("seconds", {})[name] = time.perf_counter() - start
    return {k: v for k, v in results.items() if v is not None}


def _one(benchmarks, name: str, s: dict, steps: dict):
    if name == "step_overhead":
        return {p: benchmarks.step_overhead(p, **steps) for p in s["pairs"]}
    if name == "keras_distiller":
        return None  # measured inside step_overhead (same rounds); reported in its table
    if name == "caching":
        with tempfile.TemporaryDirectory() as tmp:
            repeats = max(3, s["repeats"] // 3)
            return benchmarks.caching(examples=s["examples"], repeats=repeats, tmp_dir=tmp)
    if name == "inference":
        return benchmarks.inference(repeats=s["inference_repeats"])
    if name == "xla_mixed":
        return {"mnist": benchmarks.xla_and_mixed_precision("mnist", **steps)}
    if name == "student_profile":
        from bench.student_profile import student_profile

        return student_profile(**steps)
    if name == "torch_peer":
        from bench.torch_peer import peer

        threads = tf.config.threading.get_intra_op_parallelism_threads()
        return peer(**steps, threads=threads, variants=s["torch_variants"])
    if name == "serving":
        from bench.serving import serving_benchmark

        threads = tf.config.threading.get_intra_op_parallelism_threads()
        return serving_benchmark(rounds=s["serving_rounds"], threads=threads)
    if name == "precision":
        from bench.precision import precision
        from bench.precision_accuracy import accuracy_twins

        timed = precision(**steps, threads=tf.config.threading.get_intra_op_parallelism_threads())
        # Trains the smoke config twice: the full run only.
        return {**timed, "accuracy": accuracy_twins()} if s["accuracy_twins"] else timed
    return benchmarks.input_pipeline(examples=s["examples"], **steps)


# ----------------------------------------------------------------------------- report


def _r(q: dict) -> str:
    """A ratio with its interquartile range over rounds."""
    return f"{q['median']:.2f} [{q['q1']:.2f}–{q['q3']:.2f}] ({q['of_minima']:.2f})"


def _goal(q: dict, bound: float, *, at_least: bool = False) -> str:
    met = q["median"] >= bound if at_least else q["median"] <= bound
    return "met" if met else "**not met**"


def to_markdown(report: dict) -> str:
    m, r = report["machine"], report["results"]
    lines = [
        f"Run {report['date']} ({report['size']}), {m['cpu']}, {m['cpu_count']} cores, "
        f"{m['intra_op_threads']} intra-op threads, GPUs: {', '.join(m['gpus']) or 'none'}, "
        f"load average {m['load_average_start'][0]:.1f} at start and "
        f"{report['load_average_end'][0]:.1f} at end; TF {m['tensorflow']}, Keras {m['keras']}; "
        "CPU flags: " + (", ".join(k for k, v in m.get("cpu_features", {}).items() if v) or "?") + ".",
        "Ratios: median over interleaved rounds [interquartile range] (ratio of the fastest "
        "calls, the least disturbed by other jobs).",
        "",
    ]
    if "earlier" in report:
        e = report["earlier"]
        lines[0:0] = [f"Only {', '.join(k for k in r if k not in e['benchmarks'] and k != 'seconds')} "
                      f"rerun; {', '.join(e['benchmarks'])} from the run of {e['date']} ({e['size']}).",
                      ""]  # fmt: skip
    if "step_overhead" in r:
        lines += [
            "### 1–2. Step overhead and Keras' Distiller",
            "",
            "| pair (batch) | KD / (student + teacher) | hints / (guided + teacher to hint) "
            "| ours / keras.distillation throughput | goal ≤ 1.05 (KD, hints) · ≥ 1 |",
            "|---|---|---|---|---|",
        ]
        for pair, res in r["step_overhead"].items():
            q = res["ratios"]
            goals = ", ".join(
                (
                    _goal(q["kd_overhead"], 1.05),
                    _goal(q["hints_overhead"], 1.05),
                    _goal(q["ours_over_keras_throughput"], 1.0, at_least=True),
                )
            )
            lines.append(
                f"| {pair} ({res['batch_size']}) | {_r(q['kd_overhead'])} | "
                f"{_r(q['hints_overhead'])} | {_r(q['ours_over_keras_throughput'])} | {goals} |"
            )
        lines += ["", "Milliseconds per step (median; noise = half-IQR / median):", ""]
        names = list(next(iter(r["step_overhead"].values()))["ms_per_step"])
        lines += [
            "| step | " + " | ".join(r["step_overhead"]) + " |",
            "|---|" + "---|" * len(r["step_overhead"]),
        ]
        for name in names:
            cells = [
                f"{res['ms_per_step'][name]['ms']:.1f} (±{100 * res['ms_per_step'][name]['noise']:.0f}%)"
                for res in r["step_overhead"].values()
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Profiling ratios (against student + teacher):", ""]
        lines += ["| ratio | " + " | ".join(r["step_overhead"]) + " |"]
        lines += ["|---|" + "---|" * len(r["step_overhead"])]
        for key in ("kd_no_metrics_overhead", "fused_kd_overhead", "fused_kd_trackers_overhead",
                    "kd_cached_over_student"):  # fmt: skip
            cells = [_r(res["ratios"][key]) for res in r["step_overhead"].values()]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append("")
    if "caching" in r:
        c = r["caching"]
        q = c["ratios"]
        lines += [
            f"### 3. Teacher-output caching (Fashion-MNIST, {c['examples']} examples, "
            f"batch {c['batch_size']}, one `fit` epoch)",
            "",
            "| epoch | seconds | / plain student epoch | goal ≤ 1.15 |",
            "|---|---|---|---|",
            f"| plain student | {c['s_per_epoch']['student_epoch']:.2f} | 1 | |",
            f"| KD, live teacher | {c['s_per_epoch']['kd_live_epoch']:.2f} | "
            f"{_r(q['kd_live_over_student'])} | |",
            f"| KD, cached in memory | {c['s_per_epoch']['kd_cached_memory_epoch']:.2f} | "
            f"{_r(q['kd_cached_memory_over_student'])} | "
            f"{_goal(q['kd_cached_memory_over_student'], 1.15)} |",
            f"| KD, cached on disk | {c['s_per_epoch']['kd_cached_disk_epoch']:.2f} | "
            f"{_r(q['kd_cached_disk_over_student'])} | "
            f"{_goal(q['kd_cached_disk_over_student'], 1.15)} |",
        ]
        if "kd_cached_in_order_over_student" in q:
            lines += [
                f"| KD, `--cache_teacher` (pipeline order) | "
                f"{c['s_per_epoch']['kd_cached_in_order_epoch']:.2f} | "
                f"{_r(q['kd_cached_in_order_over_student'])} | "
                f"{_goal(q['kd_cached_in_order_over_student'], 1.15)} |",
                "",
                f"Hint epoch (stage 1): {c['s_per_epoch']['hints_live_epoch']:.2f} s with the live "
                f"teacher, {c['s_per_epoch']['hints_cached_epoch']:.2f} s with the cached hint: "
                f"cached / live {_r(q['hints_cached_over_live'])}.",
            ]
        lines += [
            "",
            f"Building the cache (one teacher pass): {c['cache_build_s_memory']:.2f} s in memory, "
            f"{c['cache_build_s_disk']:.2f} s to disk"
            + (f", {c['cache_build_s_in_order']:.2f} s in the pipeline's order (logits and "
               "validation)." if "cache_build_s_in_order" in c else "."),
            "",
        ]  # fmt: skip
    if "inference" in r:
        inf = r["inference"]
        lines += [
            "### 4. Inference, CIFAR-10 shapes (CPU)",
            "",
            "| net | M mults | batch 1 ms | batch 128 ms | images/s (128) | teacher / net, "
            "batch 1 | teacher / net, batch 128 | paper (GPU) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for net, mults in inf["multiplications_M"].items():
            b1, b128 = inf["batch_1"], inf["batch_128"]
            s1 = _r(b1["speedup"][net]) if net in b1["speedup"] else "1"
            s128 = _r(b128["speedup"][net]) if net in b128["speedup"] else "1"
            lines.append(
                f"| {net} | {mults:.0f} | {b1['ms_per_batch'][net]['ms']:.2f} | "
                f"{b128['ms_per_batch'][net]['ms']:.0f} | "
                f"{b128['images_per_second'][net]:.0f} | {s1} | {s128} | "
                f"{inf['paper_speedup'].get(net, 1)} |"
            )
        lines.append("")
    if "xla_mixed" in r:
        lines += [
            "### 5. XLA and mixed precision (KD step, MNIST pair)",
            "",
            "| pair | KD step ms (float32) | XLA / plain (KD step) | XLA / plain (teacher "
            "forward) | mixed_float16 / float32 (KD step) |",
            "|---|---|---|---|---|",
        ]
        for pair, x in r["xla_mixed"].items():
            q = x["ratios"]
            mixed = (
                _r(q["kd_mixed_float16_over_float32"])
                if "kd_mixed_float16_over_float32" in q
                else f"failed: {x['errors'].get('kd_mixed_float16', '?')}"
            )
            lines.append(
                f"| {pair} | {x['ms_per_step']['kd_float32']['ms']:.1f} | "
                f"{_r(q['kd_xla_over_float32'])} | {_r(q['teacher_forward_xla_over_plain'])} | "
                f"{mixed} |"
            )
        lines.append("")
    if "pipeline" in r:
        p = r["pipeline"]
        sps = p["steps_per_second"]
        lines += [
            f"### 6. Input pipeline (Fashion-MNIST, batch {p['batch_size']})",
            "",
            "| KD steps/s, in-memory batch | KD steps/s, real pipeline | real / in-memory step "
            "time | pipeline alone, batches/s | batches the pipeline makes per KD step |",
            "|---|---|---|---|---|",
            f"| {sps['kd_synthetic_source']:.1f} | {sps['kd_real_pipeline']:.1f} | "
            f"{_r(p['ratios']['kd_real_over_synthetic_time'])} | {sps['pipeline_alone']:.0f} | "
            f"{_r(p['ratios']['pipeline_batches_per_kd_step'])} |",
            "",
        ]
    lines += _goals_1_2_markdown(r)
    if "serving" in r:
        from bench.serving import markdown

        lines += markdown(r["serving"], _r)
    if "precision" in r:
        from bench import precision_accuracy
        from bench.precision import markdown

        lines += markdown(r["precision"], _r)
        if "accuracy" in r["precision"]:
            lines += precision_accuracy.markdown(r["precision"]["accuracy"], r["precision"]["mixed_policy"])
    for name, error in r.get("errors", {}).items():
        lines += [f"**{name} failed**: `{error}`", ""]
    return "\n".join(lines)


def _goals_1_2_markdown(r: dict) -> list[str]:
    """Issue 15's goals 1 (PyTorch peer) and 2 (the thin student's GFLOP/s)."""
    lines = []
    if "student_profile" in r:
        p = r["student_profile"]
        lines += ["### Thin student vs teacher, train step (achieved GFLOP/s = 3 × mults / time)", "",
                  "| step | ms | GFLOP/s |", "|---|---|---|"]
        lines += [f"| {k} | {v['ms']:.1f} | {p['achieved_gflops'][k]:.1f} |" for k, v in p["ms_per_step"].items()]
        lines += ["", "| ratio | value (goal: student / teacher GFLOP/s ≥ 0.7) |", "|---|---|"]
        lines += [f"| {k} | {_r(q)} |" for k, q in p["ratios"].items()] + [""]
    if "torch_peer" in r:
        t = r["torch_peer"]
        if "skipped" in t:
            return [*lines, f"PyTorch peer skipped: {t['skipped']}", ""]
        lines += [f"### Against PyTorch {t['torch']} at its best ({t['threads']} threads, batch {t['batch_size']})", "",
                  "| step | ours ms | PyTorch best ms (variant) | ours / PyTorch time (goal ≤ 1) |", "|---|---|---|---|"]
        for step, q in t["ours_over_torch_time"].items():
            v = t["best_torch_variant"][step]
            lines.append(f"| {step} | {t['ms_per_step'][f'keras/{step}']['ms']:.1f} | "
                         f"{t['ms_per_step'][f'torch_{v}/{step}']['ms']:.1f} ({v}) | {_r(q)} |")
        lines += ["", "Setup (build + torch.compile) seconds: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in t["setup_s"].items())
                  + (f". Timed in {t['timing']}." if "timing" in t else ""), ""]
    return lines  # fmt: skip


def update_readme(markdown: str) -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{markdown}\n{END}{tail}")


def _merge_earlier(report: dict, path: pathlib.Path, names) -> dict:
    """Keeps an earlier run's results for the benchmarks not run now (``--only``)."""
    if not path.exists() or set(names) >= set(BENCHMARKS):
        return report
    earlier = json.loads(path.read_text())
    kept = {k: v for k, v in earlier["results"].items() if k not in names and k in BENCHMARKS}
    if not kept:
        return report
    report["results"] = {**kept, **report["results"]}
    report["earlier"] = {
        "date": earlier["date"],
        "benchmarks": sorted(kept),
        "size": earlier["size"],
    }
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument(
        "--pairs", default=None, help="teacher/student pairs for 1-2: mnist, cifar (slow on CPU)"
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (CPU)")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {BENCHMARKS}")
    latency.set_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    size = "quick" if args.quick else "full"
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "size": size,
        "sizes": SIZES[size],
        "machine": machine(),
    }
    pairs = tuple(args.pairs.split(",")) if args.pairs else None
    report["results"] = run(names, size, pairs)
    report["load_average_end"] = os.getloadavg()
    out = pathlib.Path(args.out)
    report = _merge_earlier(report, out / "latest.json", names)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=1, default=float))
    for name in ("serving", "precision"):  # issue 15's goals 3-4, also on their own
        if name in names and name in report["results"]:
            own = {k: report[k] for k in ("date", "size", "machine", "load_average_end")}
            (out / f"{name}.json").write_text(
                json.dumps({**own, name: report["results"][name]}, indent=1, default=float)
            )
    markdown = to_markdown(report)
    (out / "latest.md").write_text(markdown + "\n")
    if out.resolve() == (ROOT / "bench" / "results").resolve():
        update_readme(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
