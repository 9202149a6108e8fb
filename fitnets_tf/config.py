"""The configuration of an experiment: four sections, each option declared once.

* :class:`DataConfig`, :class:`ModelsConfig`, :class:`ScheduleConfig`: what the results depend
  on. Their values are the run's *fingerprint*: a run directory resumes only the same one.
* :class:`RuntimeConfig`: how and where this call runs (which stages now, devices, caching,
  determinism). It may change between calls on the same run directory.

Every field is an :func:`~fitnets_tf.options.option`: its default, help text and limits are
here and nowhere else; ``fitnets_tf.cli.flags`` derives the command-line flags from them (the
flag of a field has the field's name unless ``flag=`` says otherwise). Adding an option is
one line in a section, plus the code that uses it.
"""

from __future__ import annotations

import dataclasses
import json

from fitnets_tf import options
from fitnets_tf.errors import ConfigError
from fitnets_tf.options import option

INITS = ("paper", "he_uniform", "glorot_uniform")
REGRESSORS = ("auto", "linear")
CACHE_TEACHER = ("auto", "yes", "no")
# The paper's two stages (and the teacher's training before them). A mode's own stages map
# onto these (fitnets_tf.stages.PAPER_STAGE): "stage2" is the KD stage of `fitnet` and `kd`,
# and the labels-only training of `scratch` at the same budget.
RUN_STAGES = ("teacher", "stage1", "stage2")
# The names --stages took before the stages had their paper names; still accepted.
STAGE_ALIASES = {"hints": "stage1", "kd": "stage2"}


def _datasets() -> tuple[str, ...]:
    from fitnets_tf import data

    return tuple(data.DATASETS)


def _architectures() -> tuple[str, ...]:
    from fitnets_tf import models

    return models.names()


def _modes() -> tuple[str, ...]:
    from fitnets_tf import stages

    return stages.MODES


