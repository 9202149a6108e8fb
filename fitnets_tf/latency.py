"""CPU latency (in TensorFlow, LiteRT, ONNX Runtime) and on-disk size of models, for the run
summary and the export CLI.

The paper sells FitNets on speed: the thin, deep student is meant to be cheaper to run than
the wide teacher. These two measurements put numbers on that for a given machine.
"""

from __future__ import annotations

import math
import os
import pathlib
import statistics
import tempfile
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.models import onnx_model


def measure_latency(
    model: keras.Model,
    input_shape: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = (1, 128),
    warmup: int = 3,
    repeats: int = 15,
    threads: int | None = None,
    seed: int = 0,
) -> dict[int, dict[str, float]]:
    """Measures the CPU latency of ``model`` in inference mode, per batch size.

    The model is called inside a ``tf.function`` with ``training=False``, traced once per batch
    size (static shapes, as a serving graph with a fixed batch would run) and fed one fixed
    input batch per size. ``keras.Model.predict`` is avoided on purpose: its data-adapter and
    callback overhead dominates at batch 1 and is not what a server pays.

    Args:
        model: any Keras model taking one image batch.
        input_shape: shape of one example, without the batch axis. Defaults to the model's
            input shape.
        batch_sizes: batch sizes to time.
        warmup: untimed calls per batch size (tracing, allocator and cache warm-up).
        repeats: timed calls per batch size, at least (a fast call is timed for
            :data:`MIN_TIMED_SECONDS`).
        threads: if set, TensorFlow's intra-op thread count. TensorFlow fixes it when its
            runtime starts, so it can only be set in a process that has not run any op yet;
            otherwise a ``RuntimeError`` says so (unless it already has this value).
        seed: seed of the uniform [0, 1) inputs; values barely matter to a conv net's speed,
            but fixed inputs keep runs comparable.

    Returns:
        ``{batch_size: {"ms_per_batch", "ms_per_image", "images_per_second"}}``, each the
        median over ``repeats`` calls.

    Raises:
        ValueError: on non-positive batch sizes or repeats, or an unknown input shape.
        RuntimeError: if ``threads`` cannot be applied any more.
    """
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(
            f"`batch_sizes` must be positive integers. Received: batch_sizes={batch_sizes!r}"
        )
    if repeats < 1 or warmup < 0:
        raise ValueError(
            f"`repeats` must be >= 1 and `warmup` >= 0. Received: repeats={repeats}, warmup={warmup}"
        )
    if threads is not None:
        set_threads(threads)
    if input_shape is None:
        input_shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in input_shape):
        raise ValueError(f"`input_shape` must be fully known. Received: input_shape={input_shape}")

    @tf.function
    def infer(x):
        return model(x, training=False)

    # Copying the outputs to numpy is what a server does and guarantees the work ran.
    return time_calls(lambda x: _materialise(infer(x)), tf.constant, input_shape, batch_sizes,
                  warmup=warmup, repeats=repeats, seed=seed)  # fmt: skip


