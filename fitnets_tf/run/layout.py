"""Every path of a run directory, in one place: modules ask a layout, never build a path.

Training run (``python -m fitnets_tf.train``, :class:`RunLayout`)::

    flags.txt             the resolved flagfile, re-runnable as is (its first line marks a run's:
                          fitnets_tf.run.ownership)
    versions.json         library versions, seed, host, the directory it was started from
    data.json             the data it started on: classes, image shape, split sizes, labels' hash,
                          the draw of a user's held-out examples, how the images were formatted
    summary.json          per model: test accuracy, parameters, multiplications, latency, times
    hints.json            the hint/guided pairs of stage 1, their weights and regressors, and
                          why (hints=auto)
    run_state.json        stages, epochs done, histories, checkpoint sha256 (fitnets_tf.run.resume)
    run_state.json.prev   the run state before the last write, read if the latest is damaged
    student.keras         the final student (first mode), and its SavedModel:
    student_saved_model/
    preprocessor.keras    the fitted input preprocessing (raw pixels in, network input out)
    teacher/              teacher.keras, log.csv, tensorboard/, checkpoints/ (ckpt-N.*: epoch N)
    <mode>/<stage>/       log.csv, tensorboard/, checkpoints/, student.keras after the stage
    <mode>/student.keras  that mode's final student
    plots/                curves_<mode>.png, curves_teacher.png, comparison.png
    teacher_cache/        the teacher's outputs in checksummed shards, when over --cache_memory_gb
    export/               what ``python -m fitnets_tf.export`` writes by default

Search (``python -m fitnets_tf.tune``, :class:`SearchLayout`)::

    flags.txt (its first line marks a search's: fitnets_tf.run.ownership), search.json,
    stage1/ (a RunLayout), stage1.json, trials/ (keras-tuner's project), results.csv,
    results.png, summary.json, best.flags, best_run/ (training with best.flags writes it)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile

from fitnets_tf.errors import WorkdirError
from fitnets_tf.run.io import checksum_path


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


@dataclasses.dataclass(frozen=True)
class StageLayout:
    """The files of one stage under ``root`` (``teacher/`` or ``<mode>/<stage>/``)."""

    root: pathlib.Path

    def __post_init__(self):
        object.__setattr__(self, "root", pathlib.Path(self.root).expanduser())

    @property
    def log_csv(self) -> pathlib.Path:
        return self.root / "log.csv"

    @property
    def checkpoints(self) -> pathlib.Path:
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> pathlib.Path:
        return self.root / "tensorboard"

    def checkpoint(self, epochs: int) -> pathlib.Path:
        """The prefix of the checkpoint taken after ``epochs`` epochs (``ckpt-N.index``...)."""
        return self.checkpoints / f"ckpt-{epochs}"

    def best_weights(self, epochs: int) -> pathlib.Path:
        """Early stopping's best weights as of that checkpoint (restored on resume)."""
        return self.checkpoints / f"ckpt-{epochs}.best_weights.npz"

    @property
    def step_checkpoints(self) -> pathlib.Path:
        """Mid-epoch checkpoints (``--checkpoint_every``, preemption), apart from the epochs'."""
        return self.checkpoints / "steps"

    def step_checkpoint(self, step: int) -> pathlib.Path:
        """The prefix of the mid-epoch checkpoint taken after the stage's ``step``-th step."""
        return self.step_checkpoints / f"ckpt-{step}"

    @property
    def student(self) -> pathlib.Path:
        """The student as the stage left it."""
        return self.root / "student.keras"


@dataclasses.dataclass(frozen=True)
class _Directory:
    """A directory a program owns: its root (``~`` expanded) and the flagfile that made it."""

    root: pathlib.Path

    def __post_init__(self):
        object.__setattr__(self, "root", pathlib.Path(self.root).expanduser())

    @property
    def flags(self) -> pathlib.Path:
        """The resolved flagfile: re-running it reproduces what is in this directory."""
        return self.root / "flags.txt"

    def recorded_flags(self) -> dict[str, str]:
        """:attr:`flags` as ``{name: value}`` (a true boolean: ``""``; a false one is
        ``no<name>``); ``{}`` without the file."""
        lines = self.flags.read_text().splitlines() if self.flags.is_file() else []
        pairs = (line.strip()[2:].partition("=") for line in lines if line.startswith("--"))
        return {name: value for name, _, value in pairs}


