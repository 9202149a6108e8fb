"""Goals 3 and 4 (serving): the student served in TensorFlow, LiteRT and ONNX Runtime, and quantized.

Pairs: the default experiment's (the shipped trained ``wide_cnn`` teacher and the ``thin_cnn``
student of ``runs/fashion_mnist`` when that run has one, else a fresh one: speed does not depend
on the weights) and the paper's MNIST pair (``mnist_teacher`` / ``mnist_fitnet``, fresh). Every
model is timed as every export serves it (:func:`fitnets_tf.export.serving.as_served`: float32,
batch normalization folded) at batch 1 and 128.

Latency: every model is written once as its runtime serves it (a ``.keras`` file for
TensorFlow, ``.tflite``, ``.onnx``), and each runtime times its files in a worker process of its
own (:mod:`bench.peer_process`), one runtime after the other, in alternated rounds. Timed in one
process, ONNX Runtime's and LiteRT's idle threads slowed TensorFlow's next calls by up to 1.5x
and made its figures depend on their place in the round; an idle ONNX Runtime process beside
the LiteRT one slowed LiteRT's small calls 1.5-2x, and so did two ONNX Runtime sessions in one
process (:func:`runtime_rounds`). A timed call runs a block of model calls lasting about
:data:`BLOCK_S` (at least one), the count fixed when the worker starts; a round's figure is the
block's time per model call, and ratios are taken per round, as in :mod:`bench.timing`.
TensorFlow calls the model in a ``tf.function`` (``training=False``), LiteRT its interpreter,
ONNX Runtime its session with its default spinning workers, each with ``threads`` threads. The
quantized students (:mod:`fitnets_tf.export.quantize`: LiteRT dynamic-range, LiteRT full int8,
ONNX Runtime int8, calibrated on the first :data:`~fitnets_tf.export.quantize.CALIBRATION_IMAGES`
training images) are timed the same way against the float32 student written the same way (with
the export's softmax); their accuracy is measured on the 10K Fashion-MNIST test images beside
the float32 student's.
"""

from __future__ import annotations

import gc
import math
import os
import pathlib
import statistics
import tempfile
import time

import keras
import numpy as np

from bench import peer_process, timing
from fitnets_tf import builders, data, latency, models
from fitnets_tf.export import quantize, serving, writers
from fitnets_tf.export.verify import litert_interpreter
from fitnets_tf.preprocessing import Preprocessor
from fitnets_tf.run import io
from fitnets_tf.run.layout import RunLayout

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = ROOT / "runs" / "fashion_mnist"
TEACHER = "pretrained:fashion_mnist_wide_cnn"
RUNTIMES = ("tensorflow", "litert", "onnxruntime")
TENSORFLOW, XLA = "tensorflow", "tensorflow_xla"
BATCHES = (1, 128)
QUANTIZED = {"litert_dynamic": ("dynamic", "litert"), "litert_int8": ("int8", "litert"),
             "onnxruntime_int8": ("int8", "onnx")}  # fmt: skip
# The float32 student written once and timed by the same harness as the quantized kinds, each
# of which is compared with the one of its runtime: only the quantization differs.
FLOAT32 = {"litert": "litert_float32", "onnx": "onnxruntime_float32"}
GOAL_SHARE = 0.7  # speed-up / multiplication ratio, in at least one runtime
SLOW_RUNTIME = 2.0  # slowest runtime / best, per model and batch
UNFOLDED = "tensorflow_bn_unfolded"  # the Keras model as trained, timed in TensorFlow
BLOCK_S = 0.05  # seconds of model calls per timed call: a batch-1 call alone is ~40 us


def pairs(run: pathlib.Path) -> tuple[dict, str]:
    """``{pair: {"teacher": model, "student": model}}`` in float32, and where the student is from."""
    files = RunLayout(run)
    trained = next((p for p in (files.student, files.mode_student("fitnet")) if p.is_file()), None)
    student = (io.load_model(trained, "student") if trained
               else models.build("thin_cnn", (28, 28, 1), 10, seed=1))  # fmt: skip
    mnist = {role: models.build(name, (28, 28, 1), 10, seed=seed)
             for role, name, seed in (("teacher", "mnist_teacher", 0), ("student", "mnist_fitnet", 1))}  # fmt: skip
    found = {
        "fashion_mnist": {"teacher": builders.load_teacher(TEACHER), "student": student},
        "mnist": mnist,
    }
    found = {p: {r: serving.in_float32(m) for r, m in roles.items()} for p, roles in found.items()}
    return found, str(trained.relative_to(ROOT)) if trained else "untrained thin_cnn"


