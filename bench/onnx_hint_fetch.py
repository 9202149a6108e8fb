"""What an ONNX teacher's hints cost the calls that need only its logits.

``python -m bench.onnx_hint_fetch`` (about 2.5 minutes) writes ``results/onnx_hint_fetch.json``.
A teacher loaded with hints (``onnx_model.load(..., hints=[...])``, what a ``--mode=fitnet``
run does) is the one its stage 2, KD and the teacher's evaluation call too. The teacher: a
channels-first CNN written with ``onnx.helper`` (32x32x3, convolutions of 32, 32, 64, 64 and
128 filters, ReLUs, two max poolings, global average pooling, a linear layer), its hint the
second ReLU (32x32x32 per image, the size of the paper's CIFAR hint); the CIFAR pair's batch
(64) and student (``fitnet1``). Timed, in alternated rounds, against the same file loaded
without hints:

- the teacher's logits in a ``tf.function`` (``training=False``);
- the KD Distiller's train step (stage 2, live teacher);
- stage 1's tap of the hint, and the teacher cache's call for logits and hint together;
- the file's ONNX Runtime session alone (the hinted one): its logits fetched alone
  (``OnnxTeacher.run``) against every output fetched and copied (``run_all``), what each call
  of the teacher fetched before the logits had a call of their own.
"""

from __future__ import annotations

import pathlib
import tempfile

import keras
import numpy as np
import tensorflow as tf

from bench import benchmarks, standalone, timing
from bench.run import machine
from fitnets_tf import hint_path, models, teacher_cache
from fitnets_tf.models import onnx_hints, onnx_model

RESULTS = pathlib.Path(__file__).parent / "results" / "onnx_hint_fetch.json"
HINT = "/c1/Relu_output_0"
STEPS = 10


def teacher_file(path: pathlib.Path) -> None:
    import onnx  # noqa: PLC0415  (the export extra's)
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    init, nodes, previous, channels = [], [], "input", 3
    for i, (filters, pool) in enumerate(((32, False), (32, True), (64, False), (64, True),
                                         (128, False))):  # fmt: skip
        scale = np.sqrt(2.0 / (9 * channels))
        init += [numpy_helper.from_array(
            rng.normal(0, scale, (filters, channels, 3, 3)).astype(np.float32), f"c{i}.weight"),
            numpy_helper.from_array(np.zeros(filters, np.float32), f"c{i}.bias")]  # fmt: skip
        conv, relu = f"/c{i}/Conv_output_0", f"/c{i}/Relu_output_0"
        nodes += [helper.make_node("Conv", [previous, f"c{i}.weight", f"c{i}.bias"], [conv],
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [conv], [relu])]  # fmt: skip
        previous, channels = relu, filters
        if pool:
            nodes.append(helper.make_node("MaxPool", [relu], [f"/p{i}/MaxPool_output_0"],
                                          kernel_shape=[2, 2], strides=[2, 2]))  # fmt: skip
            previous = f"/p{i}/MaxPool_output_0"
    init += [numpy_helper.from_array(rng.normal(0, 0.1, (10, 128)).astype(np.float32), "fc.w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")]  # fmt: skip
    nodes += [helper.make_node("GlobalAveragePool", [previous], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1)]  # fmt: skip
    images = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    logits = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "cnn", [images], [logits], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _calls(function, x):
    def run():
        for _ in range(STEPS):
            out = function(x)
        tf.nest.map_structure(np.asarray, out)

    return run


def candidates(path: pathlib.Path) -> dict:
    x, y = benchmarks.fixed_batch("cifar")
    data = benchmarks.repeated(x, y)
    teachers = {"plain": onnx_model.load(path, (32, 32, 3)),
                "hinted": onnx_model.load(path, (32, 32, 3), hints=[HINT])}  # fmt: skip
    student = models.build("fitnet1", (32, 32, 3), benchmarks.NUM_CLASSES, seed=1)
    found = {}
    for kind, teacher in teachers.items():
        logits = tf.function(lambda images, t=teacher: t(images, training=False))
        found[f"logits/{kind}"] = _calls(logits, x)
        kd = benchmarks.kd_distiller(teacher, keras.models.clone_model(student))
        found[f"kd_step/{kind}"] = benchmarks.train_runner(kd, data, STEPS)
    hinted, name = teachers["hinted"], onnx_hints.layer_name(HINT)
    found["hint_tap/hinted"] = _calls(tf.function(hint_path.tap(hinted, [name], "hint")), x)
    found["cache_both/hinted"] = _calls(teacher_cache.outputs_function(hinted, name), x)
    session, nchw = hinted.get_layer(onnx_model.RUNNER), np.transpose(x, (0, 3, 1, 2)).copy()
    found["session/logits"] = _calls(session.run, nchw)
    found["session/all"] = _calls(session.run_all, nchw)
    return found


def main(argv=None) -> None:
    args = standalone.arguments(__doc__.splitlines()[0], argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "teacher.onnx"
        teacher_file(path)
        times = timing.interleaved(candidates(path), repeats=args.repeats)
    ratios = {
        "logits: hinted / plain": timing.ratio(times, "logits/hinted", "logits/plain"),
        "kd_step: hinted / plain": timing.ratio(times, "kd_step/hinted", "kd_step/plain"),
        "hint_tap / plain logits": timing.ratio(times, "hint_tap/hinted", "logits/plain"),
        "cache_both / plain logits": timing.ratio(times, "cache_both/hinted", "logits/plain"),
        "session: all / logits": timing.ratio(times, "session/all", "session/logits"),
    }
    result = {"machine": machine(), "batch": int(benchmarks.PAIRS["cifar"][3]), "hint": HINT,
              "ms_per_call": timing.summary(times, STEPS), "ratios": ratios}  # fmt: skip
    standalone.write(RESULTS, result, shown=("ms_per_call", "ratios"))


if __name__ == "__main__":
    main()
