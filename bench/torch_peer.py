"""Goal 1: the same training steps in PyTorch at its best, timed in the same rounds as ours.

Optional: needs ``torch`` (``pip install -e '.[bench]'``, which pins ``torch==2.13.0``); without
it :func:`peer` returns ``{"skipped": reason}``.

The PyTorch nets are built from the same :class:`~fitnets_tf.models.specs.ArchSpec` as ours
(the paper's MNIST pair: ``mnist_teacher`` maxout 48-48-24, ``mnist_fitnet`` 16-16-16-16-12-12),
with the same maxout pieces, explicit padding, ceil-mode pooling, dropout, max-norm
constraints (renormalised after every update, as Keras' constraints are), initial range and
optimizer (RMSProp, lr 0.005, rho 0.9, eps 1e-7). Batch 128 of 28×28×1, the same threads.
Each PyTorch step is run in four variants, eager and ``torch.compile`` × NCHW and
channels-last, and the ratio is taken against the fastest of them (by median), per round.

Steps: ``student`` (labels, with an accuracy metric as ours), ``kd`` (live teacher),
``kd_cached`` (teacher logits fed in), ``hints`` (teacher to its hint layer + the student to
its guided layer + the regressor), ``teacher_forward`` (inference).

Timing: ours in one worker process, each PyTorch variant in a process of its own, all building
their steps once and run one call at a time in alternated rounds, with a quiet gap between
calls in different processes (:mod:`bench.peer_process`). In one process the two runtimes'
spinning thread pools slowed PyTorch 7–40× (~2× with ``OMP_WAIT_POLICY=PASSIVE``). A variant
per process also keeps torch.compile's generated kernels and eager PyTorch off each other's
threads. Every worker gets the same threads (:func:`bench.peer_process.thread_env`, TensorFlow's
intra/inter-op, PyTorch's intra/interop); the result records each worker's settings.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import tensorflow as tf

from bench import benchmarks, peer_process, timing
from fitnets_tf.models.paper import ARCHITECTURES
from fitnets_tf.models.specs import PAPER_INIT_RANGE

STEPS = ("student", "kd", "kd_cached", "hints", "teacher_forward")
VARIANTS = {  # name: (torch.compile, channels_last)
    "eager_nchw": (False, False),
    "eager_channels_last": (False, True),
    "compile_nchw": (True, False),
    "compile_channels_last": (True, True),
}


def _torch():
    import torch  # noqa: PLC0415 (optional dependency)

    return torch


def _maxout_net(spec, in_channels: int, num_classes: int, upto: int | None = None):
    """The ArchSpec as a torch ``nn.Sequential`` (up to paper layer ``upto`` if given)."""
    torch = _torch()
    nn = torch.nn

    class MaxoutConv(nn.Module):
        def __init__(self, in_ch, conv):
            super().__init__()
            pad = conv.kernel_size // 2 if conv.padding == "same" else conv.padding
            self.conv = nn.Conv2d(in_ch, conv.filters * conv.pieces, conv.kernel_size, padding=pad)
            self.units, self.pieces, self.max_norm = conv.filters, conv.pieces, conv.max_norm

        def forward(self, x):
            z = self.conv(x)
            n, _, h, w = z.shape
            return z.view(n, self.units, self.pieces, h, w).amax(2)  # pylearn2's grouping

    layers = [nn.Dropout(spec.input_dropout)] if spec.input_dropout else []
    channels = in_channels
    for i, conv in enumerate(spec.convs, start=1):
        layers.append(MaxoutConv(channels, conv))
        channels = conv.filters
        if conv.pool == "global":
            layers.append(nn.AdaptiveMaxPool2d(1))
        elif conv.pool is not None:
            layers.append(nn.MaxPool2d(conv.pool[0], conv.pool[1], ceil_mode=True))
        if spec.dropout:
            layers.append(nn.Dropout(spec.dropout))
        if i == upto:
            return nn.Sequential(*layers), channels
    layers += [nn.Flatten(), nn.LazyLinear(num_classes)]
    return nn.Sequential(*layers), channels


def _init_and_constraints(model, spec) -> list:
    """U(-0.005, 0.005) kernels, zero biases; ``[(weight, max_norm)]`` to renormalise."""
    torch = _torch()
    constrained = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.uniform_(module.weight, -PAPER_INIT_RANGE, PAPER_INIT_RANGE)
            torch.nn.init.zeros_(module.bias)
    for module in model.modules():
        if hasattr(module, "max_norm") and module.max_norm:
            constrained.append((module.conv.weight, module.max_norm))
        if isinstance(module, torch.nn.Linear):
            constrained.append((module.weight, spec.logits_max_norm))
    return constrained


class _Trainer:
    """One optimizer over ``params``, with Keras' MaxNorm applied after each update."""

    def __init__(self, params, constrained):
        torch = _torch()
        self.params = list(params)
        # Keras' RMSprop: eps 1e-7, no momentum, no centring (added inside the sqrt there).
        self.optimizer = torch.optim.RMSprop(self.params, lr=0.005, alpha=0.9, eps=1e-7)
        self.constrained = constrained

    def step(self, loss):
        torch = _torch()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for weight, max_norm in self.constrained:
                weight.renorm_(2, 0, max_norm)  # per output unit, as MaxNorm(axis=fan-in)
        return loss