def write_models(found: dict, directory: pathlib.Path) -> dict[str, dict[str, str]]:
    """``{runtime: {name: file}}``: each model as its runtime serves it (batch norm folded).

    Names are the result's: ``"<pair>/<role>/<runtime>"``, and ``"fashion_mnist/<role>/"``
    :data:`UNFOLDED` for the default pair as trained, in TensorFlow.
    """
    files = {runtime: {} for runtime in RUNTIMES}
    for pair, roles in found.items():
        for role, model in roles.items():
            served, stem = serving.as_served(model), directory / f"{pair}_{role}"
            files["tensorflow"][f"{pair}/{role}/tensorflow"] = _saved(served, stem, "_served.keras")
            writers.write_litert(served, stem.with_suffix(".tflite"))
            files["litert"][f"{pair}/{role}/litert"] = str(stem.with_suffix(".tflite"))
            writers.write_onnx(served, stem.with_suffix(".onnx"))
            files["onnxruntime"][f"{pair}/{role}/onnxruntime"] = str(stem.with_suffix(".onnx"))
    for role, model in found["fashion_mnist"].items():
        stem = directory / f"fashion_mnist_{role}"
        files["tensorflow"][f"fashion_mnist/{role}/{UNFOLDED}"] = _saved(model, stem, "_trained.keras")
    return files


def _saved(model: keras.Model, stem: pathlib.Path, suffix: str) -> str:
    path = stem.with_name(stem.name + suffix)
    model.save(path)
    return str(path)


def runtime_worker(runtime: str, files: dict[str, str], threads: int, shape: list[int]):
    """In a worker process: ``{"<name>@<batch>": block}`` for every file of one runtime.

    ``info["calls"]`` holds each block's number of model calls, fixed here from one timed call.
    """
    info = peer_process.pin_tensorflow(threads) if runtime.startswith(TENSORFLOW) else {}
    candidates, calls = {}, {}
    for name, path in files.items():
        predict = worker_predictor(runtime, path, threads)
        for batch in BATCHES:
            x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
            for _ in range(3):  # tracing, allocation, caches
                predict(x)
            start = time.perf_counter()
            predict(x)
            n = math.ceil(BLOCK_S / (time.perf_counter() - start))
            n = min(latency.MAX_REPEATS, max(1, n))  # the library's cap on timed calls
            candidates[f"{name}@{batch}"] = _block(predict, x, n)
            calls[f"{name}@{batch}"] = n
    return candidates, {**info, "calls": calls}


def _block(predict, x, n: int):
    def run():
        for _ in range(n):
            predict(x)

    return run


def worker_predictor(runtime: str, path: str, threads: int):
    """``predict(x) -> numpy array`` of one file, as ``runtime`` serves it (in its worker)."""
    if not runtime.startswith(TENSORFLOW):
        return artifact_predictor(pathlib.Path(path), "litert" if runtime == "litert" else "onnx", threads)
    import tensorflow as tf  # noqa: PLC0415 (in the TensorFlow worker only)

    import fitnets_tf.layers  # noqa: F401, PLC0415 (registers the maxout layers for loading)

    model = keras.saving.load_model(path, safe_mode=True)
    # "tensorflow_xla": the same call compiled by XLA, one kernel launch per call in place of
    # the executor's op-by-op dispatch (bench/tf_small_batch.py times it at batch 1).
    infer = tf.function(lambda x: model(x, training=False), jit_compile=runtime == XLA)
    return lambda x: infer(x).numpy()  # a server copies the result out


def artifact_predictor(path: pathlib.Path, fmt: str, threads: int):
    """``predict(x) -> probabilities`` of a written artifact, one interpreter per batch shape."""
    if fmt == "onnx":
        import onnxruntime  # noqa: PLC0415 (the benchmark needs it; the library makes it optional)

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # ONNX Runtime's defaults (spinning workers), as fitnets_tf.latency times it: faster on
        # idle cores, slower under load (see the serving notes of bench/README.md).
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run([serving.OUTPUT_NAME], {serving.INPUT_NAME: x})[0]
    interpreters = {}

    def predict(x):
        if x.shape not in interpreters:
            interpreter = litert_interpreter(path, num_threads=threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, x.shape)
            interpreter.allocate_tensors()
            interpreters[x.shape] = (interpreter, index, interpreter.get_output_details()[0]["index"])
        interpreter, index, output = interpreters[x.shape]
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return predict


