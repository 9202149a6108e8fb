"""The teacher, the students and the data a run starts from, built as its config says.

:mod:`fitnets_tf.experiment` runs them; the tuner (:mod:`fitnets_tf.search`) and
``--list_layers`` build them too, without a run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import keras

from fitnets_tf import custom_code, pretrained
from fitnets_tf import data as data_lib
from fitnets_tf.config import ExperimentConfig
from fitnets_tf.data.sources import FOLDER, NPZ
from fitnets_tf.errors import ConfigError, TeacherLoadError
from fitnets_tf.maxout import TIES as MAXOUT_TIES
from fitnets_tf.models import onnx_model, saved_model, sources
from fitnets_tf.run import data_record, io, layout

TRAINING_ADVICE = ("Pass --teacher_path=FILE.keras or a run directory whose teacher stage "
                   "finished, or add 'teacher' to --stages to train one.")  # fmt: skip


def load_teacher(path: str | os.PathLike, advice: str = TRAINING_ADVICE,
                 input_shape=None, hints=()) -> keras.Model:  # fmt: skip
    """Loads a trained teacher from a ``.keras`` file, a previous run directory, a shipped
    teacher (``pretrained:NAME``, checked against its recorded sha256), a SavedModel folder or
    an ONNX file (:mod:`~fitnets_tf.models.saved_model`, :mod:`~fitnets_tf.models.onnx_model`:
    for images of ``input_shape``, default: the model's; their tensors that the pairs
    ``hints`` name as hints exposed as layers). ``advice`` ends the error's message: what to
    do, in the words of the program that failed."""
    path = teacher_location(pretrained.resolve(str(path)))
    tensors = [hint for hint, _ in hints] if isinstance(hints, (list, tuple)) else ()
    if saved_model.is_saved_model(path):
        return saved_model.load(path, input_shape, hints=tensors)
    if onnx_model.is_onnx_file(path):
        return onnx_model.load(path, input_shape, hints=tensors)
    return io.load_model(path, "teacher", TeacherLoadError, advice=advice)


def teacher_location(path: str | os.PathLike) -> pathlib.Path:
    """What a trained teacher's ``path`` loads: a run directory's ``teacher/teacher.keras``,
    else the path itself (a ``.keras`` file, a SavedModel folder)."""
    path = pathlib.Path(path).expanduser()
    run = path.is_dir() and not saved_model.is_saved_model(path)
    return layout.RunLayout(path).teacher if run else path


def trained_teacher(path: str | os.PathLike, input_shape, num_classes: int,
                    hints=()) -> keras.Model:  # fmt: skip
    """:func:`load_teacher`, checked against the dataset and outputting logits."""
    teacher = load_teacher(path, input_shape=input_shape, hints=hints)
    return sources.for_dataset(teacher, input_shape, num_classes, "teacher", str(path))


def new_teacher(config: ExperimentConfig, input_shape, num_classes: int) -> keras.Model:
    """The teacher to train, built as ``--teacher`` says (a registered name or an application)."""
    m = config.models
    return sources.resolve(
        m.teacher, input_shape, num_classes, seed=config.schedule.seed, role="teacher",
        kernel_initializer=m.kernel_initializer(), max_norm=m.max_norm, maxout_ties=m.maxout_ties,
        dropout=m.teacher_dropout, input_dropout=m.teacher_input_dropout,
    )  # fmt: skip


def new_student(config: ExperimentConfig, input_shape, num_classes: int) -> keras.Model:
    """A student with the run's initial weights: every call (one per mode) gives the same."""
    m, seed = config.models, config.schedule.seed + 1
    keras.utils.set_random_seed(seed)
    student = sources.resolve(m.student, input_shape, num_classes, seed=seed, role="student",
                              kernel_initializer=m.kernel_initializer(), max_norm=m.max_norm,
                              maxout_ties=m.maxout_ties)  # fmt: skip
    _check_maxout_ties_apply(config, student)
    return student


def _check_maxout_ties_apply(config: ExperimentConfig, student: keras.Model) -> None:
    """Refuses a ``--maxout_ties`` that no model of the run would use (the config's own check
    lets a student file through: whether it holds maxout layers is known once loaded)."""
    m = config.models
    if m.maxout_ties == MAXOUT_TIES[0] or m.builds_a_maxout_net():
        return
    if not any(isinstance(layer, sources.MAXOUT_LAYERS) for layer in student.layers):
        raise ConfigError(
            f"--maxout_ties={m.maxout_ties} concerns maxout layers, and the student "
            f"{m.student} has none (nor is --teacher={m.teacher} one of the paper's maxout nets "
            "built here): drop --maxout_ties"
        )


def dataset_shape(config: ExperimentConfig) -> tuple[tuple[int, int, int], int]:
    """The images' ``(H, W, C)`` and the class count as a run's data gives them (``--channels``
    converted): a registered dataset's from its spec (no data read), the user's from loading
    it."""
    d = config.data
    if d.dataset in data_lib.DATASETS:
        return data_lib.built_in_shape(d.dataset, d.image_size, d.resize_mode, d.channels)
    loaded = load_data(config)
    return loaded.input_shape, loaded.num_classes


def import_custom_modules(config: ExperimentConfig) -> None:
    """Imports ``config``'s ``--custom_modules`` (:mod:`fitnets_tf.custom_code`), whose classes
    its model files need: before any of them is loaded."""
    custom_code.import_modules(config.runtime.custom_modules)


