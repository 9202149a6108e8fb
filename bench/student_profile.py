"""Goal 2: the thin student's train step against the teacher's, in achieved GFLOP/s.

A train step costs about 3 × the forward multiplications (forward, gradient with respect to
activations, gradient with respect to weights); achieved GFLOP/s = that / the step's time. The
variants price what a step does beyond its convolutions, in the same rounds: the maxout as
the reshape + ``reduce_max`` it was before (``*_reshape_maxout``), no accuracy metric, no
max-norm constraints, ``steps_per_execution=3``; and both nets built with ``maxout_ties="one"``
(the maxout as a max pool, a tie's gradient to one piece: :mod:`fitnets_tf.maxout`).
"""

from __future__ import annotations

import contextlib

import keras

from bench import benchmarks, timing
from fitnets_tf import layers, models


@contextlib.contextmanager
def reshape_maxout():
    """Models *traced* inside compute the maxout as ``reduce_max`` over a reshape.

    It reads the piece-major kernel as if it were unit-major (another grouping of the same
    columns): the cost of the former formulation, not the layer's function.
    """
    conv_call = layers.MaxoutConv2D.call

    def call(self, inputs):
        pad = self._explicit_padding()
        if pad:
            inputs = keras.ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        mode = "same" if self.padding == "same" else "valid"
        z = keras.ops.conv(inputs, self.kernel, strides=self.strides, padding=mode)
        return layers.maxout(keras.ops.add(z, self.bias), self.filters, self.pieces)

    layers.MaxoutConv2D.call = call
    try:
        yield
    finally:
        layers.MaxoutConv2D.call = conv_call


def _net(name: str, *, max_norm: bool = True, maxout_ties: str = "share"):
    return models.build(name, (28, 28, 1), benchmarks.NUM_CLASSES, seed=0, max_norm=max_norm,
                        maxout_ties=maxout_ties)  # fmt: skip


def _compiled(model, metrics=("accuracy",), **kwargs):
    model.compile(
        benchmarks.HPARAMS.optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
        **kwargs,
    )
    return model


def student_profile(*, repeats: int, steps: int) -> dict:
    x, y = benchmarks.fixed_batch("mnist")
    data = benchmarks.repeated(x, y)
    run = benchmarks.train_runner
    candidates = {}
    with reshape_maxout():  # traced now, so these keep the old formulation
        for name in ("mnist_fitnet", "mnist_teacher"):
            candidates[f"{name}_reshape_maxout"] = run(_compiled(_net(name)), data, steps)
    for name in ("mnist_fitnet", "mnist_teacher"):
        candidates[name] = run(_compiled(_net(name)), data, steps)
        candidates[f"{name}_ties_one"] = run(_compiled(_net(name, maxout_ties="one")), data, steps)
    candidates["mnist_fitnet_no_metrics"] = run(_compiled(_net("mnist_fitnet"), ()), data, steps)
    candidates["mnist_fitnet_no_max_norm"] = run(
        _compiled(_net("mnist_fitnet", max_norm=False)), data, steps
    )
    candidates["mnist_fitnet_steps_per_execution_3"] = run(
        _compiled(_net("mnist_fitnet"), steps_per_execution=steps), data, 1
    )
    times = timing.interleaved(candidates, repeats=repeats)
    ms = timing.summary(times, per_call=steps)
    flop = {n: 3 * models.count_multiplications(_net(n)) * len(x) for n in ("mnist_fitnet", "mnist_teacher")}
    gflops = {k: flop["mnist_teacher" if "teacher" in k else "mnist_fitnet"] / v["ms"] / 1e6
              for k, v in ms.items()}  # fmt: skip
    return {
        "ms_per_step": ms,
        "gflop_per_step": {k: v / 1e9 for k, v in flop.items()},
        "achieved_gflops": gflops,
        "ratios": {
            # Student's achieved GFLOP/s over the teacher's = (teacher time / student time) /
            # (teacher flop / student flop). Goal >= 0.7.
            "student_over_teacher_gflops": _scaled(timing.ratio(times, "mnist_teacher", "mnist_fitnet"), flop),
            "student_over_teacher_gflops_ties_one": _scaled(
                timing.ratio(times, "mnist_teacher_ties_one", "mnist_fitnet_ties_one"), flop),
            "student_ties_one_over_share": timing.ratio(times, "mnist_fitnet_ties_one", "mnist_fitnet"),
            "teacher_ties_one_over_share": timing.ratio(times, "mnist_teacher_ties_one", "mnist_teacher"),
            "student_over_teacher_gflops_reshape_maxout": _scaled(
                timing.ratio(times, "mnist_teacher_reshape_maxout", "mnist_fitnet_reshape_maxout"), flop),
            "student_after_over_before": timing.ratio(times, "mnist_fitnet", "mnist_fitnet_reshape_maxout"),
            "teacher_after_over_before": timing.ratio(times, "mnist_teacher", "mnist_teacher_reshape_maxout"),
            "no_metrics_over_student": timing.ratio(times, "mnist_fitnet_no_metrics", "mnist_fitnet"),
            "no_max_norm_over_student": timing.ratio(times, "mnist_fitnet_no_max_norm", "mnist_fitnet"),
            "steps_per_execution_over_student": timing.ratio(
                times, "mnist_fitnet_steps_per_execution_3", "mnist_fitnet"),
        },
    }  # fmt: skip


def _scaled(q: dict, flop: dict) -> dict:
    scale = flop["mnist_fitnet"] / flop["mnist_teacher"]
    return {k: v * scale for k, v in q.items()}
