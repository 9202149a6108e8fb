"""Goals 3 and 4 (serving): the student served in TensorFlow, LiteRT and ONNX Runtime, and quantized.

Pairs: the default experiment's (the shipped trained ``wide_cnn`` teacher and the ``thin_cnn``
student of ``runs/fashion_mnist`` when that run has one, else a fresh one: speed does not depend
on the weights) and the paper's MNIST pair (``mnist_teacher`` / ``mnist_fitnet``, fresh). Every
model is timed as every export serves it (:func:`fitnets_tf.export.serving.as_served`: float32,
batch normalization folded) at batch 1 and 128.

Latency: each round measures every (model, runtime) once, in a rotating order, with
:func:`fitnets_tf.latency.measure_latency` (TensorFlow) and
:func:`~fitnets_tf.latency.measure_served_latency` (LiteRT, ONNX Runtime; each call exports the
model afresh, untimed); a round's figure is the median of ``repeats`` calls, and ratios are
taken per round, as in :mod:`bench.timing`. The quantized students
(:mod:`fitnets_tf.export.quantize`: LiteRT dynamic-range, LiteRT full int8, ONNX Runtime int8,
calibrated on the first :data:`~fitnets_tf.export.quantize.CALIBRATION_IMAGES` training images)
are written once and timed in the same rounds, each with its runtime's own interpreter or
session, against the float32 student written and timed the same way; their accuracy is
measured on the 10K Fashion-MNIST test images beside the float32 student's.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import tempfile

import keras
import numpy as np

from bench import timing
from fitnets_tf import builders, data, latency, models
from fitnets_tf.export import quantize, serving, writers
from fitnets_tf.export.verify import litert_interpreter
from fitnets_tf.run import io
from fitnets_tf.run.layout import RunLayout

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = ROOT / "runs" / "fashion_mnist"
TEACHER = "pretrained:fashion_mnist_wide_cnn"
RUNTIMES = ("tensorflow", "litert", "onnxruntime")
BATCHES = (1, 128)
QUANTIZED = {"litert_dynamic": ("dynamic", "litert"), "litert_int8": ("int8", "litert"),
             "onnxruntime_int8": ("int8", "onnx")}  # fmt: skip
# The float32 student written once and timed by the same harness as the quantized kinds, each
# of which is compared with the one of its runtime: only the quantization differs.
FLOAT32 = {"litert": "litert_float32", "onnx": "onnxruntime_float32"}
GOAL_SHARE = 0.7  # speed-up / multiplication ratio, in at least one runtime
SLOW_RUNTIME = 2.0  # slowest runtime / best, per model and batch
UNFOLDED = "tensorflow_bn_unfolded"  # the Keras model as trained, timed in TensorFlow


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


def measure(model: keras.Model, runtime: str, repeats: int, threads: int) -> dict[int, float]:
    """Median ms per batch of one float32 model in one runtime, per batch size."""
    kwargs = dict(batch_sizes=BATCHES, warmup=1, repeats=repeats, threads=threads)
    if runtime == "tensorflow":
        result = latency.measure_latency(model, **kwargs)
    else:
        result = latency.measure_served_latency(model, runtime, **kwargs)
    return {batch: r["ms_per_batch"] for batch, r in result.items()}


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


def artifact_latency(predict, shape, repeats: int) -> dict[int, float]:
    """Median ms per batch of ``predict``, as :func:`measure` times the float32 models."""
    timings = latency.time_calls(predict, None, shape, BATCHES, warmup=1, repeats=repeats)
    return {batch: t["ms_per_batch"] for batch, t in timings.items()}


def accuracy(predict, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    hits = [np.argmax(predict(images[i : i + batch]), -1) == labels[i : i + batch]
            for i in range(0, len(images), batch)]  # fmt: skip
    return float(np.mean(np.concatenate(hits)))


def student_artifacts(student, calibration, directory: pathlib.Path, threads: int) -> dict:
    """``{variant: predict}`` of the float32 and quantized students; a failure is reported."""
    wrapped = serving.build_serving_model(student)
    found, errors = {}, {}
    for fmt, variant in FLOAT32.items():
        path = directory / f"{variant}{writers.SUFFIXES[fmt]}"
        (writers.write_litert if fmt == "litert" else writers.write_onnx)(wrapped, path)
        found[variant] = artifact_predictor(path, fmt, threads)
    for variant, (quantization, fmt) in QUANTIZED.items():
        path = directory / f"{variant}{writers.SUFFIXES[fmt]}"
        try:
            # The writers, not export_quantized: every kind is measured, offered or not, and
            # its accuracy is the judge here rather than export's probability check.
            quantize.WRITERS[(quantization, fmt)](wrapped, path, calibration)
            found[variant] = artifact_predictor(path, fmt, threads)
        except Exception as err:  # the other variants are still measured
            errors[variant] = f"{type(err).__name__}: {err}"[:300]
    return found, errors


def test_and_calibration(run: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Fashion-MNIST's 10K test images and the calibration images, preprocessed as the run did.

    Both go through the run's fitted ``preprocessor.keras`` (without one: the dataset's
    default, ``scale``), as ``fitnets-export --quantize=int8`` calibrates.
    """
    files = RunLayout(run)
    preprocessor = io.load_model(files.preprocessor, "preprocessor") if files.preprocessor.is_file() else None
    source = quantize.calibration_source(run) if files.flags.is_file() else {"name": "fashion_mnist"}
    calibration = quantize.calibration_images(source, preprocessor)
    test = data.load(source["name"], preprocessing="none" if preprocessor else "auto", batch_size=1000,
                     limit=10_000, data_dir=source.get("data_dir")).test  # fmt: skip
    images, labels = (np.concatenate(a) for a in zip(*test.as_numpy_iterator(), strict=True))
    if preprocessor is not None:
        images = keras.ops.convert_to_numpy(preprocessor(images))
    modes = [layer.mode for layer in getattr(preprocessor, "layers", ()) if hasattr(layer, "mode")]
    mode = modes[0] if modes else "the dataset's default"
    return np.asarray(images, "float32"), labels, calibration, mode