def usable_cpus() -> int:
    """The cores this process may run on: a ``taskset`` or container's CPU set, not the
    machine's (``os.cpu_count``), which would oversubscribe them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def measure_served_latency(
    model: keras.Model,
    runtime: str,
    batch_sizes: Sequence[int] = (1, 128),
    warmup: int = 3,
    repeats: int = 15,
    threads: int | None = None,
    seed: int = 0,
) -> dict[int, dict[str, float]]:
    """:func:`measure_latency` of ``model`` exported for ``runtime`` and run by it.

    ``runtime`` is one of :data:`SERVING_RUNTIMES`: ``litert`` (the project's LiteRT export, run
    by ``ai_edge_litert``'s interpreter) or ``onnxruntime`` (its ONNX export, run by ONNX
    Runtime's CPU provider). These are what a student is deployed with, and they pay far less
    per call than TensorFlow: at batch 1, where a small model's arithmetic takes microseconds,
    TensorFlow's per-call overhead hides most of a student's advantage. Both use ``threads``
    (default: every core this process may use, as TensorFlow does). The model is exported as ``fitnets-export``
    writes it (:func:`fitnets_tf.export.serving.as_served`: float32, batch norm folded).

    Raises:
        ValueError: an unknown runtime.
        fitnets_tf.errors.RuntimeUnavailableError: its package is not installed.
    """
    check_serving_runtimes((runtime,))
    from fitnets_tf.export import serving, writers

    model = serving.as_served(model)
    input_shape = tuple(model.inputs[0].shape[1:])
    threads = threads or usable_cpus()
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / {"litert": "model.tflite", "onnxruntime": "model.onnx"}[runtime]
        if runtime == "litert":
            writers.write_litert(model, path)
            call = _litert_call(path, threads)
        else:
            writers.write_onnx(model, path)
            call = _onnx_call(path, threads)
        return time_calls(call, None, input_shape, batch_sizes, warmup=warmup, repeats=repeats,
                      seed=seed)  # fmt: skip


SERVING_RUNTIMES = ("litert", "onnxruntime")


def measure_onnx_file_latency(path: str | os.PathLike, input_shape, batch_sizes=(1, 128),
                              warmup: int = 3, repeats: int = 15, threads: int | None = None,
                              seed: int = 0) -> dict[int, dict[str, float]]:  # fmt: skip
    """:func:`measure_served_latency` of an ONNX file as it is (an ONNX teacher's: its images
    of ``input_shape``, in the order it takes them), in ONNX Runtime."""
    check_serving_runtimes(("onnxruntime",))
    call = _onnx_call(pathlib.Path(path), threads or usable_cpus())
    return time_calls(call, None, input_shape, batch_sizes, warmup=warmup, repeats=repeats,
                      seed=seed)  # fmt: skip


def check_serving_runtimes(runtimes: Sequence[str]) -> None:
    """Refuses, before any work, a runtime that is unknown or whose packages are missing.

    Raises:
        ValueError: an unknown runtime.
        fitnets_tf.errors.RuntimeUnavailableError: its packages are not installed.
    """
    from fitnets_tf.export import packages

    for runtime in runtimes:
        if runtime not in SERVING_RUNTIMES:
            raise ValueError(f"`runtime` must be one of {SERVING_RUNTIMES}. Received: {runtime!r}")
        others = [r for r in runtimes if r != runtime]
        packages.require(runtime, f"Timing the models in {runtime} (serving_runtimes)",
                         f"leave it out: --serving_runtimes={','.join(others)}")


def check_timed_runtimes(runtime) -> None:
    """:func:`check_serving_runtimes` of a run's ``RuntimeConfig``, if the run times models."""
    if runtime.measure_latency:  # the runtimes time nothing otherwise
        check_serving_runtimes(runtime.serving_runtimes)


def _litert_call(path: pathlib.Path, threads: int):
    """Runs the LiteRT model on a batch, with one interpreter per batch size (resized once)."""
    from fitnets_tf.export.verify import litert_interpreter

    interpreters = {}

    def call(x):
        batch = x.shape[0]
        if batch not in interpreters:
            interpreter = litert_interpreter(path, num_threads=threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, x.shape)
            interpreter.allocate_tensors()
            interpreters[batch] = (interpreter, index, interpreter.get_output_details()[0]["index"])
        interpreter, index, output = interpreters[batch]
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        interpreter.get_tensor(output)

    return call


def _onnx_call(path: pathlib.Path, threads: int):
    import onnxruntime  # checked by check_serving_runtimes

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # ONNX Runtime's default: idle workers spin, as on a dedicated server. On idle cores that
    # answers faster than sleeping workers; on a loaded shared machine it is slower
    # (bench/ort_spinning.py measures both): time on a quiet machine.
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # As deployed: a file of a fixed batch size (an ONNX teacher's) takes that many per call.
    return onnx_model.runner(session)


# Timed calls last at least this long in all per batch size (up to MAX_REPEATS calls): 30
# calls of a 0.04 ms student are 1 ms of timing, and one run's median then moved by 30%.
MIN_TIMED_SECONDS = 0.2
MAX_REPEATS = 2000


def time_calls(call, prepare, input_shape, batch_sizes, *, warmup: int, repeats: int,
               seed: int = 0) -> dict[int, dict[str, float]]:  # fmt: skip
    """The median time of ``call(x)`` per batch size, as :func:`measure_latency` reports it.

    ``x`` is a fixed batch of uniform [0, 1) images of ``input_shape``, passed through
    ``prepare`` (e.g. ``tf.constant``) before timing when given; any runtime's call fits.
    At least ``repeats`` calls are timed, more for a fast call (:data:`MIN_TIMED_SECONDS`).
    """
    rng = np.random.default_rng(seed)
    results = {}
    for batch in batch_sizes:
        batch = int(batch)
        x = rng.uniform(0.0, 1.0, (batch, *input_shape)).astype("float32")
        x = prepare(x) if prepare else x
        per_call = MIN_TIMED_SECONDS  # without a warm-up call to go by: `repeats` calls
        for _ in range(warmup):
            start = time.perf_counter()
            call(x)
            per_call = time.perf_counter() - start  # the last, warmest one
        count = min(MAX_REPEATS, max(repeats, math.ceil(MIN_TIMED_SECONDS / max(per_call, 1e-6))))
        times = []
        for _ in range(count):
            start = time.perf_counter()
            call(x)
            times.append(time.perf_counter() - start)
        # The median, not the mean: on a shared machine a few calls hit a scheduler hiccup or
        # a garbage collection and would drag the mean; the minimum is a best case no one sees.
        ms = 1000.0 * statistics.median(times)
        results[batch] = {
            "ms_per_batch": ms,
            "ms_per_image": ms / batch,
            "images_per_second": 1000.0 * batch / ms,
        }
    return results


def _materialise(outputs) -> None:
    for tensor in tf.nest.flatten(outputs):
        tensor.numpy()


def set_threads(threads: int) -> None:
    """Sets TensorFlow's intra-op thread count, which must happen before TensorFlow runs an op.

    Raises:
        ValueError: if ``threads`` is not a positive integer.
        RuntimeError: if TensorFlow has already started with a different count.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"`threads` must be a positive integer. Received: threads={threads!r}")
    if tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError as err:
        raise RuntimeError(
            f"Cannot use threads={threads}: TensorFlow has already started in this process and "
            "fixed its thread pool. Measure in a fresh process, before anything runs a "
            "TensorFlow op."
        ) from err


def artifact_size(path: str | os.PathLike) -> int:
    """Returns the size in bytes of a file, or of all files under a directory (a SavedModel).

    Symbolic links are not followed, so nothing outside the artifact is counted.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return os.path.getsize(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No artifact at {path}.")
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                total += os.path.getsize(file)
    return total


def format_size(num_bytes: int) -> str:
    """Formats a byte count for a table, e.g. ``"1.3 MiB"``."""
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024.0:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024.0
    return f"{size:.2f} GiB"