def accuracy(predict, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    hits = [np.argmax(predict(images[i : i + batch]), -1) == labels[i : i + batch]
            for i in range(0, len(images), batch)]  # fmt: skip
    return float(np.mean(np.concatenate(hits)))


def student_artifacts(student, calibration, directory: pathlib.Path) -> tuple[dict, dict]:
    """``{variant: (format, path)}`` of the float32 and quantized students, and the failures."""
    wrapped = serving.build_serving_model(student)
    found, errors = {}, {}
    for fmt, variant in FLOAT32.items():
        path = directory / f"{variant}{writers.SUFFIXES[fmt]}"
        (writers.write_litert if fmt == "litert" else writers.write_onnx)(wrapped, path)
        found[variant] = (fmt, path)
    for variant, (quantization, fmt) in QUANTIZED.items():
        path = directory / f"{variant}{writers.SUFFIXES[fmt]}"
        try:
            # The writers, not export_quantized: every kind is measured, offered or not, and
            # its accuracy is the judge here rather than export's probability check.
            quantize.WRITERS[(quantization, fmt)](wrapped, path, calibration)
            found[variant] = (fmt, path)
        except Exception as err:  # the other variants are still measured
            errors[variant] = f"{type(err).__name__}: {err}"[:300]
    return found, errors


def test_and_calibration(run: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Fashion-MNIST's 10K test images and the calibration images, preprocessed as the run did.

    Both go through the run's fitted ``preprocessor.keras`` (without one: the dataset's
    default, ``scale``), as ``fitnets-export --quantize=int8`` calibrates.
    """
    files = RunLayout(run)
    # Without a run (a fresh checkout): the dataset's default, which fits no constants, so
    # nothing is refitted on the calibration images.
    preprocessor = (io.load_model(files.preprocessor, "preprocessor") if files.preprocessor.is_file()
                    else Preprocessor("scale"))  # fmt: skip
    source = quantize.calibration_source(run) if files.flags.is_file() else {"name": "fashion_mnist"}
    calibration = quantize.calibration_images(source, preprocessor)
    # The run's own test images: a user's folder or file by the run's draw (and size).
    same = {key: source[key] for key in ("holdout", "image_size", "resize_mode") if key in source}
    test = data.load(source["name"], preprocessing="none", batch_size=1000,
                     limit=10_000, data_dir=source.get("data_dir"), **same).test  # fmt: skip
    images, labels = (np.concatenate(a) for a in zip(*test.as_numpy_iterator(), strict=True))
    images = keras.ops.convert_to_numpy(preprocessor(images))
    layers = getattr(preprocessor, "layers", [preprocessor])  # a run's file: a Sequential
    modes = [layer.mode for layer in layers if hasattr(layer, "mode")]
    mode = modes[0] if modes else "the dataset's default"
    return np.asarray(images, "float32"), labels, calibration, mode


def serving_benchmark(*, rounds: int, threads: int, run=RUN) -> dict:
    """Goals 3 and 4 (serving); JSON-able, with the load average at start and end."""
    load_start = os.getloadavg()
    found, student_source = pairs(pathlib.Path(run))
    images, labels, calibration, mode = test_and_calibration(pathlib.Path(run))
    student = found["fashion_mnist"]["student"]
    with tempfile.TemporaryDirectory() as tmp:
        files = write_models(found, pathlib.Path(tmp))
        artifacts, errors = student_artifacts(student, calibration, pathlib.Path(tmp))
        accuracies = {"float32": accuracy(lambda x: student(x, training=False), images, labels)}
        for variant, (fmt, path) in artifacts.items():
            accuracies[variant] = accuracy(artifact_predictor(path, fmt, threads), images, labels)
            runtime = "litert" if fmt == "litert" else "onnxruntime"
            files[runtime][f"fashion_mnist/student/{variant}"] = str(path)
        gc.collect()  # the sessions above: no threads of theirs beside the timed workers
        shape = list(student.inputs[0].shape[1:])
        # ONNX Runtime one session per process: an idle session's threads spin beside the next.
        groups = [(runtime, files[runtime]) for runtime in RUNTIMES if runtime != "onnxruntime"]
        groups += [("onnxruntime", {name: path}) for name, path in files["onnxruntime"].items()]
        timed = [runtime_rounds(runtime, group, threads, shape, rounds) for runtime, group in groups]
    times = {name: t for result in timed for name, t in _per_model_call(result).items()}
    mults = {pair: {role: models.count_multiplications(m) for role, m in roles.items()}
             for pair, roles in found.items()}  # fmt: skip
    return {
        "student": student_source,
        "teacher": TEACHER,
        "preprocessing": mode,
        "calibration_images": len(calibration),
        "test_images": len(images),
        "rounds": rounds,
        "threads": threads,
        "timing": "each runtime alone in a worker process, alternated rounds",
        "calls_per_block": {k: n for r in timed for w in r["workers"].values()
                            for k, n in w["calls"].items()},  # fmt: skip
        "ms_per_batch": timing.summary(times),
        "multiplications": mults,
        "speedup": _speedups(times, mults),
        "runtime_spread": _runtime_spread(times, found),
        "folded_over_unfolded": {
            f"{role}@{batch}": timing.ratio(times, f"fashion_mnist/{role}/tensorflow@{batch}",
                                            f"fashion_mnist/{role}/{UNFOLDED}@{batch}")
            for role in found["fashion_mnist"] for batch in BATCHES
        },  # fmt: skip
        "quantized": _quantized(times, accuracies, errors),
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }


def runtime_rounds(runtime: str, files: dict, threads: int, shape: list[int], rounds: int):
    """One runtime's files timed in alternated rounds, in a worker process alone on the machine.

    One runtime at a time: an idle ONNX Runtime worker beside the others (its threads spin
    for work) made LiteRT's batch-1 calls of the students 1.5-2x slower, and quiet gaps
    between processes did not help; two ONNX Runtime sessions in one process slowed each
    other's small calls the same way, so each of its files gets a process of its own.
    Ratios between files of one process are per round; the others pair rounds taken a
    minute or two apart.
    """
    worker = peer_process.Worker(runtime, "bench.serving:runtime_worker",
                                 {"runtime": runtime, "files": files, "threads": threads,
                                  "shape": shape}, env=peer_process.thread_env(threads))  # fmt: skip
    return peer_process.interleaved([worker], repeats=rounds)


def _per_model_call(timed: dict) -> dict[str, list[float]]:
    """``{"<name>@<batch>": [seconds per model call, one per round]}`` from the workers' blocks."""
    times = {}
    for key, seconds in timed["times"].items():
        runtime, name = key.split("/", 1)
        calls = timed["workers"][runtime]["calls"][name]
        times[name] = [s / calls for s in seconds]
    return times


def _speedups(times, mults) -> dict:
    """Teacher time / student time per pair, runtime and batch; and that / the mults ratio."""
    found = {}
    for pair, m in mults.items():
        ratio = m["teacher"] / m["student"]
        found[pair] = {"multiplication_ratio": ratio}
        for runtime in RUNTIMES:
            for batch in BATCHES:
                q = timing.ratio(times, f"{pair}/teacher/{runtime}@{batch}", f"{pair}/student/{runtime}@{batch}")
                found[pair][f"{runtime}@{batch}"] = {**q, "share_of_mults": q["median"] / ratio}
        shares = [v["share_of_mults"] for k, v in found[pair].items() if "@" in k]
        found[pair]["goal_met"] = max(shares) >= GOAL_SHARE
    return found


def _runtime_spread(times, found) -> dict:
    """Per model and batch: the fastest runtime, the slowest, and slowest / fastest."""
    spread = {}
    for pair, roles in found.items():
        for role in roles:
            for batch in BATCHES:
                ms = {rt: statistics.median(times[f"{pair}/{role}/{rt}@{batch}"]) for rt in RUNTIMES}
                best, worst = min(ms, key=ms.get), max(ms, key=ms.get)
                q = timing.ratio(times, f"{pair}/{role}/{worst}@{batch}", f"{pair}/{role}/{best}@{batch}")
                spread[f"{pair}/{role}@{batch}"] = {"best": best, "slowest": worst, **q,
                                                    "flagged": q["median"] > SLOW_RUNTIME}  # fmt: skip
    return spread


def _quantized(times, accuracies, errors) -> dict:
    """Accuracy change (points) and time against the float32 student's artifact, same runtime."""
    result = {"float32_accuracy": accuracies["float32"], "errors": errors, "variants": {},
              "float32_artifacts_accuracy": {v: accuracies.get(v) for v in FLOAT32.values()}}  # fmt: skip
    for variant, (_, fmt) in QUANTIZED.items():
        if variant not in accuracies:
            continue
        entry = {"accuracy": accuracies[variant],
                 "change_points": 100 * (accuracies[variant] - accuracies["float32"])}  # fmt: skip
        for batch in BATCHES:
            entry[f"time_over_float32@{batch}"] = timing.ratio(
                times, f"fashion_mnist/student/{variant}@{batch}", f"fashion_mnist/student/{FLOAT32[fmt]}@{batch}")
        result["variants"][variant] = entry
    return result


# ----------------------------------------------------------------------------- report


def markdown(s: dict, ratio) -> list[str]:
    """The README's serving tables; ``ratio`` formats a :func:`bench.timing.ratio` result."""
    load = s["load_average"]
    lines = ["### Serving: student vs teacher in TensorFlow, LiteRT and ONNX Runtime (goal 3)", "",
             f"Float32 as exported (batch norm folded), {s['threads']} threads, median ms per batch "
             f"over {s['rounds']} rounds; each runtime alone in a process of its own (ONNX Runtime: "
             "each model), "
             f"a timed call a block of model calls of about {BLOCK_S:g} s; load average "
             f"{load['start'][0]:.1f} at start, {load['end'][0]:.1f} at end. Student: "
             f"{s['student']}; teacher: {s['teacher']}.", "",
             "| model | " + " | ".join(f"{rt} b{b}" for b in BATCHES for rt in RUNTIMES) + " |",
             "|---|" + "---|" * len(BATCHES) * len(RUNTIMES)]
    ms = s["ms_per_batch"]
    for pair, m in s["multiplications"].items():
        for role in m:
            cells = [f"{ms[f'{pair}/{role}/{rt}@{b}']['ms']:.3g}" for b in BATCHES for rt in RUNTIMES]
            lines.append(f"| {pair} {role} ({m[role] / 1e6:.1f}M mults) | " + " | ".join(cells) + " |")
    lines += ["", f"Speed-up teacher / student time (per round) and its share of the multiplication "
              f"ratio (goal ≥ {GOAL_SHARE} in at least one runtime):", "",
              "| pair (mults ratio) | runtime | batch 1 | batch 128 | goal (any runtime) |",
              "|---|---|---|---|---|"]
    for pair, sp in s["speedup"].items():
        for rt in RUNTIMES:
            cells = [f"{ratio(sp[f'{rt}@{b}'])} = {sp[f'{rt}@{b}']['share_of_mults']:.2f}×" for b in BATCHES]
            goal = ("met" if sp["goal_met"] else "**not met**") if rt == RUNTIMES[0] else ""
            lines.append(f"| {pair} ({sp['multiplication_ratio']:.1f}×) | {rt} | " + " | ".join(cells) + f" | {goal} |")
    lines += ["", f"Slowest runtime / fastest, per model (flagged above {SLOW_RUNTIME}×):", "",
              "| model @ batch | fastest | slowest | slowest / fastest |", "|---|---|---|---|"]
    for key, v in s["runtime_spread"].items():
        flag = " **> 2×**" if v["flagged"] else ""
        lines.append(f"| {key} | {v['best']} | {v['slowest']} | {ratio(v)}{flag} |")
    lines += ["", "TensorFlow, the served model (batch norm folded, `fitnets_tf.export.fold`) over the "
              "Keras model as trained (BatchNormalization layers kept), same rounds:", "",
              "| model @ batch | ms as trained | folded / as trained |", "|---|---|---|"]
    for key, v in s.get("folded_over_unfolded", {}).items():
        role, batch = key.split("@")
        lines.append(f"| fashion_mnist/{key} | {ms[f'fashion_mnist/{role}/{UNFOLDED}@{batch}']['ms']:.3g}"
                     f" | {ratio(v)} |")
    q = s["quantized"]
    lines += ["", f"### Quantized student (goal 4): accuracy on the {s['test_images']} Fashion-MNIST "
              f"test images ({s['preprocessing']} preprocessing), calibrated on {s['calibration_images']} "
              "training images", "",
              "| student | test accuracy | change (points) | ms b1 | ms b128 | time / float32 same "
              "runtime, b1 | b128 |", "|---|---|---|---|---|---|---|",
              f"| float32 (TensorFlow) | {100 * q['float32_accuracy']:.2f} % | | | | | |"]
    for variant, acc in q["float32_artifacts_accuracy"].items():
        lines.append(f"| {variant} | {100 * acc:.2f} % | | {_ms(ms, variant, 1)} | {_ms(ms, variant, 128)} | | |")
    for variant, v in q["variants"].items():
        lines.append(f"| {variant} | {100 * v['accuracy']:.2f} % | {v['change_points']:+.2f} | "
                     f"{_ms(ms, variant, 1)} | {_ms(ms, variant, 128)} | "
                     f"{ratio(v['time_over_float32@1'])} | {ratio(v['time_over_float32@128'])} |")
    lines += [f"| {variant} | failed: `{error}` | | | | | |" for variant, error in q["errors"].items()]
    return [*lines, ""]  # fmt: skip


def _ms(ms: dict, variant: str, batch: int) -> str:
    return f"{ms[f'fashion_mnist/student/{variant}@{batch}']['ms']:.3g}"
