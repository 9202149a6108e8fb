"""Issue 15, goal 3: why TensorFlow serves the default pair at batch 1 several times slower than LiteRT.

``python -m bench.tf_small_batch`` (about 1 minute) writes ``results/tf_small_batch.json``;
``bench/README.md`` quotes it. The default pair is written as every export serves it
(:func:`fitnets_tf.export.serving.as_served`) and timed as :mod:`bench.serving` times it (a
block of calls per timed call, each runtime alone in a worker process, alternated rounds), in
nine workers:

* ``tensorflow_2`` / ``tensorflow_1``: the models in a ``tf.function`` with 2 and 1 intra-op
  threads (inter-op threads the same), at batch 1 and 128;
* ``eigen_2`` / ``eigen_1``: the same with ``TF_ENABLE_ONEDNN_OPTS=0``, TensorFlow's own
  (Eigen) kernels instead of oneDNN's, which might cost less per call at batch 1;
* ``xla_2`` / ``xla_1``: the same ``tf.function`` compiled by XLA (``jit_compile=True``): one
  compiled program per call in place of the executor's op-by-op dispatch;
* ``litert_2``: LiteRT's interpreter with 2 threads, the reference;
* ``floor_2`` / ``floor_1``: a concrete function that adds 0 to a batch-1 input (what any
  TensorFlow call costs), and, in the same process, the models' kernels at batch 1 profiled
  by TensorFlow's profiler (:func:`bench.op_profile.profile`, one inter-op thread so that the
  ops' times add up): what of a call is the kernels' and what is the runtime's around them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import tempfile
import time

import numpy as np

from bench import peer_process, serving, timing

RESULTS = pathlib.Path(__file__).parent / "results" / "tf_small_batch.json"
PROFILED_CALLS = 200


def floor_worker(files: dict[str, str], threads: int, shape: list[int]):
    """In a worker process: :func:`floor_candidates` with ``threads`` intra-op threads."""
    import tensorflow as tf  # noqa: PLC0415 (in the worker only)

    info = peer_process.pin_tensorflow(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)  # ops one after another: they add up
    candidates, found = floor_candidates(files, shape)
    return candidates, {**info, "inter_op_threads": 1, **found}


def floor_candidates(files: dict[str, str], shape: list[int]):
    """The add-zero call's block, and each model's batch-1 op profile (``info``'s fields)."""
    import tensorflow as tf  # noqa: PLC0415

    from bench import op_profile  # noqa: PLC0415 (imports TensorFlow's profiler)

    x = tf.constant(np.random.default_rng(0).random((1, *shape), dtype=np.float32))
    add_zero = tf.function(lambda x: x + 0.0).get_concrete_function(x)
    block, calls = _calibrated(lambda: add_zero(x).numpy())
    profiles = {}
    for name, path in files.items():
        # TensorFlow's threads are the process's (floor_worker); the argument is LiteRT's.
        predict = serving.worker_predictor("tensorflow", path, threads=0)

        def run(predict=predict):
            for _ in range(PROFILED_CALLS):
                predict(x)

        found = op_profile.profile(run, PROFILED_CALLS)
        profiles[name] = {"call_ms": found["step_ms"], "ops_ms": found["ops_ms"],
                          "by_op": found["by_op"]}  # fmt: skip
    return {"add_zero@1": block}, {"calls": {"add_zero@1": calls}, "profiles": profiles}


def _calibrated(call):
    """``(block, n)``: ``n`` calls lasting about :data:`bench.serving.BLOCK_S`, after warm-up."""
    for _ in range(3):
        call()
    start = time.perf_counter()
    call()
    n = max(1, math.ceil(serving.BLOCK_S / (time.perf_counter() - start)))

    def block():
        for _ in range(n):
            call()

    return block, n


def write_pair(directory: pathlib.Path) -> tuple[dict, dict, list[int], str]:
    """The default pair as served: ``.keras`` and ``.tflite`` files, names ``"<role>"``."""
    from fitnets_tf.export import serving as export  # noqa: PLC0415
    from fitnets_tf.export import writers

    found, source = serving.pairs(serving.RUN)
    keras_files, litert_files = {}, {}
    for role, model in found["fashion_mnist"].items():
        served, stem = export.as_served(model), directory / role
        keras_files[role] = str(stem.with_suffix(".keras"))
        served.save(keras_files[role])
        writers.write_litert(served, stem.with_suffix(".tflite"))
        litert_files[role] = str(stem.with_suffix(".tflite"))
    shape = list(found["fashion_mnist"]["student"].inputs[0].shape[1:])
    return keras_files, litert_files, shape, source


def workers(keras_files: dict, litert_files: dict, shape: list[int]) -> list:
    def worker(name, factory, files, runtime, threads, env=None):
        kwargs = {"files": files, "threads": threads, "shape": shape}
        if runtime:
            kwargs["runtime"] = runtime
        return peer_process.Worker(name, factory, kwargs,
                                   env={**peer_process.thread_env(threads), **(env or {})})  # fmt: skip

    eigen = {"TF_ENABLE_ONEDNN_OPTS": "0"}  # read when TensorFlow loads: a process of its own
    return [
        worker("tensorflow_2", "bench.serving:runtime_worker", keras_files, "tensorflow", 2),
        worker("tensorflow_1", "bench.serving:runtime_worker", keras_files, "tensorflow", 1),
        worker("eigen_2", "bench.serving:runtime_worker", keras_files, "tensorflow", 2, eigen),
        worker("eigen_1", "bench.serving:runtime_worker", keras_files, "tensorflow", 1, eigen),
        worker("xla_2", "bench.serving:runtime_worker", keras_files, serving.XLA, 2),
        worker("xla_1", "bench.serving:runtime_worker", keras_files, serving.XLA, 1),
        worker("litert_2", "bench.serving:runtime_worker", litert_files, "litert", 2),
        worker("floor_2", "bench.tf_small_batch:floor_worker", keras_files, None, 2),
        worker("floor_1", "bench.tf_small_batch:floor_worker", keras_files, None, 1),
    ]


def per_call(timed: dict) -> dict[str, list[float]]:
    """``{"<worker>/<name>@<batch>": [seconds per model call, per round]}``."""
    return {key: [s / timed["workers"][key.split("/", 1)[0]]["calls"][key.split("/", 1)[1]]
                  for s in seconds]
            for key, seconds in timed["times"].items()}  # fmt: skip


def summarise(times: dict, records: dict) -> dict:
    ratios = {}
    for role in ("student", "teacher"):
        for batch in serving.BATCHES:
            at = f"{role}@{batch}"
            for threads in ("2", "1"):
                tensorflow = f"tensorflow_{threads}/{at}"
                ratios[f"{at}/tensorflow_{threads}_over_litert"] = timing.ratio(
                    times, tensorflow, f"litert_2/{at}")
                for other in ("eigen", "xla"):  # oneDNN's kernels off; XLA: in the same rounds
                    if f"{other}_{threads}/{at}" in times:
                        ratios[f"{at}/{other}_{threads}_over_tensorflow_{threads}"] = timing.ratio(
                            times, f"{other}_{threads}/{at}", tensorflow)
            ratios[f"{at}/tensorflow_1_over_2"] = timing.ratio(
                times, f"tensorflow_1/{at}", f"tensorflow_2/{at}")  # fmt: skip
    profiles = {f"{w}/{role}@1": {**p, "ops_share": p["ops_ms"] / p["call_ms"]}
                for w in ("floor_2", "floor_1")
                for role, p in records[w]["profiles"].items()}  # fmt: skip
    return {"ms_per_call": timing.summary(times), "ratios": ratios, "profiles": profiles}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    from bench.run import machine  # noqa: PLC0415 (imports TensorFlow: after the arguments)

    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        keras_files, litert_files, shape, source = write_pair(pathlib.Path(tmp))
        timed = peer_process.interleaved(workers(keras_files, litert_files, shape),
                                         repeats=args.rounds)  # fmt: skip
    records = timed["workers"]
    result.update(student=source, teacher=serving.TEACHER, timing=peer_process.describe(),
                  workers=records, **summarise(per_call(timed), records))  # fmt: skip
    result["machine"]["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for name, found in result["ms_per_call"].items():
        print(f"{name}: {found['ms']:.4f} ms")
    for name, q in result["ratios"].items():
        print(f"{name}: {q['median']:.2f} [{q['q1']:.2f}-{q['q3']:.2f}]")
    for name, p in result["profiles"].items():
        print(f"{name}: call {p['call_ms']:.3f} ms, kernels {p['ops_ms']:.3f} ms "
              f"({p['ops_share']:.0%}): " + ", ".join(f"{op} {ms:.3f}" for op, ms in p["by_op"].items()))  # fmt: skip


if __name__ == "__main__":
    main()
