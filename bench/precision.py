"""Goal 4 (training): float32 against mixed precision train steps, and PyTorch's CPU bf16 autocast.

The default experiment's nets (``thin_cnn`` student, ``wide_cnn`` teacher; 28×28×1, batch
128, the paper's RMSProp), each step built under float32 and under the policy
``--mixed_precision`` selects (:func:`fitnets_tf.run.runtime.dtype_policy`: ``mixed_bfloat16`` on
a CPU, ``mixed_float16`` on a GPU): the student's plain step on the labels and the KD step
with the live teacher. If ``torch`` is installed (``pip install -e '.[bench]'``), the same
student step in PyTorch eager, float32 and ``torch.autocast("cpu", torch.bfloat16)``, NCHW and
channels-last, is timed in the same rounds; ratios against PyTorch take its fastest layout.

Timing: our steps in one worker process, PyTorch's in another (all four eager variants: one
thread pool), called one at a time in alternated rounds with a quiet gap between processes
(:mod:`bench.peer_process`): timed in one process, each runtime's spinning threads slow the
other's steps (PyTorch 7–40×, ~2× with ``OMP_WAIT_POLICY=PASSIVE``). Both workers get the same
threads; the result records each worker's settings.
"""

from __future__ import annotations

import importlib.util
import os

import keras
import numpy as np
import tensorflow as tf

from bench import benchmarks, peer_process, timing
from bench.cpu_features import cpu_features, native_bf16
from fitnets_tf import models
from fitnets_tf.run import runtime

SHAPE = (28, 28, 1)
TORCH_VARIANTS = {  # name: (bfloat16 autocast, channels_last)
    "float32_nchw": (False, False),
    "float32_channels_last": (False, True),
    "bfloat16_nchw": (True, False),
    "bfloat16_channels_last": (True, True),
}


def keras_steps(x, y, steps: int) -> dict:
    """``{"<step>/<policy>": run}`` for the student and KD steps under both policies."""
    data = benchmarks.repeated(x, y)
    mixed = runtime.dtype_policy(True)
    found = {}
    for policy in ("float32", mixed):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            teacher = models.build("wide_cnn", SHAPE, benchmarks.NUM_CLASSES, seed=0)
            student = models.build("thin_cnn", SHAPE, benchmarks.NUM_CLASSES, seed=1)
            kd_student = models.build("thin_cnn", SHAPE, benchmarks.NUM_CLASSES, seed=1)
            found[f"student/{policy}"] = benchmarks.train_runner(
                benchmarks.plain_student(student), data, steps
            )
            found[f"kd/{policy}"] = benchmarks.train_runner(
                benchmarks.kd_distiller(teacher, kd_student), data, steps
            )
        finally:
            keras.config.set_dtype_policy(previous)
    return found


def keras_worker(data: str, steps: int, threads: int):
    """:mod:`bench.peer_process` factory: :func:`keras_steps`, in the TensorFlow worker."""
    info = peer_process.pin_tensorflow(threads)
    batch = np.load(data)
    return keras_steps(tf.constant(batch["x"]), tf.constant(batch["y"]), steps), info


def torch_worker(data: str, steps: int, threads: int):
    """:mod:`bench.peer_process` factory: :func:`torch_student_steps`, in the PyTorch worker."""
    info = peer_process.pin_torch(threads)
    batch = np.load(data)
    return torch_student_steps(batch["x"], batch["y"], steps), info


