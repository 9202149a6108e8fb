r"""Searches λ0 and τ for a teacher/student pair: ``python -m fitnets_tf.tune --flagfile=X``.

Takes every flag of ``fitnets_tf.train`` (the experiment: data, teacher, student, epochs,
the values to start from; without a flagfile, over the same default experiment) plus the
tuner's own, defined here. Runs stage 1 once, then one stage-2 trial per hyperparameter set,
and writes ``results.csv``, ``results.png``, ``summary.json`` and ``best.flags``: the
resolved flags with the best values, a flagfile that ``python -m fitnets_tf.train`` runs as
is. Re-running the same command resumes the search.

Example::

    python -m fitnets_tf.tune --flagfile=configs/tune_smoke.flags --workdir=/tmp/tune

Distributed (keras-tuner's chief/worker mode): start the same command once with
``KERASTUNER_TUNER_ID=chief`` and once per worker with ``KERASTUNER_TUNER_ID=tuner0``,
``tuner1``..., all with ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` set to the
chief's address and the same ``--workdir`` (a shared filesystem).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys

from absl import app, flags

from fitnets_tf import options as options_lib
from fitnets_tf.cli import common
from fitnets_tf.cli import flags as flag_lib
from fitnets_tf.errors import SearchError
from fitnets_tf.models import sources
from fitnets_tf.run import preemption
from fitnets_tf.search.session import TuneOptions
from fitnets_tf.search.space import OPTIONAL, OPTIONAL_RANGES, SearchSpace, checked_bounds

common.quiet_tensorflow()
flag_lib.define_experiment_flags()
_DEFAULTS = TuneOptions()
for _spec in options_lib.specs(TuneOptions):
    flag_lib.define(_spec, _spec.default)
# The ranges: one min,max flag per hyperparameter, defaults from the SearchSpace.
_RANGES = {"kd_lambda": (_DEFAULTS.space.kd_lambda, "log scale"),
           "temperature": (_DEFAULTS.space.temperature, "log scale"),
           "lambda_end": (OPTIONAL_RANGES["lambda_end"], "linear"),
           "learning_rate": (OPTIONAL_RANGES["learning_rate"], "log scale")}  # fmt: skip
for _name, (_default, _sampling) in _RANGES.items():
    flags.DEFINE_list(f"{_name}_range", [str(v) for v in _default],
                      f"min,max of {_name} ({_sampling}).")  # fmt: skip
flags.DEFINE_list("search_space", [], "Also search these, besides kd_lambda and temperature: "
                  f"any of {', '.join(OPTIONAL)}.")  # fmt: skip

FLAGS = flags.FLAGS


def _bounds(name: str, f=FLAGS) -> tuple[float, float]:
    values = f[f"{name}_range"].value
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        raise SearchError(
            f"--{name}_range must be two numbers min,max. Received: {','.join(values)}"
        ) from None
    return checked_bounds(f"--{name}_range", (low, high), positive=name != "lambda_end",
                          received=",".join(values))  # fmt: skip


def options_from_flags(f=FLAGS) -> TuneOptions:
    """The tuner's flags as a :class:`~fitnets_tf.search.TuneOptions`."""
    ranges = {}
    for name, (default, _) in _RANGES.items():
        bounds = _bounds(name, f)
        if name in OPTIONAL and name not in f.search_space:
            # flags.txt spells every range, the defaults too: only another range is refused.
            if bounds != tuple(default):
                raise SearchError(
                    f"--{name}_range is given but {name} is not searched: add "
                    f"--search_space={name} (a list, with any other you search), or drop "
                    f"--{name}_range."
                )
            continue
        ranges[name] = bounds
    values = {spec.name: f[spec.flag].value for spec in options_lib.specs(TuneOptions)}
    space = SearchSpace.with_optional(f.search_space, **ranges)
    return TuneOptions(**values, space=space)


def resolved_flagfile(config, workdir, f=FLAGS) -> str:
    """The experiment's and the tuner's flags with their final values."""
    names = [spec.flag for spec in options_lib.specs(TuneOptions)]
    names += [f"{name}_range" for name in _RANGES] + ["search_space"]
    lines = [f[name].serialize() for name in names]
    return (
        flag_lib.resolved_flagfile(config, workdir) + "\n".join(sorted(filter(None, lines))) + "\n"
    )


