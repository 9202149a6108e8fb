"""Trained teachers shipped with the project, each reproduced by a config in ``configs/``.

``--teacher_path=pretrained:NAME`` names one (:func:`resolve`). ``manifest.json`` records, for
every file, its sha256, the command and seed that trained it, and its test accuracy, on the
whole test split and on the first :data:`SLICE` test images (what the tests check); it is
written by :func:`publish` (``python -m fitnets_tf.pretrained publish RUN_DIR NAME``), never by
hand. A file is checked against its sha256 before each use, then loaded with ``safe_mode``
like every teacher: a damaged or replaced file is refused, by name.
"""

from __future__ import annotations

import json
import pathlib

from fitnets_tf.errors import TeacherLoadError

PREFIX = "pretrained:"
SLICE = 2000
HERE = pathlib.Path(__file__).parent
MANIFEST = HERE / "manifest.json"


def manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def names() -> tuple[str, ...]:
    return tuple(sorted(manifest()))


def name_problem(teacher_path: str | None) -> str | None:
    """A ``--teacher_path`` of the form ``pretrained:NAME`` with an unknown NAME (cheap check)."""
    if not teacher_path or not teacher_path.startswith(PREFIX):
        return None
    name = teacher_path[len(PREFIX):]
    if name in manifest():
        return None
    return f"no shipped teacher {name!r}: the shipped ones are {', '.join(names()) or 'none'}"


def resolve(teacher_path: str) -> str:
    """The file a ``--teacher_path`` names, a shipped one checked against its sha256 first.

    Raises:
        TeacherLoadError: an unknown name, or a file missing or not matching its sha256.
    """
    if not str(teacher_path).startswith(PREFIX):
        return teacher_path
    problem = name_problem(teacher_path)
    if problem:
        raise TeacherLoadError(f"{problem}.")
    name = teacher_path[len(PREFIX):]
    entry = manifest()[name]
    path = HERE / entry["file"]
    from fitnets_tf.run import io  # TensorFlow-free, but keep this module's import light

    if not path.is_file() or io.file_sha256(path) != entry["sha256"]:
        raise TeacherLoadError(
            f"The shipped teacher {name!r} ({path}) is missing or does not match the sha256 in "
            f"{MANIFEST.name}: the checkout is damaged or the file was replaced. Restore it "
            f"(git checkout -- {path.relative_to(HERE.parent.parent)}) or retrain it: "
            f"{entry['command']}"
        )
    return str(path)


def slice_accuracy(teacher, dataset: str = "fashion_mnist", data_dir: str | None = None,
                   size: int | None = SLICE) -> float:  # fmt: skip
    """Test accuracy of ``teacher`` on the first ``size`` test images of ``dataset`` (None: all)."""
    import numpy as np

    return float(np.mean(_test_hits(teacher, dataset, data_dir, size)))


def _test_hits(teacher, dataset: str, data_dir: str | None, size: int | None):
    """Whether ``teacher`` classifies each of the first ``size`` test images right, in order."""
    import numpy as np

    from fitnets_tf import data as data_lib

    test = data_lib.load(dataset, data_dir=data_dir, batch_size=500).test
    if size is not None:
        test = test.take(-(-size // 500))
    hits = [np.argmax(teacher.predict_on_batch(x), -1) == y for x, y in test.as_numpy_iterator()]
    return np.concatenate(hits)[:size]


def publish(run_dir: str | pathlib.Path, name: str, flagfile: str) -> dict:
    """Ships the teacher of a finished run of ``flagfile`` as ``NAME.keras``, with its entry.

    The copy computes in float32 (a teacher trained in mixed precision is served on CPUs that
    may lack bfloat16 units) and holds no optimizer state. Its test accuracy is measured here,
    on the copy, in float32.
    """
    from fitnets_tf import builders
    from fitnets_tf.export.serving import in_float32
    from fitnets_tf.run import io, layout

    files = layout.RunLayout(run_dir)
    flags = dict(line.strip()[2:].split("=", 1) for line in files.flags.read_text().splitlines()
                 if line.startswith("--") and "=" in line)  # fmt: skip
    dataset, seed = flags["dataset"], int(flags["seed"])
    teacher = builders.load_teacher(files.root)
    copy = in_float32(teacher)
    file = f"{name}.keras"
    io.save_model(copy, HERE / file)
    hits = _test_hits(copy, dataset, None, None)  # one pass over the test split for both figures
    entry = dict(file=file, sha256=io.file_sha256(HERE / file), dataset=dataset,
                 command=f"python -m fitnets_tf.train --flagfile={flagfile}", seed=seed,
                 test_accuracy=round(float(hits.mean()), 4),
                 slice_size=SLICE, slice_accuracy=float(hits[:SLICE].mean()),
                 params=copy.count_params())  # fmt: skip
    io.write_json(MANIFEST, {**manifest(), name: entry})
    return entry
