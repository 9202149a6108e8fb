"""Trained teachers shipped with the project, each reproduced by a config in the repository's
``configs/`` (not part of the installed package: the manifest records each recipe whole).

``--teacher_path=pretrained:NAME`` names one (:func:`resolve`). ``manifest.json`` records, for
every file, its sha256, the command and seed that trained it, and its test accuracy, on the
whole test split and on the first :data:`SLICE` test images (what the tests check); it is
written by :func:`publish` (``python -m fitnets_tf.pretrained publish RUN_DIR NAME FLAGFILE``),
never by hand. A file is checked against its sha256 before each use, then loaded with ``safe_mode``
like every teacher: a damaged or replaced file is refused, by name.
"""

from __future__ import annotations

import json
import pathlib

from fitnets_tf.errors import TeacherLoadError

PREFIX = "pretrained:"
SLICE = 2000
# Options a run must share with the recipe of a shipped teacher to retrain it in place: the
# teacher then learns from the run's data pipeline, in the run's dtype policy.
SHARED_WITH_RECIPE = ("dataset", "image_size", "resize_mode", "channels", "preprocessing",
                      "input_mean", "input_std", "batch_size", "augment", "crop_padding", "flip",
                      "limit", "validation_size", "retrain_on_all", "mixed_precision")  # fmt: skip
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


def is_pretrained(teacher_path: str | None) -> bool:
    return bool(teacher_path) and str(teacher_path).startswith(PREFIX)


def recipe_config(config):
    """What ``--stages=teacher`` retrains the shipped teacher ``config`` names with: the
    configuration of the run that trained it (recorded in the manifest), ``config``'s runtime.

    Raises:
        ConfigError: no recipe recorded, or ``config``'s data or precision options differ from
            the recipe's (each named): the retrained teacher would not be the shipped one.
    """
    from fitnets_tf.config import ExperimentConfig, upgrade_fingerprint
    from fitnets_tf.errors import ConfigError

    name = config.models.teacher_path[len(PREFIX):]
    entry = manifest()[name]
    if "recipe" not in entry:
        raise ConfigError(f"The shipped teacher {name!r} has no recorded recipe to retrain it "
                          f"with: run `{entry['command']}`, then pass --teacher_path=<its "
                          "workdir>.")  # fmt: skip
    recipe, ours = upgrade_fingerprint(entry["recipe"]), config.fingerprint()
    differ = [f"--{k}={ours[k]} (its recipe: {recipe[k]})" for k in SHARED_WITH_RECIPE
              if ours[k] != recipe[k]]  # fmt: skip
    if differ:
        raise ConfigError(f"--stages=teacher retrains the shipped teacher {name!r} on this run's "
                          f"data, which must be prepared as its recipe's: {', '.join(differ)}. "
                          f"Change these options, or train it apart: "
                          f"`{entry['command']}`.")  # fmt: skip
    # With the run's seed: the shipped teacher itself at its recipe's seed, a new draw at another.
    runtime = config.values(("runtime",))
    return ExperimentConfig.from_values(recipe).with_values(seed=config.schedule.seed, **runtime)


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
            f"{MANIFEST.name}: {_restore(path, entry['command'])}"
        )
    return str(path)


def _restore(path: pathlib.Path, command: str) -> str:
    """How to get a damaged shipped file back: from git in a clone, from pip where installed
    (no checkout to restore from, and no configs/ folder: it is the repository's)."""
    root = HERE.parent.parent
    if (root / ".git").exists():
        return (f"the checkout is damaged or the file was replaced. Restore it (git checkout -- "
                f"{path.relative_to(root)}) or retrain it: {command}")  # fmt: skip
    return ("the installed package is damaged or the file was replaced. Restore it by "
            "reinstalling: pip install --force-reinstall --no-deps fitnets_tf (or the wheel or "
            f"folder you installed it from). Its recipe, in the project's repository: {command}")


def slice_accuracy(teacher, dataset: str = "fashion_mnist", data_dir: str | None = None,
                   size: int | None = SLICE) -> float:  # fmt: skip
    """Test accuracy of ``teacher`` on the first ``size`` test images of ``dataset`` (None: all)."""
    import numpy as np

    return float(np.mean(_test_hits(teacher, dataset, data_dir, size)))


def _test_hits(teacher, dataset: str, data_dir: str | None, size: int | None):
    """Whether ``teacher`` classifies each of the first ``size`` test images right, in order."""
    import numpy as np

    from fitnets_tf import data as data_lib
    from fitnets_tf.evaluation import predict_classes

    test = data_lib.load(dataset, data_dir=data_dir, batch_size=500).test
    if size is not None:
        test = test.take(-(-size // 500))
    hits = [predict_classes(teacher, x) == y for x, y in test.as_numpy_iterator()]
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
                 params=copy.count_params(), recipe=_recipe(files))  # fmt: skip
    io.write_json(MANIFEST, {**manifest(), name: entry})
    return entry


def _recipe(files) -> dict:
    from fitnets_tf.config import upgrade_fingerprint

    return upgrade_fingerprint(json.loads(files.run_state.read_text())["config"])


def record_recipe(run_dir: str | pathlib.Path, name: str) -> dict:
    """Adds to ``name``'s entry the configuration of the run in ``run_dir`` that trained it.

    For a teacher published before entries had recipes. The run's teacher, in float32, must
    have the shipped file's weights: a recipe is never attached to a teacher it did not train.
    """
    import keras
    import numpy as np

    from fitnets_tf import builders
    from fitnets_tf.export.serving import in_float32
    from fitnets_tf.run import io, layout

    files = layout.RunLayout(run_dir)
    shipped = keras.saving.load_model(resolve(PREFIX + name), compile=False)
    trained = in_float32(builders.load_teacher(files.root))
    same = len(shipped.weights) == len(trained.weights) and all(
        np.array_equal(a, b)
        for a, b in zip(shipped.get_weights(), trained.get_weights(), strict=True)
    )
    if not same:
        raise TeacherLoadError(f"The teacher of {files.root} is not the shipped {name!r}: "
                               "its recipe is not recorded.")  # fmt: skip
    entry = {**manifest()[name], "recipe": _recipe(files)}
    io.write_json(MANIFEST, {**manifest(), name: entry})
    return entry
