"""The configuration of an experiment: four sections (:mod:`~fitnets_tf.config.sections`),
each option declared once.

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
import os

from fitnets_tf import hint_flags, options
from fitnets_tf.config.sections import (
    CACHE_TEACHER,
    FLIPS,
    INITS,
    REGRESSORS,
    RUN_STAGES,
    STAGE_ALIASES,
    DataConfig,
    ModelsConfig,
    RuntimeConfig,
    ScheduleConfig,
)
from fitnets_tf.data.sources import resizes
from fitnets_tf.errors import ConfigError

__all__ = [
    "CACHE_TEACHER", "DEFAULT", "FINGERPRINTED", "FLIPS", "INITS", "REGRESSORS", "RUN_STAGES",
    "SECTIONS", "STAGE_ALIASES", "DataConfig", "ExperimentConfig", "ModelsConfig", "RuntimeConfig",
    "ScheduleConfig", "default_for", "upgrade_fingerprint",
]  # fmt: skip


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
            raise ConfigError("Invalid configuration: " + "; ".join(found) + "."
                              + self._relative_paths_note(found))  # fmt: skip

    def _relative_paths_note(self, found: list[str]) -> str:
        """Where the relative paths named missing in ``found`` were looked for: a flagfile's
        paths are read from the current folder, which a user running elsewhere does not expect."""
        dataset = self.data.dataset.split(":", 1)[1] if ":" in self.data.dataset else None
        paths = [p for p in (dataset, self.models.teacher, self.models.teacher_path,
                             self.models.student)
                 if isinstance(p, str) and not os.path.isabs(os.path.expanduser(p))
                 and any(f"{p!r} does not exist" in problem for problem in found)]  # fmt: skip
        if not paths:
            return ""
        paths = list(dict.fromkeys(paths))
        return (f" Relative paths are read from the current folder, {os.getcwd()} (not a "
                f"flagfile's): {', '.join(map(repr, paths))} {'is' if len(paths) == 1 else 'are'}"
                " not there; give absolute paths or run from their folder.")

    def _cross_field_problems(self) -> list[str]:
        schedule = self.schedule
        found = self.data.problems() + self.models.problems()
        found += schedule.problems(trains_teacher=self.models.trained_teacher() is None)
        found += self._foreign_teacher_problems()
        if not schedule.modes:
            found.append("no mode given")
        if self.models.regressor_max_norm and "fitnet" not in schedule.modes:
            found.append(f"--regressor_max_norm bounds the hint regressor, which only --mode=fitnet "
                         f"trains (--mode={','.join(schedule.modes)}): drop "
                         "--regressor_max_norm")  # fmt: skip
        if schedule.early_stopping_patience and not self._has_validation_split():
            # Keras' EarlyStopping would only warn that val_accuracy is missing, every epoch.
            found.append("--early_stopping_patience watches the validation split, which "
                         "--retrain_on_all or --validation_size=0 leaves out: drop one or the "
                         "other")  # fmt: skip
        if self.data.flip != "auto" and not self.data.augment:
            found.append(f"--flip={self.data.flip} decides --augment's flips, and --augment is "
                         "off: add --augment or drop --flip")  # fmt: skip
        uncropped = schedule.kd_targets == "uncropped"
        if self.runtime.cache_teacher == "yes" and self.data.augment and not uncropped:
            from fitnets_tf import teacher_cache

            found.append(teacher_cache.AUGMENTATION_MESSAGE)
        if uncropped and self.runtime.cache_teacher == "no":
            found.append("--kd_targets=uncropped is a cache of the teacher's logits: it "
                         "needs --cache_teacher=auto or yes")  # fmt: skip
        return found

    def _foreign_teacher_problems(self) -> list[str]:
        """An ONNX or SavedModel teacher (run as a function: its hints are named tensors of its
        graph) with modes that train from hints but no --hints; an ONNX one under XLA."""
        from fitnets_tf import stages
        from fitnets_tf.models import onnx_model, sources

        teacher, found = self.models.trained_teacher(), []
        kind = sources.foreign_kind(teacher)
        hinted = [m for m in self.schedule.modes if m in stages.HINT_MODES]
        onnx = bool(teacher) and onnx_model.is_onnx_file(teacher)
        if kind and hinted and not (self.models.hints or self.models.hint_layer):
            found.append(f"the teacher {teacher!r} is {kind}, whose hints are tensors of "
                         f"its graph, and --mode {','.join(hinted)} trains from hints: give "
                         "--hints=auto (the paper's middle layers), or name them, "
                         "--hints=TENSOR:GUIDED_LAYER (--list_layers --mode=kd lists its "
                         "tensors), or give --mode=kd (with scratch for the baseline: "
                         "--mode=kd,scratch)")  # fmt: skip
        if onnx and self.runtime.jit_compile:
            found.append(f"the teacher {teacher!r} runs in ONNX Runtime, called from the "
                         "train step on the host, which XLA cannot compile: drop --jit_compile")
        return found

    def _has_validation_split(self) -> bool:
        """False when none is held out and the data gives none: the user's own validation
        split (a folder's validation/, an npz file's x_val) survives --validation_size=0."""
        data = self.data
        if data.retrain_on_all:
            return False
        if data.validation_size != 0:
            return True
        from fitnets_tf.data.sources import FOLDER, NPZ, gives_validation

        # Unknown (a missing file) counts as given: reading the data refuses it, by name.
        own = data.dataset.startswith((FOLDER, NPZ))
        return own and gives_validation(data.dataset) is not False

    def pair(self) -> tuple[str | None, str | None]:
        """The hint and guided layer names: given, else the paper's for these architectures."""
        from fitnets_tf import models

        hint = self.models.hint_layer or _paper_layer(models.hint_layer_name, self.models.teacher)
        guided = self.models.guided_layer or _paper_layer(
            models.guided_layer_name, self.models.student
        )
        return hint, guided

    def hint_pairs(self) -> list[tuple[str, str]] | str:
        """The hint/guided pairs: ``--hints`` (or ``"auto"``), else :meth:`pair` ([]: none)."""
        if self.models.hints:
            return hint_flags.parse_hints(self.models.hints)
        from fitnets_tf.models.sources import foreign_kind

        if foreign_kind(self.models.trained_teacher()) and not self.models.hint_layer:
            return []  # the paper's pairs are layers of its nets, not tensors of a graph
        hint, guided = self.pair()
        return [(hint, guided)] if hint is not None and guided is not None else []

    def hyperparameters(self, teacher: bool = False):
        """The :class:`~fitnets_tf.stages.Hyperparameters` of the students' stages, or with
        ``teacher`` the teacher's (its learning rate and schedule in place of stage 2's)."""
        from fitnets_tf import stages

        s = self.schedule
        hparams = stages.Hyperparameters(
            learning_rate=s.learning_rate, rho=s.rho, temperature=s.temperature,
            lambda_start=s.kd_lambda, lambda_end=s.lambda_end, lambda_hold=s.lambda_hold,
            lambda_epochs=s.lambda_epochs, tau_squared=s.tau_squared,
            regressor=self.models.regressor, regressor_max_norm=self.models.regressor_bound(),
            optimizer_name=s.optimizer, momentum=s.momentum,
            nesterov=s.nesterov, weight_decay=s.weight_decay, lr_schedule=s.lr_schedule,
            lr_decay=s.lr_decay, warmup_epochs=s.warmup_epochs,
            hints_learning_rate=s.hints_learning_rate, hints_lr_schedule=s.hints_lr_schedule,
            hints_optimizer=s.hints_optimizer, label_smoothing=s.label_smoothing,
            ema_momentum=s.ema_momentum, global_clipnorm=s.global_clipnorm,
            epsilon=s.epsilon, conv_lr_scale=s.conv_lr_scale,
        )  # fmt: skip
        if not teacher:
            return hparams
        # No label smoothing for the teacher: smoothed targets erase from its logits the
        # similarities between classes that its soft targets teach (Müller et al. 2019).
        own = hparams.with_rate(s.teacher_learning_rate, s.teacher_lr_schedule)
        return dataclasses.replace(own, label_smoothing=0.0)


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
    upgraded = {key: stored.get(key, default) for key, default in current.items()}
    if not resizes(str(upgraded["dataset"]), upgraded["image_size"]):
        # Such a run (before 2026-12-06 01:18) read its images at their size: a resize mode,
        # now refused there, changed nothing, and the run resumes without it.
        upgraded["resize_mode"] = current["resize_mode"]
    return upgraded


