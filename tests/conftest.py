"""Shared tiny models and data: every test runs in seconds on 2 CPU cores; the CLI runner."""

import fcntl
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from fitnets_tf import layers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
    """The folder ``name``, filled by ``build(folder)`` once per test session: under pytest-xdist
    the first worker to ask builds it, and the other waits and reuses it (a module-scoped
    fixture was built again in each worker that ran one of its tests: up to 50 s each).

    Its users must only read it (or copy it): it is shared.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' basetemps are siblings under the session's
    folder = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a failed build's remains
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def cli_run_once(tmp_path_factory, name: str, run_cli) -> tuple[pathlib.Path, SimpleNamespace]:
    """``(workdir, proc)`` of ``run_cli(workdir)`` (a CLI subprocess writing the run directory
    ``workdir``), run once per test session (:func:`built_once`); ``proc`` has its
    ``returncode``, ``stdout`` and ``stderr``."""

    def build(folder):
        proc = run_cli(folder / "run")
        assert proc.returncode == 0, proc.stderr[-4000:]
        (folder / "proc.json").write_text(json.dumps(
            {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}))

    folder = built_once(tmp_path_factory, name, build)
    return folder / "run", SimpleNamespace(**json.loads((folder / "proc.json").read_text()))


def train_cli(*args, timeout=240) -> subprocess.CompletedProcess:
    """``python -m fitnets_tf.train ARGS`` from the checkout, its output captured."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "fitnets_tf.train", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def quadrant_teacher(gain: float) -> keras.Model:
    """Class k of 4 by the brighter quadrant of a (4, 4, 1) image: a ReLU-free network without
    biases, whose logits are ``gain`` times the quadrants' means, as scale-free as a ReLU net."""
    head = keras.layers.Dense(4, use_bias=False)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.AveragePooling2D(2),
                              keras.layers.Flatten(), head], name="quadrants")  # fmt: skip
    head.set_weights([gain * np.eye(4)])
    return model


def tiny_model(
    name: str, width: int, seed: int, pieces: int = 2, classes: int = 3, batch_norm: bool = True
) -> keras.Model:
    """8×8×1 → maxout conv → pool → maxout conv → BN → GAP → logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = layers.MaxoutConv2D(width, 3, pieces=pieces, padding="same", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = layers.MaxoutConv2D(width, 3, pieces=pieces, padding="same", name="conv2")(h)
    if batch_norm:
        h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(inputs, outputs, name=name)


def dropout_model(seed=0) -> keras.Model:
    """28×28×1 → dropout → conv → dropout → logits: a model whose training draws random numbers."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Dropout(0.3)(inputs)
    h = keras.layers.Conv2D(4, 3, strides=2)(h)
    h = keras.layers.Dropout(0.5)(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h))


class Killed(Exception):
    """What :class:`KillAfter` raises: the process's training ends there, as a kill would."""


class KillAfter(keras.callbacks.Callback):
    """Ends the process's training after epoch ``epochs`` is checkpointed, as a kill would."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise Killed


def tiny_data(n: int = 32, seed: int = 0):
    rng = np.random.RandomState(seed)
    x = rng.rand(n, 8, 8, 1).astype("float32")
    y = (np.arange(n) % 3).astype("int32")
    return x, y


def tiny_dataset(batch_size: int = 8, n: int = 32):
    x, y = tiny_data(n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


@pytest.fixture
def teacher():
    return tiny_model("teacher", width=6, seed=0, pieces=3)


@pytest.fixture
def student():
    return tiny_model("student", width=4, seed=1)


@pytest.fixture
def network_attempts(monkeypatch) -> list:
    """Every attempt of this process to reach the network (a name lookup or a connection),
    each refused with an OSError as a machine offline would: "fails fast" is checked by
    what a call tried, not by how long it took."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("this test forbids network access")

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture
def fit_calls(monkeypatch) -> list:
    """The models ``keras.Model.fit`` was called on (every stage trains through it), each
    refused: a check meant to come before training is checked by no training started."""
    calls = []

    def refuse(model, *args, **kwargs):
        calls.append(model.name)
        raise AssertionError(f"{model.name} was trained")

    monkeypatch.setattr(keras.Model, "fit", refuse)
    return calls


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
