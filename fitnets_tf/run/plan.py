"""Which stages one call of a run trains, and what each continues from.

``--stages`` selects the paper's stages (``teacher``, ``stage1``, ``stage2``) of every mode; a
mode's later stage starts from the student its earlier stage left in the run directory. Both
are known from the config and the run state alone, before any data is read: a stage that
cannot start is refused within seconds (:func:`check_earlier_stages`), not once the modes
before it have trained.
"""

from __future__ import annotations

import dataclasses

from fitnets_tf.errors import ConfigError
from fitnets_tf.pretrained import is_pretrained
from fitnets_tf.run.layout import RunLayout
from fitnets_tf.stages import PAPER_STAGE, STAGES_OF_MODE


@dataclasses.dataclass
class Plan:
    """What one call runs: the stage keys (``teacher``, ``<mode>/<stage>``) and their order."""

    train_teacher: bool
    mode_stages: dict[str, list[str]]  # per mode, the mode's stages selected by --stages

    @property
    def keys(self) -> list[str]:
        return (["teacher"] if self.train_teacher else []) + [
            f"{mode}/{stage}" for mode, names in self.mode_stages.items() for stage in names
        ]

    def todo(self, mode: str, state) -> list[str]:
        """The stages of ``mode`` this call trains: selected, and not done in ``state`` (a
        :class:`~fitnets_tf.run.resume.RunState`)."""
        return [s for s in self.mode_stages[mode] if not state.done(f"{mode}/{s}")]

    def starts_from(self, mode: str, state) -> str | None:
        """The stage of ``mode`` whose student this call continues from: the one before its
        first stage to train, or its last when none is left (None: the initial weights)."""
        every = STAGES_OF_MODE[mode]
        todo = self.todo(mode, state)
        first = every.index(todo[0]) if todo else len(every)
        return every[first - 1] if first > 0 else None

    def done(self, state) -> list[str]:
        """Every stage ``state`` records as done, by this call or an earlier one (whatever
        ``--stages`` selects now), in training order."""
        order = ["teacher"] + [f"{m}/{s}" for m in self.mode_stages for s in STAGES_OF_MODE[m]]
        others = sorted(k for k in state.data["stages"] if k not in order)
        return [k for k in order + others if state.done(k)]


def plan(config) -> Plan:
    """The stages of each mode of ``config`` (an :class:`~fitnets_tf.config.ExperimentConfig`)
    that ``--stages`` selects (by the paper's stage 1 / stage 2)."""
    selected = config.runtime.run_stages()
    mode_stages = {
        mode: [s for s in STAGES_OF_MODE[mode] if PAPER_STAGE[s] in selected]
        for mode in config.schedule.modes
    }
    # A shipped teacher (pretrained:NAME) is loaded unless the teacher stage is asked for.
    retrain = is_pretrained(config.models.teacher_path)  # then its recorded recipe trains it
    train_teacher = "teacher" in selected and (config.models.trained_teacher() is None or retrain)
    return Plan(train_teacher, mode_stages)


def check_earlier_stages(plan: Plan, state, files: RunLayout) -> None:
    """Refuses a call whose modes continue from students not in the run directory, naming each.

    Raises:
        ConfigError: a mode's stage continues from an earlier stage that is neither selected
            nor done (``--stages=stage2`` in a new ``--workdir``).
    """
    missing = []
    for mode, selected in plan.mode_stages.items():
        earlier = plan.starts_from(mode, state) if selected else None
        if earlier and not files.stage_student(mode, earlier).is_file():
            missing.append((mode, earlier, str(files.stage_student(mode, earlier))))
    if not missing:
        return
    found = "; ".join(f"stage '{stage}' of mode '{mode}' is not run now, but {path!r} does not "
                      "exist" for mode, stage, path in missing)  # fmt: skip
    them = "those stages" if len(missing) > 1 else "that stage"
    raise ConfigError(
        f"{found[0].upper()}{found[1:]}: run {them} first in this --workdir, or include "
        f"{'them' if len(missing) > 1 else 'it'} in --stages."
    )