@dataclasses.dataclass(frozen=True)
class RunLayout(_Directory):
    """The files of one training run under ``root``."""

    @property
    def versions(self) -> pathlib.Path:
        return self.root / "versions.json"

    def recorded_path(self, value: str) -> str:
        """``value``, a path in :attr:`flags`, as the run read it: a relative one is relative to
        the directory the run was started from (``versions.json``), not to the reader's. A run
        from before that was recorded: ``value`` as it is."""
        try:
            started = json.loads(self.versions.read_text()).get("working_directory")
        except (OSError, ValueError, AttributeError):
            started = None
        path = pathlib.Path(value).expanduser()
        return value if started is None or path.is_absolute() else str(pathlib.Path(started) / path)

    @property
    def summary(self) -> pathlib.Path:
        return self.root / "summary.json"

    @property
    def data(self) -> pathlib.Path:
        """The data the run started on, checked on every resume (:mod:`~fitnets_tf.run.data_record`)."""
        return self.root / "data.json"

    @property
    def hints(self) -> pathlib.Path:
        """The hint/guided pairs stage 1 used (the automatic choice and its reason included)."""
        return self.root / "hints.json"

    @property
    def run_state(self) -> pathlib.Path:
        return self.root / "run_state.json"

    @property
    def run_state_previous(self) -> pathlib.Path:
        """The run state before its last write: read when ``run_state.json`` is damaged."""
        return self.root / "run_state.json.prev"

    @property
    def student(self) -> pathlib.Path:
        """The final student (the first mode's)."""
        return self.root / "student.keras"

    @property
    def student_saved_model(self) -> pathlib.Path:
        return self.root / "student_saved_model"

    @property
    def preprocessor(self) -> pathlib.Path:
        return self.root / "preprocessor.keras"

    @property
    def teacher(self) -> pathlib.Path:
        """The trained teacher of this run."""
        return self.stage("teacher").root / "teacher.keras"

    @property
    def teacher_cache(self) -> pathlib.Path:
        """The teacher's cached outputs on disk (fitnets_tf.teacher_shards), reused on resume."""
        return self.root / "teacher_cache"

    @property
    def plots(self) -> pathlib.Path:
        return self.root / "plots"

    @property
    def export(self) -> pathlib.Path:
        return self.root / "export"

    def stage(self, key: str) -> StageLayout:
        """``teacher/`` or ``<mode>/<stage>/``: logs, checkpoints and TensorBoard of a stage."""
        return StageLayout(self.root / key)

    def stage_student(self, mode: str, stage: str) -> pathlib.Path:
        """The student as one stage of one mode left it."""
        return self.stage(f"{mode}/{stage}").student

    def mode_student(self, mode: str) -> pathlib.Path:
        """That mode's final student."""
        return self.root / mode / "student.keras"

    def model_file(self, name: str) -> pathlib.Path:
        """The ``.keras`` file of a summary row: ``teacher`` or a mode."""
        return self.teacher if name == "teacher" else self.mode_student(name)

    def curves(self, name: str) -> pathlib.Path:
        return self.plots / f"curves_{name}.png"

    def outputs(self, modes, *, teacher: bool, flags: bool = True) -> list[pathlib.Path]:
        """The files and folders a training run of ``modes`` writes here: ``teacher/`` when it
        trains its teacher, ``flags.txt`` when the CLI runs it (``flags``). Not ``export/``,
        which only an export writes."""
        models = [self.student, self.preprocessor]
        files = [self.versions, self.data, self.summary, self.hints, self.run_state,
                 self.run_state_previous, *models, *(checksum_path(m) for m in models)]  # fmt: skip
        folders = [self.student_saved_model, self.plots, self.teacher_cache,
                   *(self.root / mode for mode in modes)]  # fmt: skip
        own = [self.flags] if flags else []
        return own + files + folders + ([self.stage("teacher").root] if teacher else [])

    @property
    def comparison_plot(self) -> pathlib.Path:
        return self.plots / "comparison.png"


@dataclasses.dataclass(frozen=True)
class SearchLayout(_Directory):
    """The files of one hyperparameter search under ``root``."""

    @property
    def search(self) -> pathlib.Path:
        """What the search is; a re-run must match it."""
        return self.root / "search.json"

    @property
    def stage1(self) -> RunLayout:
        """The training run that gives the trials their teacher and hint-trained student."""
        return RunLayout(self.root / "stage1")

    @property
    def stage1_done(self) -> pathlib.Path:
        return self.root / "stage1.json"

    project_name = "trials"

    @property
    def trials(self) -> pathlib.Path:
        """keras-tuner's project directory."""
        return self.root / self.project_name

    @property
    def results_csv(self) -> pathlib.Path:
        return self.root / "results.csv"

    @property
    def results_plot(self) -> pathlib.Path:
        return self.root / "results.png"

    @property
    def summary(self) -> pathlib.Path:
        return self.root / "summary.json"

    @property
    def best_flags(self) -> pathlib.Path:
        return self.root / "best.flags"

    @property
    def best_run(self) -> pathlib.Path:
        return self.root / "best_run"

    def outputs(self, *, flags: bool = True) -> list[pathlib.Path]:
        """The files and folders a search writes here (keras-tuner's all in :attr:`trials`):
        ``flags.txt`` when the CLI runs it (``flags``). Not ``best_run/``, which only
        training with ``best.flags`` writes."""
        own = [self.flags] if flags else []
        return own + [self.search, self.stage1.root, self.stage1_done, self.trials,
                      self.results_csv, self.results_plot, self.summary, self.best_flags]  # fmt: skip