def interleaved_rounds(candidates: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per batch, ``{"name@batch": [one per round]}``, rotating the order each round."""
    names = list(candidates)
    times = {f"{name}@{batch}": [] for name in names for batch in BATCHES}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for batch, ms in candidates[name]().items():
                times[f"{name}@{batch}"].append(ms / 1000.0)
    return times


def serving_benchmark(*, rounds: int, repeats: int, threads: int, run=RUN) -> dict:
    """Goals 3 and 4 (serving); JSON-able, with the load average at start and end."""
    load_start = os.getloadavg()
    found, student_source = pairs(pathlib.Path(run))
    images, labels, calibration, mode = test_and_calibration(pathlib.Path(run))
    student = found["fashion_mnist"]["student"]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts, errors = student_artifacts(student, calibration, pathlib.Path(tmp), threads)
        served = {p: {r: serving.as_served(m) for r, m in roles.items()} for p, roles in found.items()}
        candidates = {
            f"{pair}/{role}/{runtime}": (lambda m=model, rt=runtime: measure(m, rt, repeats, threads))
            for pair, roles in served.items() for role, model in roles.items() for runtime in RUNTIMES
        }  # fmt: skip
        # What folding batch norm buys TensorFlow: the default pair as trained, not folded.
        for role, model in found["fashion_mnist"].items():
            candidates[f"fashion_mnist/{role}/{UNFOLDED}"] = (
                lambda m=model: measure(m, "tensorflow", repeats, threads))  # fmt: skip
        shape = tuple(student.inputs[0].shape[1:])
        for variant, predict in artifacts.items():
            candidates[f"fashion_mnist/student/{variant}"] = (
                lambda p=predict: artifact_latency(p, shape, repeats))  # fmt: skip
        times = interleaved_rounds(candidates, rounds)
        accuracies = {"float32": accuracy(lambda x: student(x, training=False), images, labels)}
        accuracies.update({v: accuracy(p, images, labels) for v, p in artifacts.items()})
    mults = {pair: {role: models.count_multiplications(m) for role, m in roles.items()}
             for pair, roles in found.items()}  # fmt: skip
    return {
        "student": student_source,
        "teacher": TEACHER,
        "preprocessing": mode,
        "calibration_images": len(calibration),
        "test_images": len(images),
        "rounds": rounds,
        "repeats": repeats,
        "threads": threads,
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
             f"Float32, {s['threads']} threads, median ms per batch over {s['rounds']} rounds of "
             f"{s['repeats']} calls; load average {load['start'][0]:.1f} at start, "
             f"{load['end'][0]:.1f} at end. Student: {s['student']}; teacher: {s['teacher']}.", "",
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
