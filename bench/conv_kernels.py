"""Issue 15, goal 1: the teacher's convolutions in TensorFlow and PyTorch, kernel by kernel.

``python -m bench.conv_kernels`` (about 2 minutes; needs ``torch``) writes
``results/conv_kernels.json``; ``bench/README.md`` quotes it. The MNIST teacher's three
convolutions (:data:`bench.maxout_alternatives.TEACHER_CONVS`, batch 128) are what its forward
spends 89% of its time on, and the forward is the one step of goal 1 that stays slower than
PyTorch at its best. Two questions:

* **Which kernel runs?** Each side runs each convolution a few times in a process of its own
  with ``ONEDNN_VERBOSE=1``; oneDNN then prints its version and threading runtime, and one
  line per primitive it executes, naming its implementation (``brg_conv_fwd:avx512_core``,
  ...), memory formats and time. Both libraries call oneDNN: where they pick the same
  implementation for the same problem, a difference in time is the oneDNN release's each
  bundles, or the way each calls the kernel (its threads, its reorders, its own work around
  the call).
* **Where does the difference come from?** The three convolutions timed with 1 and with 2
  threads, TensorFlow and PyTorch eager (both layouts) each in a worker process of its own,
  alternated rounds (:func:`bench.peer_process.interleaved`). With one thread neither
  library's thread pool takes part. Also TensorFlow with 2 threads and
  ``TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD=true`` (:data:`CALLER_THREAD`), its one switch for
  how oneDNN uses its thread pool.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import re
import statistics
import subprocess
import sys

from bench import peer_process, standalone, timing
from bench.maxout_alternatives import TEACHER_CONVS
from bench.run import machine

RESULTS = pathlib.Path(__file__).parent / "results" / "conv_kernels.json"
THREADS = (1, 2)
LAYOUTS = ("nchw", "channels_last")
CALLS = 10  # convolutions per timed call
VERBOSE_CALLS = 5  # per convolution, under ONEDNN_VERBOSE (the first may differ: caches)


def parse_verbose(text: str) -> list[dict]:
    """oneDNN's ``exec`` lines in ``text`` as ``{"primitive", "implementation", "problem",
    "ms"}``, in order (other lines, and other verbose kinds, are skipped)."""
    executed = []
    for line in text.splitlines():
        fields = line.strip().split(",")
        if not fields[0].endswith("_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")  # the fields before it vary with version and options
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        executed.append({"primitive": fields[at + 2], "implementation": fields[at + 3],
                         "problem": fields[-2], "ms": ms})  # fmt: skip
    return executed


def onednn_build(text: str) -> dict:
    """The oneDNN version and CPU runtime (``threadpool``, ``OpenMP``...) that ``text``'s
    verbose header names."""
    version = re.search(r"_verbose,(?:v\d+,)?info,oneDNN (v[\w.]+)", text)
    runtime = re.search(r"_verbose,(?:v\d+,)?info,cpu,runtime:(\w+)", text)
    return {"version": version and version.group(1), "runtime": runtime and runtime.group(1)}


def convolution_of(problem: str) -> str | None:
    """``"conv1"``.. for a convolution problem of the teacher's (``mb128_ic48oc96_..._kh8..``),
    matched on input and output channels and kernel height; None for another problem."""
    found = {key: re.search(rf"{key}(\d+)", problem) for key in ("ic", "oc", "kh")}
    if not all(found.values()):
        return None
    ic, oc, kh = (int(found[key].group(1)) for key in ("ic", "oc", "kh"))
    for i, (_, kernel, _) in enumerate(TEACHER_CONVS, start=1):
        if (kernel[2], kernel[3], kernel[0]) == (ic, oc, kh):
            return f"conv{i}"
    return None


def kernels(executed: list[dict]) -> dict:
    """Per convolution: the implementations its convolution primitive ran with, the median of
    the primitive's own milliseconds (oneDNN's timing, the first call left out when there are
    more: it fills caches), and the other primitives (reorders of weights or data) executed
    since the previous convolution, averaged per call."""
    out, pending, kernel_ms = {}, [], {}
    for record in executed:
        if record["primitive"] != "convolution":
            pending.append(record)
            continue
        name = convolution_of(record["problem"])
        if name is None:
            pending = []
            continue
        entry = out.setdefault(name, {"implementations": [], "calls": 0, "around": {}})
        entry["calls"] += 1
        kernel_ms.setdefault(name, []).append(record["ms"])
        if record["implementation"] not in entry["implementations"]:
            entry["implementations"].append(record["implementation"])
        for other in pending:
            key = f"{other['primitive']}:{other['implementation']}"
            entry["around"][key] = entry["around"].get(key, 0) + 1
        pending = []
    for name, entry in out.items():
        entry["around"] = {k: n / entry["calls"] for k, n in entry["around"].items()}
        times = kernel_ms[name][1:] or kernel_ms[name]
        entry["kernel_ms"] = statistics.median(times)
    return out


#: What :func:`verbose_kernels` runs: TensorFlow (NHWC), and PyTorch in each layout.
VERBOSE_SIDES = ("tensorflow", *(f"torch_{layout}" for layout in LAYOUTS))


def verbose_worker(side: str, threads: int) -> None:
    """In a process with ``ONEDNN_VERBOSE=1``: each convolution :data:`VERBOSE_CALLS` times."""
    if side == "tensorflow":
        peer_process.pin_tensorflow(threads)
    else:
        peer_process.pin_torch(threads)
    from bench import maxout_alternatives  # noqa: PLC0415 (after the threads are set)

    if side == "tensorflow":
        candidates = maxout_alternatives.tensorflow_convolution_calls(VERBOSE_CALLS)
    else:
        layout = side.removeprefix("torch_")
        candidates = maxout_alternatives.torch_convolution_calls(layout, VERBOSE_CALLS)
    for run in candidates.values():
        run()


def verbose_kernels(side: str, threads: int) -> dict:
    """:func:`kernels` of ``side``'s convolutions (one of :data:`VERBOSE_SIDES`), from a
    process of its own."""
    env = {**os.environ, **peer_process.thread_env(threads), "ONEDNN_VERBOSE": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.conv_kernels", f"--verbose={side}",
                           f"--threads={threads}"],
                          capture_output=True, text=True, timeout=600, env=env,
                          cwd=peer_process.ROOT)  # fmt: skip
    if proc.returncode:
        return {"skipped": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    text = proc.stdout + "\n" + proc.stderr
    return {"onednn": onednn_build(text), "convolutions": kernels(parse_verbose(text))}


def tensorflow_worker(threads: int):
    """A :class:`bench.peer_process.Worker` factory: TensorFlow's three convolutions."""
    info = peer_process.pin_tensorflow(threads)
    from bench import maxout_alternatives  # noqa: PLC0415 (after the threads are set)

    return maxout_alternatives.tensorflow_convolution_calls(CALLS), info