def _strategies() -> tuple[str, ...]:
    from fitnets_tf import distribute

    return distribute.STRATEGIES


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images, how many, in which batches."""

    dataset: str = option("fashion_mnist", "Dataset.", choices=_datasets)
    batch_size: int = option(128, "Global batch size.", minimum=1)
    augment: bool = option(False, "Pad-8 random crops (+ flips where valid).")
    limit: int | None = option(
        None, "Use only the first N examples of each split (smoke runs).", minimum=1
    )
    validation_size: int | None = option(
        None, "Examples held out of train (default: paper's).", minimum=0
    )
    retrain_on_all: bool = option(False, "Train on train+validation (the paper's last run).")


@dataclasses.dataclass(frozen=True)
class ModelsConfig:
    """The teacher, the student, the hint/guided pair and the regressor between them."""

    teacher: str = option("mnist_teacher", "Teacher architecture.", choices=_architectures)
    student: str = option("mnist_fitnet", "Student architecture.", choices=_architectures)
    hint_layer: str | None = option(None, "Teacher layer giving the hint (default: paper's).")
    guided_layer: str | None = option(None, "Student layer being guided (default: paper's).")
    teacher_path: str | None = option(
        None, "Trained teacher: a .keras file or a run directory."
    )
    init: str = option(
        "paper", "Kernel init: the paper's U(-0.005, 0.005), or He / Glorot uniform.",
        choices=INITS,
    )  # fmt: skip
    max_norm: bool = option(True, "Max-norm constraints of the paper's code.")
    teacher_dropout: float | None = option(
        None, "Teacher's dropout after each layer (paper: 0.5).", minimum=0, maximum=0.99
    )
    teacher_input_dropout: float | None = option(
        None, "Teacher's input dropout (paper: 0.2).", minimum=0, maximum=0.99
    )
    regressor: str = option(
        "auto", "auto: the paper's (hint's non-linearity); linear: none.", choices=REGRESSORS
    )

    def kernel_initializer(self) -> str | None:
        """The ``kernel_initializer`` argument of ``models.build`` (None: the paper's)."""
        return None if self.init == "paper" else self.init


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Modes, epochs, optimizer and the KD curriculum (defaults: the paper's CIFAR-10 values)."""

    modes: tuple[str, ...] = option(
        ("fitnet",), "Student training modes, in order; the first gives the final student.",
        flag="mode", choices=_modes,
    )  # fmt: skip
    teacher_epochs: int = option(10, "Teacher epochs.", minimum=0)
    hints_epochs: int = option(5, "Stage-1 epochs.", minimum=0)
    kd_epochs: int = option(10, "Stage-2 (and scratch) epochs.", minimum=0)
    early_stopping_patience: int = option(
        0, "Stop a stage after N epochs without validation improvement and keep the best "
        "weights (paper: 100). 0: off.", minimum=0,
    )  # fmt: skip
    learning_rate: float = option(5e-3, "RMSProp learning rate.", exclusive_minimum=0)
    rho: float = option(0.9, "RMSProp decay (paper's code: 0.9).", minimum=0, maximum=1)
    teacher_learning_rate: float | None = option(
        None, "Teacher's learning rate (None: --learning_rate).", exclusive_minimum=0
    )
    temperature: float = option(3.0, "τ of the soft targets (> 0).", exclusive_minimum=0)
    kd_lambda: float = option(4.0, "λ at the start of stage 2 (>= 0).", minimum=0)
    lambda_end: float = option(1.0, "λ at the end of its decay.", minimum=0)
    lambda_hold: int = option(0, "Epochs at --kd_lambda before decaying.", minimum=0)
    lambda_epochs: int | None = option(
        None, "Decay length in epochs (default: rest of stage 2).", minimum=1
    )
    tau_squared: bool = option(False, "Multiply the soft term by τ² (not the paper).")
    seed: int = option(0, "Seed of weights, shuffling and augmentation.")
    mixed_precision: bool = option(False, "mixed_float16 compute (GPUs with tensor cores).")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How this call runs: none of it changes the numbers a finished run reports."""

    data_dir: str | None = option(None, "Prepared TFDS data directory (default: TFDS's).")
    stages: tuple[str, ...] = option(
        RUN_STAGES, "Stages to run now: teacher, stage1 (hints; guided_labels), stage2 (kd; "
        "scratch). 'hints' and 'kd' are accepted for stage1 and stage2. Without 'teacher', "
        "--teacher_path or the workdir's teacher is used.",
        choices=RUN_STAGES + tuple(STAGE_ALIASES), noun="stage",
    )  # fmt: skip
    strategy: str = option("default", "tf.distribute strategy.", choices=_strategies)
    jit_compile: bool = option(False, "XLA-compile the train step (slower on CPU).")
    deterministic: bool = option(False, "TF op determinism (bit-identical reruns on CPU).")
    measure_latency: bool = option(True, "Time CPU inference of every model for the summary.")
    cache_teacher: str = option(
        "auto", "Run the frozen teacher once over train/validation and reuse its logits (and "
        "hint) every epoch. auto: when not --augment; yes with --augment is refused.",
        choices=CACHE_TEACHER,
    )  # fmt: skip

    def __post_init__(self):
        # One vocabulary from here on: the old names become the paper's.
        object.__setattr__(self, "stages", tuple(STAGE_ALIASES.get(s, s) for s in self.stages))

    def run_stages(self) -> tuple[str, ...]:
        """The stages to run now, in the paper's names."""
        return self.stages


SECTIONS = {
    "data": DataConfig,
    "models": ModelsConfig,
    "schedule": ScheduleConfig,
    "runtime": RuntimeConfig,
}
FINGERPRINTED = ("data", "models", "schedule")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything an experiment depends on, as plain values, in four sections."""

    data: DataConfig = DataConfig()
    models: ModelsConfig = ModelsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @classmethod
    def from_values(cls, values: dict) -> ExperimentConfig:
        """From ``{field name: value}`` over all sections (unknown names are refused)."""
        return cls().with_values(**values)

    def with_values(self, **values) -> ExperimentConfig:
        """A copy with some options changed, each named by its field (``seed=1``, ``modes=...``)."""
        owner = {s.name: section for section, t in SECTIONS.items() for s in options.specs(t)}
        unknown = sorted(set(values) - set(owner))
        if unknown:
            raise ConfigError(f"Unknown option(s) {', '.join(unknown)} (valid: {', '.join(owner)}).")
        changed = {}
        for section in SECTIONS:
            mine = {k: v for k, v in values.items() if owner[k] == section}
            if mine:
                changed[section] = dataclasses.replace(getattr(self, section), **mine)
        return dataclasses.replace(self, **changed)

    def values(self, sections=tuple(SECTIONS)) -> dict:
        """``{field name: value}`` of ``sections``: field names are unique across sections."""
        return {s.name: getattr(getattr(self, section), s.name)
                for section in sections for s in options.specs(SECTIONS[section])}  # fmt: skip

    def fingerprint(self) -> dict:
        """What the results depend on (every section but ``runtime``), as JSON values."""
        return json.loads(json.dumps(self.values(FINGERPRINTED)))  # tuples as lists

    def validate(self) -> None:
        """Cheap checks, before any data is read or model built."""
        found = [p for section in SECTIONS for p in options.problems(getattr(self, section))]
        found += self._cross_field_problems()
        if found:
            raise ConfigError("Invalid configuration: " + "; ".join(found) + ".")

    def _cross_field_problems(self) -> list[str]:
        schedule = self.schedule
        found = []
        if not schedule.modes:
            found.append("no mode given")
        if self.runtime.cache_teacher == "yes" and self.data.augment:
            from fitnets_tf import teacher_cache

            found.append(teacher_cache.AUGMENTATION_MESSAGE)
        return found

    def pair(self) -> tuple[str | None, str | None]:
        """The hint and guided layer names: given, else the paper's for these architectures."""
        from fitnets_tf import models

        hint = self.models.hint_layer or _paper_layer(models.hint_layer_name, self.models.teacher)
        guided = self.models.guided_layer or _paper_layer(
            models.guided_layer_name, self.models.student
        )
        return hint, guided

    def hyperparameters(self, teacher: bool = False):
        """The :class:`~fitnets_tf.stages.Hyperparameters` of the students' (or teacher's) stages."""
        from fitnets_tf import stages

        s = self.schedule
        learning_rate = s.learning_rate
        if teacher and s.teacher_learning_rate is not None:
            learning_rate = s.teacher_learning_rate
        return stages.Hyperparameters(
            learning_rate=learning_rate, rho=s.rho, temperature=s.temperature,
            lambda_start=s.kd_lambda, lambda_end=s.lambda_end, lambda_hold=s.lambda_hold,
            lambda_epochs=s.lambda_epochs, tau_squared=s.tau_squared,
            regressor=self.models.regressor,
        )  # fmt: skip


def _paper_layer(lookup, name):
    try:
        return lookup(name)
    except ValueError:
        return None


def upgrade_fingerprint(stored: dict) -> dict:
    """A fingerprint as written by any version, in today's form, for comparison.

    Before the sections, a fingerprint was the flat config with a nested ``hparams`` and
    held runtime options. An option added since is absent from an older fingerprint: its
    default is what that run used.
    """
    stored = dict(stored)
    hparams = stored.pop("hparams", None) or {}
    stored.update({"kd_lambda" if k == "lambda_start" else k: v for k, v in hparams.items()})
    current = ExperimentConfig().fingerprint()
    return {key: stored.get(key, default) for key, default in current.items()}


# The default experiment (configs/fashion_mnist.flags): what `python -m fitnets_tf.train` runs
# without a flagfile. Sized for a 2-core CPU: see that file for the reasons.
DEFAULT = ExperimentConfig(
    data=DataConfig(dataset="fashion_mnist"),
    models=ModelsConfig(
        teacher="mnist_teacher", student="mnist_fitnet", init="paper",
        teacher_dropout=0.2, teacher_input_dropout=0.0,
    ),  # fmt: skip
    schedule=ScheduleConfig(
        modes=("fitnet", "kd", "scratch"), teacher_epochs=3, hints_epochs=2, kd_epochs=5,
        teacher_learning_rate=1e-3, learning_rate=1e-3,
    ),  # fmt: skip
)