def models_of(config: ExperimentConfig) -> tuple[keras.Model, keras.Model]:
    """The teacher and a student as a run of ``config`` starts with them (``--list_layers``).

    The teacher is the trained one when ``config`` names one (an ONNX file's with the hint
    tensors ``config`` names), else a new one.
    """
    import_custom_modules(config)
    shape = dataset_shape(config)
    path = config.models.trained_teacher()
    teacher = (trained_teacher(path, *shape, hints=config.hint_pairs()) if path
               else new_teacher(config, *shape))  # fmt: skip
    return teacher, new_student(config, *shape)


def input_paths(config: ExperimentConfig) -> dict[str, pathlib.Path]:
    """The user's files and folders a run of ``config`` reads, by the flag that names them: a
    ``.keras`` student, the teacher's file (a run directory's ``teacher/teacher.keras``), the
    ``--dataset`` file or folder. A run must never write over them (:mod:`~fitnets_tf.run.ownership`)."""
    m, found = config.models, {}
    if sources.is_keras_file(m.student):
        found["--student"] = pathlib.Path(m.student)
    teacher = m.trained_teacher()
    if teacher and not pretrained.is_pretrained(teacher):
        found["--teacher_path" if m.teacher_path else "--teacher"] = teacher_location(teacher)
    for prefix in (FOLDER, NPZ):
        if config.data.dataset.startswith(prefix):
            found["--dataset"] = pathlib.Path(config.data.dataset.removeprefix(prefix))
    return {flag: path.expanduser() for flag, path in found.items()}


def load_data(
    config: ExperimentConfig, holdout: str = data_lib.DEFAULT_HOLDOUT
) -> data_lib.Datasets:
    """The train / validation / test pipelines of ``config``'s data section.

    ``holdout`` is not an option of the config but a property of a run (its ``data.json``):
    a run passes its own (:func:`run_holdout`; :func:`load_run_data` does both); the default,
    a new run's, is right wherever no run's examples are at stake (the images' shape, classes).
    """
    d = config.data
    return data_lib.load(
        d.dataset, data_dir=config.runtime.data_dir, batch_size=d.batch_size,
        seed=config.schedule.seed, augment=d.augment, crop_padding=d.crop_padding,
        flip=None if d.flip == "auto" else d.flip == "on",  # None: the dataset's own rule
        limit=d.limit, validation_size=d.validation_size, retrain_on_all=d.retrain_on_all,
        image_size=d.image_size, resize_mode=d.resize_mode, channels=d.channels,
        preprocessing=d.preprocessing, input_mean=d.input_mean, input_std=d.input_std,
        holdout=holdout,
    )  # fmt: skip


def load_run_data(
    config: ExperimentConfig, record: str | os.PathLike, *, started: bool = False
) -> data_lib.Datasets:
    """:func:`load_data` as the run whose ``data.json`` is ``record`` holds its data out
    (:func:`run_holdout`, read before the data is), checked against that record
    (:func:`~fitnets_tf.run.data_record.check_same`: written by a new run, and rewritten until
    a stage has ``started``)."""
    holdout = run_holdout(config, record, started=started)
    size = data_record.folder_size_of(record, config.data) if started else None
    if size is None:
        return data_record.check_same(record, load_data(config, holdout), bound=started)
    # A folder's size is its images' (most common, once its first's): a resumed run keeps the
    # size it started with, whichever rule chose it.
    loaded = load_data(config.with_values(image_size=size), holdout)
    formatting = {**loaded.spec.formatting, "size_from": "the size the run started with "
                  "(its data.json)"}  # fmt: skip
    spec = dataclasses.replace(loaded.spec, formatting=formatting)
    return data_record.check_same(record, dataclasses.replace(loaded, spec=spec), bound=True)


def run_holdout(
    config: ExperimentConfig, record: str | os.PathLike, *, started: bool = False
) -> str:
    """How the run of ``config`` whose ``data.json`` is ``record`` draws the user's held-out
    examples: its record's draw (:func:`~fitnets_tf.run.data_record.holdout_of`).

    A new run whose teacher is another run's (``--teacher_path=RUN``, or ``RUN``'s
    ``teacher/teacher.keras``) on the same ``--dataset`` takes that run's draw instead: a
    teacher run started before the draw was stratified trained on images a new draw would test
    its students on.
    """
    teacher = config.models.trained_teacher()
    if started or os.path.exists(record) or not teacher:
        return data_record.holdout_of(record, started=started)
    path = pathlib.Path(teacher).expanduser()
    teacher_run = layout.RunLayout(path if path.is_dir() else path.parent.parent)
    if path not in (teacher_run.root, teacher_run.teacher) or not teacher_run.teacher.is_file():
        return data_lib.DEFAULT_HOLDOUT  # not a run's teacher (or none trained there yet)
    try:
        dataset = json.loads(teacher_run.data.read_text())["dataset"]
    except (OSError, ValueError, KeyError):  # a run from before runs recorded their data
        dataset = teacher_run.recorded_flags().get("dataset")
    if not _same_data(teacher_run, dataset, config.data.dataset):
        return data_lib.DEFAULT_HOLDOUT
    return data_record.holdout_of(teacher_run.data, started=True)


def _same_data(run: layout.RunLayout, recorded: str | None, given: str) -> bool:
    """Whether ``run``'s ``--dataset`` (``recorded``) and ``given`` name the same data: a
    folder's or a file's path however either is written (relative to where each run started,
    with ``~`` or a trailing ``/``)."""
    for prefix in ("folder:", "npz:"):
        if recorded and recorded.startswith(prefix) and given.startswith(prefix):
            paths = (run.recorded_path(recorded.removeprefix(prefix)), given.removeprefix(prefix))
            return len({os.path.realpath(os.path.expanduser(p)) for p in paths}) == 1
    return recorded == given
