r"""Searches λ0 and τ for a teacher/student pair: ``python -m fitnets_tf.tune --flagfile=X``.

Takes every flag of :mod:`fitnets_tf.train` (the experiment: data, teacher, student, epochs,
the values to start from) plus the tuner's own, defined here. Runs stage 1 once, then one
stage-2 trial per hyperparameter set, and writes ``results.csv``, ``results.png``,
``summary.json`` and ``best.flags``: the resolved flags with the best values, a flagfile that
``python -m fitnets_tf.train`` runs as is. Re-running the same command resumes the search.

Example::

    python -m fitnets_tf.tune --flagfile=configs/tune_smoke.flags --workdir=/tmp/tune

Distributed (keras-tuner's chief/worker mode): start the same command once with
``KERASTUNER_TUNER_ID=chief`` and once per worker with ``KERASTUNER_TUNER_ID=tuner0``,
``tuner1``..., all with ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` set to the
chief's address and the same ``--workdir`` (a shared filesystem).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from fitnets_tf import train, tuner  # train defines the experiment's flags

_SPACE = tuner.SearchSpace()
_OPTIONS = tuner.TuneOptions()

flags.DEFINE_enum("oracle", _OPTIONS.oracle, tuner.ORACLES,
                  "random, bayesian (Gaussian process) or hyperband.")  # fmt: skip
flags.DEFINE_integer("max_trials", _OPTIONS.max_trials,
                     "Trials in all; raise it on a re-run to add trials.", lower_bound=1)  # fmt: skip
flags.DEFINE_integer("trial_epochs", _OPTIONS.trial_epochs,
                     "Stage-2 epochs per trial (hyperband: at most).", lower_bound=1)  # fmt: skip
flags.DEFINE_list("search_space", [],
                  f"Also search these, besides kd_lambda and temperature: any of "
                  f"{', '.join(tuner.OPTIONAL)}.")  # fmt: skip
flags.DEFINE_list("kd_lambda_range", [str(v) for v in _SPACE.kd_lambda],
                  "min,max of λ0 (log scale).")  # fmt: skip
flags.DEFINE_list("temperature_range", [str(v) for v in _SPACE.temperature],
                  "min,max of τ (log scale).")  # fmt: skip
flags.DEFINE_list("lambda_end_range", [str(v) for v in tuner.OPTIONAL_RANGES["lambda_end"]],
                  "min,max of λ's end value (linear).")  # fmt: skip
flags.DEFINE_list("learning_rate_range", [str(v) for v in tuner.OPTIONAL_RANGES["learning_rate"]],
                  "min,max of the learning rate (log).")  # fmt: skip
flags.DEFINE_bool("retrain_hints_per_trial", False,
                  "Run stage 1 in every trial (with its learning rate) instead of once.")  # fmt: skip

FLAGS = flags.FLAGS


def _range(name: str, f=FLAGS) -> tuple[float, float]:
    values = getattr(f, name)
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        raise ValueError(
            f"--{name} must be two numbers min,max. Received: {','.join(values)}"
        ) from None
    return low, high


def options_from_flags(f=FLAGS) -> tuner.TuneOptions:
    """The tuner's flags as plain values."""
    ranges = {name: _range(f"{name}_range", f)
              for name in ("kd_lambda", "temperature", "lambda_end", "learning_rate")}  # fmt: skip
    return tuner.TuneOptions(
        oracle=f.oracle,
        max_trials=f.max_trials,
        trial_epochs=f.trial_epochs,
        space=tuner.SearchSpace.with_optional(f.search_space, **ranges),
        retrain_hints_per_trial=f.retrain_hints_per_trial,
    )


def resolved_flagfile(f=FLAGS) -> str:
    """The experiment's and the tuner's flags with their final values."""
    modules = (sys.modules[__name__], "fitnets_tf.tune")  # __main__ under `python -m`
    lines = {flag.serialize() for m in modules for flag in f.get_flags_for_module(m)}
    return train.resolved_flagfile(f) + "\n".join(sorted(line for line in lines if line)) + "\n"


def best_flagfile(best: dict, teacher_path: str, workdir: str, f=FLAGS) -> str:
    """The experiment's resolved flags with the best trial's values: a train flagfile.

    The searched hyperparameters are train flags of the same names. ``--teacher_path`` is the
    teacher they were tuned for (so it is not trained again) and ``--workdir`` is ``workdir``.
    """
    values = {name: best[name] for name in ("kd_lambda", "temperature", *tuner.OPTIONAL)
              if best.get(name) is not None}  # fmt: skip
    values["teacher_path"] = teacher_path  # the teacher the values were tuned for
    values["workdir"] = workdir
    replaced = {f"--{n}" for n in values} | {f"--no{n}" for n in values}
    lines = [line for line in train.resolved_flagfile(f).splitlines()
             if line.split("=")[0] not in replaced]  # fmt: skip
    for name, value in values.items():
        if isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{name}")
        else:
            lines.append(f"--{name}={value!r}" if isinstance(value, float) else f"--{name}={value}")
    header = (
        f"# Best of the search in {FLAGS.workdir}: trial {best['trial_id']}, validation "
        f"accuracy {best['val_accuracy']:.4f} after {best['best_epoch']} of {best['epochs']} "
        "epoch(s).\n# Run: python -m fitnets_tf.train --flagfile=THIS_FILE\n"
    )
    return header + "\n".join(sorted(lines)) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    try:
        config = train.config_from_flags()
        config.validate()
        options = options_from_flags()
        workdir = tuner.rundir.prepare(FLAGS.workdir)
        # Before flags.txt is replaced: a refused search keeps the flags it was started with.
        tuner.check_search(workdir, tuner.describe(config, options), write=False)
        if tuner.distributed_role() != "worker":
            tuner.rundir.write_text(workdir / "flags.txt", resolved_flagfile())
        summary = tuner.tune(config, options, workdir, log=print)
        if summary is None:
            print(f"fitnets_tf.tune: worker done ({workdir}).")
            return
        if summary["best"] is not None:
            text = best_flagfile(
                summary["best"], summary["teacher_path"], str(workdir / "best_run")
            )
            tuner.rundir.write_text(workdir / "best.flags", text)
        print(tuner.table(summary["trials"]))
        print(_closing_line(summary))
    except train.USER_ERRORS as e:
        # One paragraph for the user; the traceback is for library bugs, not for bad input.
        print(f"fitnets_tf.tune: error: {e}", file=sys.stderr)
        sys.exit(1)


def _closing_line(summary: dict) -> str:
    best, defaults = summary["best"], summary["defaults"]
    if best is None:
        return "No trial completed: every trial failed (see results.csv)."
    line = (f"Best: kd_lambda={best['kd_lambda']:.4g}, temperature={best['temperature']:.4g}, "
            f"val_accuracy={best['val_accuracy']:.4f}")  # fmt: skip
    if defaults is not None and defaults["val_accuracy"] is not None:
        line += (f"; defaults kd_lambda={defaults['kd_lambda']:.4g}, "
                 f"temperature={defaults['temperature']:.4g}: {defaults['val_accuracy']:.4f}")  # fmt: skip
    return line + ". best.flags retrains with the best values."


def run():
    app.run(main)


if __name__ == "__main__":
    run()