def build_steps(variant: str, x_np, y_np, steps: int, *, temperature=3.0, kd_lambda=4.0):
    """``{step: callable}`` for one variant; each call runs ``steps`` steps and syncs."""
    torch = _torch()
    F = torch.nn.functional  # noqa: N806
    compiled, channels_last = VARIANTS[variant]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    y = torch.from_numpy(y_np).long()
    teacher_spec, student_spec = ARCHITECTURES["mnist_teacher"], ARCHITECTURES["mnist_fitnet"]
    teacher, _ = _maxout_net(teacher_spec, 1, 10)
    student, _ = _maxout_net(student_spec, 1, 10)
    teacher_hint, hint_channels = _maxout_net(teacher_spec, 1, 10, upto=teacher_spec.hint_layer)
    guided, guided_channels = _maxout_net(student_spec, 1, 10, upto=student_spec.guided_layer)
    for net in (teacher, student):
        net(x)  # materialises the lazy Linear
    regressor = torch.nn.Conv2d(guided_channels, hint_channels * 2, 1)  # k = 4 - 4 + 1, 2 pieces
    nets = [teacher, student, teacher_hint, guided, regressor]
    for net in nets:
        net.to(memory_format=fmt)
    s_trainer = _Trainer(student.parameters(), _init_and_constraints(student, student_spec))
    _init_and_constraints(teacher, teacher_spec)
    h_trainer = _Trainer([*guided.parameters(), *regressor.parameters()],
                         _init_and_constraints(guided, student_spec))  # fmt: skip
    for net in (teacher, teacher_hint):
        net.eval()

    def regress(images):
        z = regressor(guided(images))
        n, _, h, w = z.shape
        return z.view(n, hint_channels, 2, h, w).amax(2)

    if compiled:
        teacher, teacher_hint, student = (torch.compile(m) for m in (teacher, teacher_hint, student))
        regress = torch.compile(regress)

    def soft_ce(teacher_logits, logits):
        targets = F.softmax(teacher_logits / temperature, -1)
        return -(targets * F.log_softmax(logits / temperature, -1)).sum(-1).mean()

    with torch.no_grad():
        cached_logits = teacher(x)

    def student_step():
        logits = student(x)
        (logits.argmax(-1) == y).float().mean()  # the accuracy metric ours updates
        return s_trainer.step(F.cross_entropy(logits, y))

    def kd_step(teacher_logits=None):
        if teacher_logits is None:
            with torch.no_grad():
                teacher_logits = teacher(x)
        logits = student(x)
        (logits.argmax(-1) == y).float().mean()
        loss = F.cross_entropy(logits, y) + kd_lambda * soft_ce(teacher_logits, logits)
        return s_trainer.step(loss)

    def hint_step():
        with torch.no_grad():
            hint = teacher_hint(x)
        loss = 0.5 * (hint - regress(x)).pow(2).flatten(1).sum(-1).mean()
        return h_trainer.step(loss)

    def teacher_forward():
        with torch.inference_mode():
            return teacher(x)

    bodies = {
        "student": student_step,
        "kd": kd_step,
        "kd_cached": lambda: kd_step(cached_logits),
        "hints": hint_step,
        "teacher_forward": teacher_forward,
    }
    return {name: _repeat(body, steps) for name, body in bodies.items()}


