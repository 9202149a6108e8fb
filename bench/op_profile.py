"""Issue 15, goal 2: where a train step's time goes, per TensorFlow op type.

``python -m bench.op_profile`` (about 1 minute) profiles the MNIST pair's train steps
(``mnist_fitnet``, ``mnist_teacher``; plain ``compile``/``fit`` on the labels, RMSProp, as
``bench/student_profile.py`` times them; by default and with ``maxout_ties="one"``) and the
teacher's inference forward with TensorFlow's profiler, and writes ``results/op_profile.json``:
per model, the step's wall time and the time of each op type per step, convolutions summed
apart, and per train step the convolutions' own GFLOP/s (3 x multiplications x batch / their
time), and each convolution layer's (``convolutions_by_layer``: its forward and gradient
convolutions' time and GFLOP/s, to tell which layers the thin net loses its rate in).
``goal_two_ceiling`` is the student's over the teacher's: goal 2's ratio if every op but
the convolutions took no time, the most any maxout or step overhead could leave it.

Run with one inter-op thread (``--inter_op 1``, the default), so ops run one after another and
their times add up to the step: an attribution, not the step's best time (with two inter-op
threads a convolution's two gradients overlap).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import pathlib
import re
import tempfile
import time

import tensorflow as tf

from bench import benchmarks
from bench.run import machine
from fitnets_tf import maxout, models

RESULTS = pathlib.Path(__file__).parent / "results" / "op_profile.json"


def _xspace(logdir: str):
    # The profiler's protobuf is not public API; its module has moved between releases.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = pathlib.Path(logdir).rglob("*.xplane.pb")
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    return space


def op_times(run, calls: int) -> dict[str, float]:
    """Milliseconds per call of each op (``"scope/op_name:OpType"``) that ``run`` (``calls``
    calls) executes."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        run()
        tf.profiler.experimental.stop()
        space = _xspace(logdir)
    totals = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's threads, ops only
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                # The executor's own spans ("Class::method") enclose the ops and would count
                # them twice.
                if ":" in name and "::" not in name:
                    totals[name] += event.duration_ps / 1e9
    return {op: ms / calls for op, ms in totals.most_common()}


def by_type(ops: dict[str, float]) -> dict[str, float]:
    """:func:`op_times`' milliseconds summed per op type."""
    totals = collections.Counter()
    for name, ms in ops.items():
        totals[name.rsplit(":", 1)[1]] += ms
    return dict(totals.most_common())


def convolutions_by_layer(model, ops: dict[str, float], batch: int) -> dict[str, dict]:
    """Per convolution layer of ``model``: its convolutions' milliseconds (forward and
    gradients) and their GFLOP/s (one per multiplication of each pass, as goal 2 counts)."""
    found = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) != 4:
            continue
        # Keras names a layer's ops after it, with a suffix per trace ("conv2_1/...").
        scope = re.compile(rf"/{re.escape(layer.name)}(_\d+)?/")
        mine = {n: ms for n, ms in ops.items() if "Conv2D" in n and scope.search(n)}
        mults = math.prod(kernel.shape) * math.prod(layer.output.shape[1:-1]) * batch
        ms = sum(mine.values())
        found[layer.name] = {"ms": ms, "passes": len(mine),
                             "gflops": len(mine) * mults / ms / 1e6 if ms else None}  # fmt: skip
    return found


def profile(run, calls: int) -> dict:
    for _ in range(2):
        run()
    start = time.perf_counter()
    run()
    step_ms = (time.perf_counter() - start) * 1e3 / calls
    ops = op_times(run, calls)
    types = by_type(ops)
    convolutions = sum(ms for op, ms in types.items() if "Conv2D" in op)
    return {"step_ms": step_ms, "ops_ms": sum(types.values()), "convolutions_ms": convolutions,
            "by_op": types, "ops": ops}  # fmt: skip


def train_step(name: str, ties: str, data, calls: int) -> dict:
    """The profile of ``name``'s plain train step, with its convolutions' GFLOP/s."""
    model = models.build(name, (28, 28, 1), benchmarks.NUM_CLASSES, seed=0, maxout_ties=ties)
    found = profile(benchmarks.train_runner(benchmarks.plain_student(model), data, calls), calls)
    batch = benchmarks.PAIRS["mnist"][3]
    flop = 3 * models.count_multiplications(model) * batch
    found["convolution_gflops"] = flop / found["convolutions_ms"] / 1e6
    found["convolutions_by_layer"] = convolutions_by_layer(model, found.pop("ops"), batch)
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--inter_op", type=int, default=1, help="inter-op threads")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    x, y = benchmarks.fixed_batch("mnist")
    data = benchmarks.repeated(x, y)

    result = {"machine": machine(), "inter_op_threads": args.inter_op, "models": {}}
    for ties, suffix in zip(maxout.TIES, ("", "_ties_one"), strict=True):
        for name in ("mnist_fitnet", "mnist_teacher"):
            result["models"][f"{name}{suffix}/train_step"] = train_step(name, ties, data, args.calls)
        student, teacher = (result["models"][f"{n}{suffix}/train_step"]["convolution_gflops"]
                            for n in ("mnist_fitnet", "mnist_teacher"))  # fmt: skip
        result.setdefault("goal_two_ceiling", {})[ties] = student / teacher
    teacher = models.build("mnist_teacher", (28, 28, 1), benchmarks.NUM_CLASSES, seed=0)
    forward = profile(benchmarks.forward_runner(teacher, x, args.calls), args.calls)
    forward["convolutions_by_layer"] = convolutions_by_layer(teacher, forward.pop("ops"), len(x))
    result["models"]["mnist_teacher/forward"] = forward
    result["machine"]["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print("goal 2's ceiling (student / teacher GFLOP/s of the convolutions alone):",
          {ties: round(ratio, 3) for ties, ratio in result["goal_two_ceiling"].items()})
    for name, found in result["models"].items():
        print(f"{name}: step {found['step_ms']:.1f} ms, ops {found['ops_ms']:.1f} ms, "
              f"convolutions {found['convolutions_ms']:.1f} ms")  # fmt: skip
        for op, ms in list(found["by_op"].items())[:12]:
            print(f"  {ms:7.2f} ms  {op}")
        for layer, conv in found["convolutions_by_layer"].items():
            print(f"  {layer}: {conv['ms']:.2f} ms, {conv['passes']} convolutions, "
                  f"{conv['gflops']:.1f} GFLOP/s")  # fmt: skip


if __name__ == "__main__":
    main()
