"""The process-wide settings a run makes (seed, determinism, dtype policy, strategy), undone after.

Keras keeps its dtype policy and TensorFlow its op determinism in global state. A run sets
them for its own duration only, so that a notebook calling ``run()`` finds its session as it
left it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sys

import keras
import tensorflow as tf


def dtype_policy(mixed_precision: bool) -> str:
    """Keras' policy for ``--mixed_precision``: float16 where a GPU runs it, bfloat16 on CPUs.

    GPUs compute float16 on their tensor cores. CPUs do not: ``mixed_float16`` measured 4.3×
    slower than float32 on a 2-core AVX-512 CPU, while ``mixed_bfloat16`` (which oneDNN runs on
    AVX-512 BF16 / AMX units) trained 1.2-1.4× faster, with no loss scaling needed.
    """
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def session(*, seed: int, deterministic: bool, mixed_precision: bool):
    """Seeds every generator, sets determinism and the dtype policy; restores the policy after.

    Op determinism cannot be switched off again once on in a process (TensorFlow's rule), so
    it stays on: it changes speed, never results.
    """
    previous = keras.config.dtype_policy()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.config.set_dtype_policy(dtype_policy(mixed_precision))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def verbosity() -> int:
    """Keras' ``verbose``: progress bars on a terminal; one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2


def versions(seed: int | None = None) -> dict:
    """What produced a run: library versions, Python, platform, seed, and the directory it was
    started from (the relative paths of its flags.txt are relative to it)."""
    import keras_tuner
    import numpy
    import tensorflow_datasets as tfds

    import fitnets_tf

    return {
        "fitnets_tf": fitnets_tf.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_datasets": tfds.__version__,
        "keras_tuner": keras_tuner.__version__,
        "numpy": numpy.__version__,
        "absl_py": importlib.metadata.version("absl-py"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "seed": seed,
        "working_directory": os.getcwd(),
    }