def _repeat(body, steps: int):
    def run():
        for _ in range(steps):
            out = body()
        float(out.flatten()[0])  # to the host: the work has finished

    return run


def keras_steps(x, y, steps: int) -> dict:
    """Our five steps on ``(x, y)``, built as in :func:`bench.benchmarks.step_overhead`."""
    from fitnets_tf.distiller import Distiller

    teacher, student = benchmarks.build_pair("mnist")
    labelled = benchmarks.repeated(x, y)
    hint_layer, guided_layer = benchmarks.hint_layers("mnist")
    hints = Distiller(teacher, student, hint_layer=hint_layer, guided_layer=guided_layer,
                      check_teacher=False)
    hints.compile(benchmarks.HPARAMS.optimizer(), phase="hints")
    cached = benchmarks.repeated({"images": x, "teacher_logits": teacher(x, training=False)}, y)
    run = benchmarks.train_runner
    return {
        "student": run(benchmarks.plain_student(student), labelled, steps),
        "kd": run(benchmarks.kd_distiller(teacher, student), labelled, steps),
        "kd_cached": run(benchmarks.kd_distiller(teacher, student), cached, steps),
        "hints": run(hints, labelled, steps),
        "teacher_forward": benchmarks.forward_runner(teacher, x, steps),
    }


def keras_worker(data: str, steps: int, threads: int):
    """:mod:`bench.peer_process` factory: our steps, in the TensorFlow worker."""
    info = peer_process.pin_tensorflow(threads)
    batch = np.load(data)
    return keras_steps(tf.constant(batch["x"]), tf.constant(batch["y"]), steps), info


def torch_worker(data: str, variant: str, steps: int, threads: int):
    """:mod:`bench.peer_process` factory: one PyTorch variant's steps, in its own worker."""
    info = peer_process.pin_torch(threads)
    batch = np.load(data)
    return build_steps(variant, batch["x"], batch["y"], steps), {**info, "variant": variant}


def peer(*, repeats: int, steps: int, threads: int, variants=tuple(VARIANTS)) -> dict:
    """Ours / PyTorch's best per step (time ratios: < 1 means we are faster), both sides' ms."""
    if importlib.util.find_spec("torch") is None:
        return {"skipped": "torch is not installed: pip install -e '.[bench]'"}
    x, y = (t.numpy() for t in benchmarks.fixed_batch("mnist"))
    env = peer_process.thread_env(threads)
    with peer_process.shared_batch(x, y) as data:
        kwargs = dict(data=data, steps=steps, threads=threads)
        workers = [peer_process.Worker("keras", f"{__name__}:keras_worker", kwargs, env)]
        workers += [
            peer_process.Worker(
                f"torch_{v}", f"{__name__}:torch_worker", {**kwargs, "variant": v}, env
            )
            for v in variants
        ]
        result = peer_process.interleaved(workers, repeats=repeats)
    times, record = result["times"], result["workers"]
    ms = timing.summary(times, per_call=steps)
    best, ratios = {}, {}
    for name in STEPS:
        best[name] = min(variants, key=lambda v, n=name: ms[f"torch_{v}/{n}"]["ms"])
        ratios[name] = timing.ratio(times, f"keras/{name}", f"torch_{best[name]}/{name}")
    # Build, then the warm-up calls, where torch.compile traces and compiles.
    setup_s = {
        v: record[f"torch_{v}"]["setup_s"]
        + sum(sum(result["warmup_s"][f"torch_{v}/{n}"]) for n in STEPS)
        for v in variants
    }
    return {
        "torch": record[f"torch_{variants[0]}"]["torch"],
        "threads": threads,
        "batch_size": len(x),
        "ms_per_step": ms,
        "best_torch_variant": best,
        "ours_over_torch_time": ratios,
        "setup_s": setup_s,
        "timing": peer_process.describe(),
        "workers": record,
    }