def torch_worker(threads: int):
    """A :class:`bench.peer_process.Worker` factory: PyTorch's, in both layouts."""
    info = peer_process.pin_torch(threads)
    from bench import maxout_alternatives  # noqa: PLC0415

    candidates = {}
    for layout in LAYOUTS:
        for name, run in maxout_alternatives.torch_convolution_calls(layout, CALLS).items():
            candidates[f"{name}_{layout}"] = run
    return candidates, info


# TensorFlow's switch for its oneDNN thread pool: the calling thread takes a share of each
# parallel loop, instead of waiting while the pool's threads run it all.
CALLER_THREAD = {"TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "true"}


def workers() -> list[peer_process.Worker]:
    """TensorFlow and PyTorch with 1 and 2 threads, and TensorFlow with 2 and
    :data:`CALLER_THREAD` (``tensorflow_2_caller``)."""
    made = [peer_process.Worker(f"{side}_{threads}", f"bench.conv_kernels:{side}_worker",
                                {"threads": threads}, env=peer_process.thread_env(threads))
            for threads in THREADS for side in ("tensorflow", "torch")]  # fmt: skip
    env = {**peer_process.thread_env(2), **CALLER_THREAD}
    caller = peer_process.Worker("tensorflow_2_caller", "bench.conv_kernels:tensorflow_worker",
                                 {"threads": 2}, env=env)  # fmt: skip
    return [*made, caller]


def compare(times: dict) -> dict:
    """Per convolution and thread count: TensorFlow's time over PyTorch's in each layout (per
    round; ``channels_last`` runs oneDNN's NHWC kernels, as TensorFlow does); and each side's
    time with 2 threads over its time with 1 (PyTorch in its faster layout with 2)."""
    ms = timing.summary(times, CALLS)
    out = {}
    for i in range(1, len(TEACHER_CONVS) + 1):
        conv = f"conv{i}"
        entry = {}
        for threads in THREADS:
            ours = f"tensorflow_{threads}/{conv}"
            entry[f"threads_{threads}"] = {
                "tensorflow_ms": ms[ours]["ms"],
                **{f"torch_{lay}_ms": ms[f"torch_{threads}/{conv}_{lay}"]["ms"] for lay in LAYOUTS},
                **{f"tensorflow_over_torch_{lay}": timing.ratio(
                    times, ours, f"torch_{threads}/{conv}_{lay}") for lay in LAYOUTS},
            }  # fmt: skip
        faster = min(LAYOUTS, key=lambda lay: ms[f"torch_2/{conv}_{lay}"]["ms"])
        entry["tensorflow_2_over_1"] = timing.ratio(times, f"tensorflow_2/{conv}",
                                                    f"tensorflow_1/{conv}")  # fmt: skip
        entry["caller_thread_over_default"] = timing.ratio(
            times, f"tensorflow_2_caller/{conv}", f"tensorflow_2/{conv}")
        entry[f"torch_{faster}_2_over_1"] = timing.ratio(times, f"torch_2/{conv}_{faster}",
                                                         f"torch_1/{conv}_{faster}")  # fmt: skip
        out[conv] = entry
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--verbose", choices=VERBOSE_SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.verbose:
        verbose_worker(args.verbose, args.threads)
        return
    if importlib.util.find_spec("torch") is None:
        sys.exit("bench.conv_kernels compares with PyTorch: pip install -e '.[bench]' "
                 "(torch==2.13.0) first.")
    result = {"machine": machine(), "calls_per_round": CALLS, "timing": peer_process.describe()}
    result["kernels"] = {f"{side}_{threads}": verbose_kernels(side, threads)
                         for threads in THREADS for side in VERBOSE_SIDES}  # fmt: skip
    timed = peer_process.interleaved(workers(), repeats=args.repeats)
    result["workers"] = timed["workers"]
    result["ms"] = timing.summary(timed["times"], CALLS)
    result["compare"] = compare(timed["times"])
    standalone.write(RESULTS, result, shown=("kernels", "compare"))


if __name__ == "__main__":
    main()