def best_flagfile(config, best: dict, teacher_path: str, search_dir, workdir) -> str:
    """``config`` with the best trial's values: a flagfile ``fitnets_tf.train`` runs as is.

    The searched hyperparameters are options of the same names. ``--teacher_path`` is the
    teacher they were tuned for (so it is not trained again; a ``--teacher`` file is that
    teacher already) and ``--workdir`` is ``workdir``.
    """
    values = {name: best[name] for name in ("kd_lambda", "temperature", *OPTIONAL)
              if best.get(name) is not None}  # fmt: skip
    if not sources.is_keras_file(config.models.teacher):
        values["teacher_path"] = teacher_path
    tuned = config.with_values(**values)
    header = (
        f"# Best of the search in {search_dir}: trial {best['trial_id']}, validation "
        f"accuracy {best['val_accuracy']:.4f} after {best['best_epoch']} of {best['epochs']} "
        "epoch(s).\n"
    )
    if config.schedule.kd_epochs < best["best_epoch"]:  # a run shorter than the trial it copies
        header += (f"# Note: --kd_epochs={config.schedule.kd_epochs} in best.flags is fewer "
                   f"than the {best['best_epoch']} epoch(s) after which the trial scored this: "
                   "raise it to train at least as long.\n")  # fmt: skip
    header += "# Run: python -m fitnets_tf.train --flagfile=THIS_FILE\n"
    return header + flag_lib.resolved_flagfile(tuned, workdir)


@common.reports_user_errors("fitnets_tf.tune")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from fitnets_tf import search
    from fitnets_tf.run import io, layout, ownership

    config = flag_lib.validated_command_line(sys.argv)
    options = options_from_flags()
    writes_flags = search.distributed_role() != "worker"
    # Before the directory is made, the lock file and flags.txt, as the training CLI does.
    ownership.claim_search(FLAGS.workdir, config, flags=writes_flags)
    workdir = layout.prepare(FLAGS.workdir)
    files = layout.SearchLayout(workdir)
    try:
        with _sigterm_interrupts(), search.hold(workdir):
            # Before flags.txt is replaced: a refused search keeps the flags it was started with.
            search.check_search(workdir, search.describe(config, options), write=False)
            if writes_flags:
                flagfile = ownership.SEARCH_FLAGS_HEADER + resolved_flagfile(config, FLAGS.workdir)
                io.write_text(files.flags, flagfile)
            summary = search.tune(config, options, workdir, log=print)
    except preemption.Preempted as stopped:  # in stage 1, checkpointed; the lock is released
        _exit_stopped(str(stopped))
    except KeyboardInterrupt:  # in a trial: Ctrl-C, or SIGTERM (_sigterm_interrupts)
        # The search wrote the results so far (not a worker, nor before the trials began).
        if writes_flags and files.summary.is_file() and files.stage1_done.is_file():
            _write_best_flags(config, json.loads(files.summary.read_text()), files)
        _exit_stopped(f"Stopped by a signal during the search in {workdir}: finished trials "
                      "are kept (results so far in results.csv) and the interrupted one runs "
                      "again; run the same command again to resume.")  # fmt: skip
    if summary is None:
        print(f"fitnets_tf.tune: worker done ({workdir}).")
        return
    text = _write_best_flags(config, summary, files)
    print(search.table(summary["trials"]))
    print(_closing_line(summary))
    if text is not None:  # best.flags' note, where the user reads the result
        print(*(line[2:] for line in text.splitlines() if line.startswith("# Note:")), sep="\n")
    return 0 if summary["best"] is not None else 1  # a search without a result failed


def _write_best_flags(config, summary: dict, files) -> str | None:
    """Writes ``best.flags`` for the search's best trial, if any; its text."""
    from fitnets_tf.run import io

    if summary["best"] is None:
        return None
    text = best_flagfile(config, summary["best"], summary["teacher_path"], files.root,
                         files.best_run)  # fmt: skip
    io.write_text(files.best_flags, text)
    return text


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (``kill``, a job's time limit) raises KeyboardInterrupt, as Ctrl-C does.

    Python's default ends the process at once, without a word. Stage 1 has handlers of its
    own while it trains (:func:`fitnets_tf.run.preemption.watch`); every file of a trial is
    written whole (:mod:`fitnets_tf.run.io`), so a trial stopped anywhere runs again.
    """

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_stopped(message: str):
    print(f"fitnets_tf.tune: {message}", file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_STATUS)  # 75, as fitnets_tf.train: "try again later"


def _closing_line(summary: dict) -> str:
    best, defaults = summary["best"], summary["defaults"]
    if best is None:
        return "No trial completed: every trial failed (see results.csv)."
    compared = defaults is not None and defaults["val_accuracy"] is not None
    # Hyperband's trials differ in epochs: then each score is given with its own.
    epochs = compared and best["epochs"] != defaults["epochs"]
    line = (f"Best: kd_lambda={best['kd_lambda']:.4g}, temperature={best['temperature']:.4g}, "
            f"val_accuracy={best['val_accuracy']:.4f}")  # fmt: skip
    line += f" after {best['epochs']} epoch(s)" if epochs else ""
    if compared:
        line += (f"; defaults kd_lambda={defaults['kd_lambda']:.4g}, "
                 f"temperature={defaults['temperature']:.4g}: {defaults['val_accuracy']:.4f}")  # fmt: skip
        line += f" after {defaults['epochs']} epoch(s)" if epochs else ""
    return line + ". best.flags retrains with the best values."


def entry_point():
    """``python -m fitnets_tf.tune`` and the ``fitnets-tune`` console script."""
    common.run(main, ("fitnets_tf.cli.flags", "fitnets_tf.cli.tune"))