# What a flagfile starts from: every flag's default. A flagfile states what it changes from
# here (the paper's MNIST pair on Fashion-MNIST, the paper's recipe), so these stay fixed: a
# change would silently change every config in configs/.
FLAG_DEFAULTS = ExperimentConfig(
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

# The default experiment (configs/fashion_mnist.flags, which a test keeps equal to this): what
# `python -m fitnets_tf.train` runs without a flagfile, flags given on the command line applied
# over it. Sized for a 2-core CPU: see that file for the reasons.
_base = FLAG_DEFAULTS
DEFAULT = ExperimentConfig(
    data=dataclasses.replace(_base.data, augment=True, crop_padding=2),
    models=dataclasses.replace(
        _base.models, teacher="wide_cnn", teacher_path="pretrained:fashion_mnist_wide_cnn",
        student="thin_cnn", hints=("conv3_relu:conv2_relu",),
    ),  # fmt: skip
    schedule=dataclasses.replace(
        _base.schedule, hints_epochs=1, kd_epochs=18, optimizer="sgd", momentum=0.9,
        nesterov=True, learning_rate=0.1, lr_schedule="cosine", warmup_epochs=1,
        weight_decay=1e-2, hints_optimizer="adam", hints_learning_rate=1e-3, temperature=4.0,
        kd_lambda=1.0, lambda_end=1.0, tau_squared=True, kd_targets="uncropped",
        mixed_precision=True,
    ),  # fmt: skip
    # The teacher is shipped trained: the run loads it. --stages=teacher,stage1,stage2 retrains
    # it first, by the recipe recorded with it (fitnets_tf.pretrained.recipe_config).
    runtime=dataclasses.replace(_base.runtime, stages=("stage1", "stage2"),
                                serving_runtimes=("litert", "onnxruntime")),  # fmt: skip
)

# Options of the default experiment that belong to its models: its shipped teacher (and so the
# stages that skip training one) goes with its teacher, its hint pair with both models' layer
# names. A command line that names other models drops them (FLAG_DEFAULTS' values instead), so
# that `--teacher=mine.keras --student=mine.keras` is a run of those, not a half-default one.
_BELONGS_TO_MODELS = {
    "teacher_path": ("teacher",),
    "stages": ("teacher",),
    "hints": ("teacher", "teacher_path", "student", "hint_layer", "guided_layer"),
}


def default_for(given: set[str] | frozenset[str]) -> ExperimentConfig:
    """What options ``given`` on a command line without a flagfile apply over.

    :data:`DEFAULT`, less what belongs to the models ``given`` replaces.
    """
    dropped = {
        name: FLAG_DEFAULTS.values()[name]
        for name, owners in _BELONGS_TO_MODELS.items()
        if name not in given and given.intersection(owners)
    }
    return DEFAULT.with_values(**dropped)