def torch_student_steps(x_np, y_np, steps: int) -> dict:
    """``{"torch_<variant>/student": run}``: thin_cnn's step in PyTorch, as ours (RMSProp)."""
    import torch  # noqa: PLC0415 (optional dependency)

    nn = torch.nn
    found = {}
    for variant, (bf16, channels_last) in TORCH_VARIANTS.items():
        torch.manual_seed(0)
        layers, channels = [], SHAPE[-1]
        for filters in (24, 48, 96):  # thin_cnn: bias-free 3x3 conv, BN, ReLU, 2x2 max-pool
            layers += [nn.Conv2d(channels, filters, 3, padding=1, bias=False),
                       nn.BatchNorm2d(filters), nn.ReLU(), nn.MaxPool2d(2)]  # fmt: skip
            channels = filters
        net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 3 * 3, 10))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net = net.to(memory_format=fmt)
        x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        y = torch.from_numpy(y_np).long()
        # Keras' RMSprop: eps 1e-7, no momentum, no centring.
        optimizer = torch.optim.RMSprop(net.parameters(), lr=0.005, alpha=0.9, eps=1e-7)

        def step(net=net, x=x, y=y, optimizer=optimizer, bf16=bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(x)
                loss = nn.functional.cross_entropy(logits, y)
            (logits.argmax(-1) == y).float().mean()  # the accuracy metric ours updates
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        found[f"torch_{variant}/student"] = _repeat(step, steps)
    return found


def _repeat(body, steps: int):
    def run():
        for _ in range(steps):
            out = body()
        float(out.detach())  # to the host: the work has finished

    return run


def _timed(x, y, *, repeats: int, steps: int, threads: int, with_torch: bool) -> dict:
    """:func:`bench.peer_process.interleaved` over our worker and, ``with_torch``, PyTorch's."""
    env = peer_process.thread_env(threads)
    with peer_process.shared_batch(x, y) as data:
        kwargs = dict(data=data, steps=steps, threads=threads)
        workers = [peer_process.Worker("keras", f"{__name__}:keras_worker", kwargs, env)]
        if with_torch:
            workers.append(peer_process.Worker("torch", f"{__name__}:torch_worker", kwargs, env))
        result = peer_process.interleaved(workers, repeats=repeats)
    # The candidates' own names ("student/float32", "torch_bfloat16_nchw/student") say the side.
    times = {name.split("/", 1)[1]: t for name, t in result["times"].items()}
    return {"times": times, "workers": result["workers"]}


def precision(*, repeats: int, steps: int, threads: int) -> dict:
    """Time ratios (< 1: the first is faster) and every candidate's ms per step."""
    load_start = os.getloadavg()
    x, y = benchmarks.fixed_batch("mnist")  # 128 uniform 28x28x1 images
    mixed = runtime.dtype_policy(True)
    with_torch = importlib.util.find_spec("torch") is not None
    torch_note = None if with_torch else "torch is not installed: pip install -e '.[bench]'"
    timed = _timed(x.numpy(), y.numpy(), repeats=repeats, steps=steps, threads=threads,
                   with_torch=with_torch)  # fmt: skip
    times = timed["times"]
    ms = timing.summary(times, per_call=steps)
    ratios = {
        f"student_{mixed}_over_float32": timing.ratio(times, f"student/{mixed}", "student/float32"),
        f"kd_{mixed}_over_float32": timing.ratio(times, f"kd/{mixed}", "kd/float32"),
    }
    best = {}
    if torch_note is None:
        for precision_name in ("float32", "bfloat16"):
            names = [n for n in ms if n.startswith(f"torch_{precision_name}")]
            best[precision_name] = min(names, key=lambda n: ms[n]["ms"])
        ratios["torch_bfloat16_over_float32"] = timing.ratio(times, best["bfloat16"], best["float32"])
        ratios["ours_float32_over_torch_float32"] = timing.ratio(times, "student/float32", best["float32"])
        ratios[f"ours_{mixed}_over_torch_bfloat16"] = timing.ratio(times, f"student/{mixed}", best["bfloat16"])
    features = cpu_features()
    return {
        "mixed_policy": mixed,
        "cpu_features": features,
        "native_bf16": native_bf16(features),
        "threads": threads,
        "batch_size": int(x.shape[0]),
        "ms_per_step": ms,
        "ratios": ratios,
        "torch_best": best,
        "torch": torch_note or timed["workers"]["torch"]["torch"],
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "timing": peer_process.describe(),
        "workers": timed["workers"],
    }  # fmt: skip


def markdown(p: dict, ratio) -> list[str]:
    """The README's precision table; ``ratio`` formats a :func:`bench.timing.ratio` result."""
    load, mixed = p["load_average"], p["mixed_policy"]
    lines = [f"### Training precision: float32 vs {mixed} (goal 4)", "",
             f"thin_cnn student step and KD step (live wide_cnn teacher), batch {p['batch_size']}, "
             f"{p['threads']} threads, RMSProp; native bf16 instructions: {p['native_bf16']}; load "
             f"average {load['start'][0]:.1f} at start, {load['end'][0]:.1f} at end. PyTorch: {p['torch']}."
             + (f" Timed in {p['timing']}." if "timing" in p else ""), "",
             "| step | ms per step (±noise) |", "|---|---|"]
    lines += [f"| {k} | {v['ms']:.1f} (±{100 * v['noise']:.0f}%) |" for k, v in p["ms_per_step"].items()]
    lines += ["", "| time ratio (< 1: the first is faster) | value |", "|---|---|"]
    lines += [f"| {k} | {ratio(q)} |" for k, q in p["ratios"].items()]
    if p["torch_best"]:
        lines += ["", "PyTorch's fastest layouts: " + ", ".join(f"{k}: {v}" for k, v in p["torch_best"].items())]
    return [*lines, ""]  # fmt: skip
