"""The run directory: where one experiment keeps everything, written so a crash loses nothing.

Every file is written to a temporary sibling and renamed into place (``os.replace`` is atomic
on POSIX filesystems), so a kill, a crash or a full disk leaves either the previous complete
file or the new complete file, never a truncated one.

Layout (``workdir`` = the run directory)::

    flags.txt             the resolved flagfile, re-runnable as is
    versions.json         library versions, seed, host
    summary.json          per model: test accuracy, parameters, multiplications, latency, times
    run_state.json        stages and epochs done, histories (see fitnets_tf.resume)
    student.keras         the final student (first mode), and its SavedModel:
    student_saved_model/
    preprocessor.keras    the fitted input preprocessing (raw pixels in, network input out)
    teacher/              teacher.keras, log.csv, tensorboard/
    <mode>/<stage>/       log.csv, tensorboard/, checkpoints/, student.keras after the stage
    <mode>/student.keras  that mode's final student
    plots/                curves_<mode>.png, comparison.png
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import uuid


class WorkdirError(ValueError):
    """The run directory cannot be used."""


def prepare(workdir: str | os.PathLike) -> pathlib.Path:
    """Creates ``workdir`` if needed and proves it writable, before any expensive work."""
    path = pathlib.Path(workdir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise WorkdirError(
            f"Cannot write to the run directory {str(path)!r} ({e.strerror or e}). Choose a "
            "writable --workdir, or fix its permissions."
        ) from e
    return path


def _temporary_sibling(path: pathlib.Path) -> pathlib.Path:
    # Same directory, hence same filesystem: the final rename is atomic. The suffix is kept
    # because Keras picks the format from it (.keras, .weights.h5).
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path to write a file or directory to; renamed to ``path`` on success.

    On an exception the temporary is removed and ``path`` keeps its previous content.
    """
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(final)
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            # Directories cannot be replaced atomically: move the old one aside first, so that
            # at every moment one complete version exists.
            old = _temporary_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_model(model, path: str | os.PathLike) -> None:
    """``model.save`` to a ``.keras`` file, atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def versions(seed: int | None = None) -> dict:
    """What produced a run: library versions, Python, platform and seed."""
    import importlib.metadata

    import keras
    import keras_tuner
    import numpy
    import tensorflow as tf
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
    }
