"""Issue 15, goal 2: where a train step's time goes, per TensorFlow op type.

``python -m bench.op_profile`` (about 1 minute) profiles the MNIST pair's train steps
(``mnist_fitnet``, ``mnist_teacher``; plain ``compile``/``fit`` on the labels, RMSProp, as
``bench/student_profile.py`` times them) and the teacher's inference forward with TensorFlow's
profiler, and writes ``results/op_profile.json``: per model, the step's wall time and the time
of each op type per step, convolutions summed apart.

Run with one inter-op thread (``--inter_op 1``, the default), so ops run one after another and
their times add up to the step: an attribution, not the step's best time (with two inter-op
threads a convolution's two gradients overlap).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import tempfile
import time

import tensorflow as tf

from bench import benchmarks
from bench.run import machine
from fitnets_tf import models

RESULTS = pathlib.Path(__file__).parent / "results" / "op_profile.json"


def _xspace(logdir: str):
    # The profiler's protobuf is not public API; its module has moved between releases.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = pathlib.Path(logdir).rglob("*.xplane.pb")
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    return space


def op_times(run, calls: int) -> dict[str, float]:
    """Milliseconds per call of each op type that ``run`` (``calls`` calls) executes."""
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
                # An op is "scope/op_name:OpType"; the executor's own spans ("Class::method")
                # enclose the ops and would count them twice.
                if ":" in name and "::" not in name:
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps / 1e9
    return {op: ms / calls for op, ms in totals.most_common()}


def profile(run, calls: int) -> dict:
    for _ in range(2):
        run()
    start = time.perf_counter()
    run()
    step_ms = (time.perf_counter() - start) * 1e3 / calls
    ops = op_times(run, calls)
    convolutions = sum(ms for op, ms in ops.items() if "Conv2D" in op)
    return {"step_ms": step_ms, "ops_ms": sum(ops.values()), "convolutions_ms": convolutions,
            "by_op": ops}  # fmt: skip


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

    def net(name):
        return models.build(name, (28, 28, 1), benchmarks.NUM_CLASSES, seed=0)

    result = {"machine": machine(), "inter_op_threads": args.inter_op, "models": {}}
    for name in ("mnist_fitnet", "mnist_teacher"):
        step = benchmarks.train_runner(benchmarks.plain_student(net(name)), data, args.calls)
        result["models"][f"{name}/train_step"] = profile(step, args.calls)
    forward = benchmarks.forward_runner(net("mnist_teacher"), x, args.calls)
    result["models"]["mnist_teacher/forward"] = profile(forward, args.calls)
    result["machine"]["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for name, found in result["models"].items():
        print(f"{name}: step {found['step_ms']:.1f} ms, ops {found['ops_ms']:.1f} ms, "
              f"convolutions {found['convolutions_ms']:.1f} ms")  # fmt: skip
        for op, ms in list(found["by_op"].items())[:12]:
            print(f"  {ms:7.2f} ms  {op}")


if __name__ == "__main__":
    main()
