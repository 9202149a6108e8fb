"""ONNX Runtime with spinning worker threads (its default) against sleeping ones.

    python bench/ort_spinning.py     # ~2 min; writes bench/results/ort_spinning.json

The default experiment's float32 student (``runs/fashion_mnist/student.keras``, else a fresh
``thin_cnn``) and its shipped teacher, exported by the project's ONNX and LiteRT writers, at
batch 1 and 128, 2 threads: ONNX Runtime with ``session.intra_op.allow_spinning`` 1 and 0, and
LiteRT for scale, timed in the same alternated rounds (:func:`bench.timing.interleaved`). Run it
on a quiet machine and under load: spinning workers answer faster on idle cores and take the
cores other jobs need on a busy one.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALLS = {1: 200, 128: 10}  # per timed candidate call: ~10 ms or more of work each


def candidates(tmp: pathlib.Path, threads: int = 2) -> dict:
    import keras
    import numpy as np
    import onnxruntime

    from fitnets_tf import builders, models
    from fitnets_tf.export import writers
    from fitnets_tf.export.serving import as_served
    from fitnets_tf.export.verify import litert_interpreter

    trained = ROOT / "runs" / "fashion_mnist" / "student.keras"
    student = (keras.saving.load_model(trained, compile=False) if trained.exists()
               else models.build("thin_cnn", (28, 28, 1), 10, seed=0))  # fmt: skip
    nets = {"student": as_served(student),
            "teacher": as_served(builders.load_teacher("pretrained:fashion_mnist_wide_cnn"))}  # fmt: skip
    found = {}
    for name, net in nets.items():
        writers.write_onnx(net, tmp / f"{name}.onnx")
        writers.write_litert(net, tmp / f"{name}.tflite")
        for batch, calls in CALLS.items():
            x = np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32)
            for spin in ("1", "0"):
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                options.add_session_config_entry("session.intra_op.allow_spinning", spin)
                session = onnxruntime.InferenceSession(str(tmp / f"{name}.onnx"), options,
                                                       providers=["CPUExecutionProvider"])  # fmt: skip
                feed = {session.get_inputs()[0].name: x}
                found[f"{name}/b{batch}/ort_spin{spin}"] = (
                    lambda s=session, f=feed, n=calls: [s.run(None, f) for _ in range(n)])  # fmt: skip
            interpreter = litert_interpreter(tmp / f"{name}.tflite", num_threads=threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, x.shape)
            interpreter.allocate_tensors()

            def litert(i=interpreter, k=index, x=x, n=calls):
                for _ in range(n):
                    i.set_tensor(k, x)
                    i.invoke()

            found[f"{name}/b{batch}/litert"] = litert
    return found


def main() -> None:
    from bench import timing

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        times = timing.interleaved(candidates(pathlib.Path(tmp)), repeats=9)
    batch_of = {name: int(name.split("/b")[1].split("/")[0]) for name in times}
    ms = {name: value["ms"] / CALLS[batch_of[name]] for name, value in timing.summary(times).items()}
    ratios = {}
    for net in ("student", "teacher"):
        for batch in CALLS:
            key = f"{net}/b{batch}"
            ratios[f"{key}: sleeping / spinning"] = timing.ratio(times, f"{key}/ort_spin0", f"{key}/ort_spin1")
            ratios[f"{key}: spinning / LiteRT"] = timing.ratio(times, f"{key}/ort_spin1", f"{key}/litert")
            ratios[f"{key}: sleeping / LiteRT"] = timing.ratio(times, f"{key}/ort_spin0", f"{key}/litert")
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_average": [load_start, os.getloadavg()],
              "ms_per_call": ms, "ratios": ratios}  # fmt: skip
    out = ROOT / "bench" / "results" / "ort_spinning.json"
    out.write_text(json.dumps(result, indent=1))
    for name, q in ratios.items():
        print(f"{name}: {q['median']:.2f} [{q['q1']:.2f}-{q['q3']:.2f}]")
    print(f"load average {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}; written to {out}")


if __name__ == "__main__":
    main()
