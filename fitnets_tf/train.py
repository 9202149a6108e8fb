r"""Runs a FitNets experiment: ``python -m fitnets_tf.train --flagfile=configs/X.flags``.

Every flag of the project is defined here, turned into an
:class:`~fitnets_tf.experiment.ExperimentConfig`, and handed to
:func:`fitnets_tf.experiment.run`. With no flagfile it runs the default experiment (real
Fashion-MNIST, offline; see ``configs/fashion_mnist.flags``).

Example::

    python -m fitnets_tf.train --flagfile=configs/smoke.flags --workdir=/tmp/smoke
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from fitnets_tf import data, experiment, models, training  # noqa: E402
from fitnets_tf.distribute import STRATEGIES  # noqa: E402

_DEFAULTS = experiment.DEFAULT  # no flagfile: the default experiment
_HP = _DEFAULTS.hparams

# Data.
flags.DEFINE_enum("dataset", _DEFAULTS.dataset, tuple(data.DATASETS), "Dataset.")
flags.DEFINE_string("data_dir", None, "Prepared TFDS data directory (default: TFDS's).")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size.", lower_bound=1)
flags.DEFINE_bool("augment", _DEFAULTS.augment, "Pad-8 random crops (+ flips where valid).")
flags.DEFINE_integer("limit", None, "Use only the first N examples of each split (smoke runs).",
                     lower_bound=1)  # fmt: skip
flags.DEFINE_integer("validation_size", None, "Examples held out of train (default: paper's).",
                     lower_bound=0)  # fmt: skip
flags.DEFINE_bool("retrain_on_all", False, "Train on train+validation (the paper's last run).")
# Models.
flags.DEFINE_enum("teacher", _DEFAULTS.teacher, models.names(), "Teacher architecture.")
flags.DEFINE_enum("student", _DEFAULTS.student, models.names(), "Student architecture.")
flags.DEFINE_string("hint_layer", None, "Teacher layer giving the hint (default: paper's).")
flags.DEFINE_string("guided_layer", None, "Student layer being guided (default: paper's).")
flags.DEFINE_string("teacher_path", None, "Trained teacher: a .keras file or a run directory.")
flags.DEFINE_enum("init", _DEFAULTS.init, experiment.INITS,
                  "Kernel init: the paper's U(-0.005, 0.005), or He / Glorot uniform.")  # fmt: skip
flags.DEFINE_bool("max_norm", True, "Max-norm constraints of the paper's code.")
flags.DEFINE_float("teacher_dropout", _DEFAULTS.teacher_dropout, "Teacher's dropout after each layer (paper: 0.5).",
                   lower_bound=0, upper_bound=0.99)  # fmt: skip
flags.DEFINE_float("teacher_input_dropout", _DEFAULTS.teacher_input_dropout, "Teacher's input dropout (paper: 0.2).",
                   lower_bound=0, upper_bound=0.99)  # fmt: skip
# What to run.
flags.DEFINE_list("mode", list(_DEFAULTS.modes),
                  f"Student training modes, in order; the first gives the final student. "
                  f"Any of {', '.join(training.MODES)}.")  # fmt: skip
flags.DEFINE_list("stages", list(experiment.STAGES),
                  "Stages to run: teacher, hints, kd. Without 'teacher', --teacher_path or "
                  "the workdir's teacher is used.")  # fmt: skip
flags.DEFINE_integer("teacher_epochs", _DEFAULTS.teacher_epochs, "Teacher epochs.", lower_bound=0)
flags.DEFINE_integer("hints_epochs", _DEFAULTS.hints_epochs, "Stage-1 epochs.", lower_bound=0)
flags.DEFINE_integer("kd_epochs", _DEFAULTS.kd_epochs, "Stage-2 (and scratch) epochs.",
                     lower_bound=0)  # fmt: skip
flags.DEFINE_integer("early_stopping_patience", 0,
                     "Stop a stage after N epochs without validation improvement and keep the "
                     "best weights (paper: 100). 0: off.", lower_bound=0)  # fmt: skip
# Hyperparameters.
flags.DEFINE_float("learning_rate", _HP.learning_rate, "RMSProp learning rate.", lower_bound=0)
flags.DEFINE_float(
    "teacher_learning_rate",
    _DEFAULTS.teacher_learning_rate,
    "Teacher's learning rate (None: --learning_rate).",
)
flags.DEFINE_float("temperature", _HP.temperature, "τ of the soft targets (> 0).")
flags.DEFINE_float("kd_lambda", _HP.lambda_start, "λ at the start of stage 2 (>= 0).",
                   lower_bound=0)  # fmt: skip
flags.DEFINE_float("lambda_end", _HP.lambda_end, "λ at the end of its decay.", lower_bound=0)
flags.DEFINE_integer("lambda_hold", _HP.lambda_hold, "Epochs at --kd_lambda before decaying.",
                     lower_bound=0)  # fmt: skip
flags.DEFINE_integer("lambda_epochs", None, "Decay length in epochs (default: rest of stage 2).",
                     lower_bound=1)  # fmt: skip
flags.DEFINE_bool("tau_squared", _HP.tau_squared, "Multiply the soft term by τ² (not the paper).")
flags.DEFINE_enum("regressor", _HP.regressor, ["auto", "linear"],
                  "auto: the paper's (hint's non-linearity); linear: none.")  # fmt: skip
# Run.
flags.DEFINE_string("workdir", "runs/fashion_mnist", "Run directory: everything is written here.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of weights, shuffling and augmentation.")
flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16 compute (GPUs with tensor cores).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (slower on CPU).")
flags.DEFINE_bool("deterministic", False, "TF op determinism (bit-identical reruns on CPU).")
flags.DEFINE_bool("measure_latency", True, "Time CPU inference of every model for the summary.")
flags.DEFINE_enum("cache_teacher", "auto", ["auto", "yes", "no"],
                  "Run the frozen teacher once over train/validation and reuse its logits (and "
                  "hint) every epoch. auto: when not --augment; yes with --augment is refused.")  # fmt: skip

flags.register_validator("temperature", lambda t: t > 0, "--temperature must be > 0.")

FLAGS = flags.FLAGS


def config_from_flags(f=FLAGS) -> experiment.ExperimentConfig:
    """The flags as plain values: the only place flags are read."""
    hparams = training.Hyperparameters(
        learning_rate=f.learning_rate,
        temperature=f.temperature,
        lambda_start=f.kd_lambda,
        lambda_end=f.lambda_end,
        lambda_hold=f.lambda_hold,
        lambda_epochs=f.lambda_epochs,
        tau_squared=f.tau_squared,
        regressor=f.regressor,
    )
    return experiment.ExperimentConfig(
        dataset=f.dataset,
        data_dir=f.data_dir,
        batch_size=f.batch_size,
        augment=f.augment,
        limit=f.limit,
        validation_size=f.validation_size,
        retrain_on_all=f.retrain_on_all,
        teacher=f.teacher,
        student=f.student,
        hint_layer=f.hint_layer,
        guided_layer=f.guided_layer,
        teacher_path=f.teacher_path,
        init=f.init,
        max_norm=f.max_norm,
        teacher_dropout=f.teacher_dropout,
        teacher_input_dropout=f.teacher_input_dropout,
        modes=tuple(f.mode),
        stages=tuple(f.stages),
        teacher_epochs=f.teacher_epochs,
        hints_epochs=f.hints_epochs,
        kd_epochs=f.kd_epochs,
        teacher_learning_rate=f.teacher_learning_rate,
        hparams=hparams,
        early_stopping_patience=f.early_stopping_patience,
        seed=f.seed,
        strategy=f.strategy,
        mixed_precision=f.mixed_precision,
        jit_compile=f.jit_compile,
        deterministic=f.deterministic,
        measure_latency=f.measure_latency,
        cache_teacher={"auto": None, "yes": True, "no": False}[f.cache_teacher],
    )


def resolved_flagfile(f=FLAGS) -> str:
    """This module's flags with their final values, one per line: a re-runnable flagfile."""
    lines = [flag.serialize() for flag in f.get_flags_for_module(sys.modules[__name__])]
    lines += [flag.serialize() for flag in f.get_flags_for_module("fitnets_tf.train")]
    return "\n".join(sorted({line for line in lines if line})) + "\n"


# Errors that are the user's to fix: printed as one paragraph, no traceback.
USER_ERRORS = (
    experiment.ConfigError,
    experiment.TeacherLoadError,
    ValueError,
    FileNotFoundError,
    PermissionError,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the epoch lines
    try:
        config = config_from_flags()
        config.validate()
        workdir = experiment.rundir.prepare(FLAGS.workdir)
        experiment.rundir.write_text(workdir / "flags.txt", resolved_flagfile())
        experiment.run(config, workdir, log=print)
    except USER_ERRORS as e:
        # One paragraph for the user; the traceback is for library bugs, not for bad input.
        print(f"fitnets_tf.train: error: {e}", file=sys.stderr)
        sys.exit(1)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
