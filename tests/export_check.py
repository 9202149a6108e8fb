"""Runs exported students with each format's own runtime, in a fresh process.

Usage: ``python tests/export_check.py MANIFEST.json``. The manifest lists cases
``{"id", "format", "path", "inputs", "expected"}``; ``inputs`` and ``expected`` are keys of the
``.npz`` file named by the manifest's ``"arrays"``. Prints one JSON line: ``{id: result}`` with
``status`` one of ``"ok"``, ``"mismatch"``, ``"error"`` or ``"unavailable"`` (runtime not
installed; ``detail`` says why), and ``class_names``: those the artifact holds, read as the
documentation of fitnets_tf.export.labels says a client reads them (None: none, or a ``.keras``).

The loaders here are written against the runtimes directly, not with fitnets_tf's code, so the
test does not trust the code it tests. SavedModel, ONNX and LiteRT run before anything imports
fitnets_tf: they must stand alone. Only the ``.keras`` check imports it, as a Keras server must
(the Maxout layers are custom classes).
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import numpy as np

ATOL = 1e-5


def _version(package: str) -> str:
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


def run_saved_model(path, x):
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    names = sorted(signature.structured_outputs)
    return signature(images=tf.constant(x))["probabilities"].numpy(), {
        "runtime": f"tf.saved_model ({_version('tensorflow-cpu')})",
        "outputs": names,
    }


def saved_model_refusals(path, x):
    """What the SavedModel's signature says to ``x`` without its channel axis and with three
    channels: the error's type and the line naming the shapes, or None if it ran. (Before the
    signature checked shapes, the first aborted this process in oneDNN's convolution.)"""
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    said = {}
    for name, bad in (("rank3", x[..., 0]), ("rgb", np.repeat(x, 3, axis=-1))):
        try:
            signature(images=tf.constant(bad))
            said[name] = None
        except Exception as err:  # noqa: BLE001  (what a client sees is what the test pins)
            lines = [line for line in str(err).splitlines() if "expected shape" in line]
            said[name] = f"{type(err).__name__}: {(lines or [str(err)])[0].strip()}"
    return said


def run_onnx(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    info = {
        "runtime": _version("onnxruntime"),
        "inputs": [i.name for i in session.get_inputs()],
        "outputs": [o.name for o in session.get_outputs()],
    }
    return session.run(["probabilities"], {"images": x})[0], info


def run_litert(path, x):
    try:
        from ai_edge_litert.interpreter import Interpreter

        runtime = _version("ai-edge-litert")
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
        runtime = f"tf.lite.Interpreter ({_version('tensorflow-cpu')})"
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    outputs = runner(images=x)
    return outputs["probabilities"], {"runtime": runtime, "outputs": sorted(outputs)}


def run_keras(path, x):
    import keras

    # A Keras server imports the package that registers the custom layers (Maxout, Preprocessor).
    import fitnets_tf.layers  # noqa: F401
    import fitnets_tf.preprocessing  # noqa: F401

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    classes = sorted({type(layer).__name__ for layer in _all_layers(model)})
    info = {
        "runtime": f"keras.saving.load_model(safe_mode=True) ({_version('keras')})",
        "params": int(model.count_params()),
        "layer_classes": classes,
    }
    return keras.ops.convert_to_numpy(model(x)["probabilities"]), info


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def saved_model_class_names(path):
    # As documented: a JSON file in the SavedModel directory, no TensorFlow needed.
    try:
        return json.load(open(f"{path}/assets.extra/class_names.json"))
    except FileNotFoundError:
        return None


def onnx_class_names(path):
    import onnxruntime

    metadata = onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map
    return json.loads(metadata["class_names"]) if "class_names" in metadata else None


def litert_class_names(path):
    try:
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError:
        from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.read_model(path)
    found = [bytes(model.buffers[m.buffer].data)
             for m in model.metadata if m.name == b"class_names"]  # fmt: skip
    return json.loads(found[0]) if found else None


CLASS_NAMES = {
    "saved_model": saved_model_class_names,
    "onnx": onnx_class_names,
    "litert": litert_class_names,
    "keras": lambda path: None,  # a .keras file has no place for them
}
RUNNERS = {
    "saved_model": run_saved_model,
    "onnx": run_onnx,
    "litert": run_litert,
    "keras": run_keras,
}
INSTALL_HINTS = {"onnx": "onnxruntime", "litert": "ai-edge-litert", "saved_model": "tensorflow"}
# Standalone formats first: nothing of fitnets_tf is imported while they run.
ORDER = ("saved_model", "onnx", "litert", "keras")


def check(case, arrays):
    x, expected = arrays[case["inputs"]], arrays[case["expected"]]
    try:
        diffs, info = [], {}
        # Batch 1 and the whole batch: dynamic batch must survive every conversion.
        for batch in (x[:1], x):
            got, info = RUNNERS[case["format"]](case["path"], batch)
            want = expected[: len(batch)]
            if got.shape != want.shape:
                return {
                    "status": "mismatch",
                    "detail": f"shape {got.shape} != {want.shape}",
                    **info,
                }
            diffs.append(float(np.max(np.abs(got - want))))
        info["class_names"] = CLASS_NAMES[case["format"]](case["path"])
        if case["format"] == "saved_model":
            info["refused"] = saved_model_refusals(case["path"], x)
    except ImportError as err:
        package = INSTALL_HINTS.get(case["format"], case["format"])
        detail = f"{case['format']} runtime not importable ({err}); pip install {package}"
        return {"status": "unavailable", "detail": detail}
    except Exception as err:  # noqa: BLE001  (reported to the test, which fails with it)
        return {"status": "error", "detail": f"{type(err).__name__}: {err}"}
    status = "ok" if max(diffs) <= ATOL else "mismatch"
    return {"status": status, "max_abs_diff": max(diffs), **info}


def main(manifest_path: str) -> None:
    with open(manifest_path) as f:
        manifest = json.load(f)
    arrays = dict(np.load(manifest["arrays"]))
    cases = sorted(manifest["cases"], key=lambda case: ORDER.index(case["format"]))
    results = {}
    for case in cases:
        standalone = "fitnets_tf" not in sys.modules
        results[case["id"]] = {**check(case, arrays), "fitnets_tf_imported": not standalone}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
