"""A whole search: stage 1 once, then the trials (resumable, chief/worker), then the results.

Run directory (:class:`~fitnets_tf.run.layout.SearchLayout`)::

    search.json       what the search is; a re-run must match it, or it stops
    stage1/           an ``experiment.run`` directory: teacher/teacher.keras and the
                      hint-trained student fitnet/hints/student.keras
    stage1.json       written when stage 1 is done: the teacher and student the trials use,
                      and how a user's held-out examples are drawn (stage 1's data.json)
    trials/           keras-tuner's project: oracle.json and trial_<id>/ with trial.json,
                      checkpoint.weights.h5 (the student's best epoch), log.csv, runs.jsonl
    results.csv       one row per trial: status, hyperparameters, validation accuracy
    results.png       validation accuracy over λ0 × τ
    summary.json      the best trial and the first (default) trial
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import time

from fitnets_tf import builders, distribute, evaluation, experiment, notes, recipes
from fitnets_tf import options as options_lib
from fitnets_tf.config import ExperimentConfig, upgrade_fingerprint
from fitnets_tf.errors import SearchError
from fitnets_tf.models import sources
from fitnets_tf.options import option
from fitnets_tf.preprocessing import check_own_rescaling
from fitnets_tf.run import data_record, io, layout, lock, ownership, runtime
from fitnets_tf.search.hypermodel import FitNetsHyperModel
from fitnets_tf.search.results import warn_near_chance, write_results
from fitnets_tf.search.space import SearchSpace
from fitnets_tf.search.tuners import ORACLES, make_tuner, requeue_interrupted
from fitnets_tf.search.workers import watch

# A worker waits this long for the chief's stage 1 (keras-tuner waits an hour for its oracle).
STAGE_ONE_WAIT_S = 3600
# Fingerprinted options that do not change a trial's result: the modes after the first, and
# the length of a full run's stage 2 (a trial's is `trial_epochs`).
_FREE = ("modes", "kd_epochs")


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """How to search (everything else comes from the experiment's config)."""

    oracle: str = option("random", "random, bayesian (Gaussian process) or hyperband.",
                         choices=ORACLES)  # fmt: skip
    max_trials: int = option(8, "Trials in all; raise it on a re-run to add trials.", minimum=1)
    trial_epochs: int = option(
        3, "Stage-2 epochs per trial (hyperband: at most). λ decays from λ0 to its end value "
        "over these epochs, as over --kd_epochs in a full run.", minimum=1,
    )  # fmt: skip
    retrain_hints_per_trial: bool = option(
        False, "Run stage 1 in every trial (with its learning rate) instead of once."
    )
    trial_timeout_minutes: float = option(
        0.0, "Distributed search: the chief fails a trial still running after this long (0: "
        "never). A trial whose worker process is gone is re-queued (once) without waiting.",
        minimum=0,
    )  # fmt: skip
    space: SearchSpace = SearchSpace()  # the ranges: flags of their own (fitnets_tf.cli.tune)

    def validate(self) -> None:
        found = options_lib.problems(self)
        if found:
            raise SearchError("Invalid tuning options: " + "; ".join(found) + ".")


def describe(config: ExperimentConfig, options: TuneOptions) -> dict:
    """What defines a search's trials: stored as ``search.json``, compared on every re-run."""
    fields = {k: v for k, v in config.fingerprint().items() if k not in _FREE}
    return json.loads(json.dumps({
        "space": options.space.describe(config.hyperparameters(), as_flags=True),
        "oracle": options.oracle,
        "trial_epochs": options.trial_epochs,
        "retrain_hints_per_trial": options.retrain_hints_per_trial,
        "mode": config.schedule.modes[0],
        "config": fields,
    }))  # fmt: skip


def _comparable(description: dict) -> dict:
    """``description`` flattened to ``{"a.b": value}``, its config in today's names."""
    description = dict(description)
    if "config" in description:  # written by any version: upgraded, then the free ones dropped
        config = upgrade_fingerprint(description["config"])
        description["config"] = {k: v for k, v in config.items() if k not in _FREE}
    return _flatten(description)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_search(workdir: pathlib.Path, description: dict, write: bool = True) -> None:
    """Records the search's description, or checks it against the recorded one.

    Raises:
        SearchError: naming every difference, when ``workdir`` holds another search.
    """
    path = layout.SearchLayout(workdir).search
    if not path.is_file():
        if write:
            io.write_json(path, description)
        return
    old, new = _comparable(json.loads(path.read_text())), _comparable(description)
    diffs = [f"{k}: {old.get(k, '(absent)')} → {new.get(k, '(absent)')}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]  # fmt: skip
    if diffs:
        raise SearchError(
            f"{str(workdir)!r} holds a different search ({'; '.join(diffs)}). Resuming it would "
            "mix the results of two searches: use a new --workdir, or delete this one to start "
            "over, or go back to the flags it was started with (its flags.txt)."
        )


def hold(workdir: str | os.PathLike):
    """The search directory's lock for this process (see :mod:`fitnets_tf.run.lock`).

    A distributed search's processes share the directory by design: the chief (or a lone
    search) takes its lock, each worker the lock of its own tuner id. So a second search, or
    a second worker with the same id, is refused, and the chief and its workers are not.
    """
    if distributed_role() == "worker":
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "worker")
        return lock.hold(workdir, f"search worker {tuner_id!r} of", name=_worker_lock(tuner_id))
    return lock.hold(workdir, "search directory")


def _worker_lock(tuner_id: str) -> str:
    return f".lock-{tuner_id}"


def worker_alive(workdir: str | os.PathLike):
    """tuner id -> whether that worker's process runs (its lock is held); None: never seen."""
    return lambda tuner_id: lock.held(workdir, _worker_lock(tuner_id))


def distributed_role() -> str:
    """``"single"``, or keras-tuner's distributed role, by its rule (``KERASTUNER_*``)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _wait_for(path: pathlib.Path, what: str, log, timeout: float = STAGE_ONE_WAIT_S) -> None:
    if path.is_file():
        return
    log(f"Waiting for the chief's {what} ({path}).")
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise SearchError(f"No {path} after {timeout:.0f} s: is the chief running?")
        time.sleep(1.0)


def stage_one(config: ExperimentConfig, options: TuneOptions, workdir: pathlib.Path, log=print,
              description: dict | None = None) -> dict:  # fmt: skip
    """Trains the teacher (unless ``--teacher_path``) and stage 1, once per workdir.

    Runs :func:`fitnets_tf.experiment.run` on ``workdir/stage1`` with the first mode and the
    stages needed, then records ``description`` (see :func:`check_search`) and the teacher
    and student files and the held-out draw (``workdir/stage1.json``); a re-run, or a worker,
    reuses them. The description is recorded only now, so a search that failed before its
    first trial can be started again with other flags.
    """
    files = layout.SearchLayout(workdir)
    if distributed_role() == "worker":
        _wait_for(files.stage1_done, "stage 1", log)
    if files.stage1_done.is_file():
        return _recorded(files.stage1_done)
    _check_teacher(config)
    mode, teacher_path = config.schedule.modes[0], config.models.trained_teacher()
    hints = mode == "fitnet" and not options.retrain_hints_per_trial
    stages = (() if teacher_path else ("teacher",)) + (("stage1",) if hints else ())
    if stages:
        log(f"== stage 1, once for all trials: {', '.join(stages)} ({files.stage1.root})")
        # kd_epochs=0: stage 2 is the trials' (and it may change between calls).
        once = config.with_values(modes=(mode,), stages=stages, kd_epochs=0,
                                  measure_latency=False)  # fmt: skip
        experiment.run(once, files.stage1.root, log=log)
    record = {
        "teacher_path": str(builders.teacher_location(teacher_path or files.stage1.root)),
        "student_path": str(files.stage1.stage_student(mode, "hints")) if hints else None,
        # The trials validate on stage 1's held-out examples: its run's draw, else a new one.
        "holdout": builders.run_holdout(config, files.stage1.data),
    }
    if description is not None:
        check_search(workdir, description)
    io.write_json(files.stage1_done, record)
    return record


def _recorded(path: pathlib.Path) -> dict:
    """``stage1.json``, refused in the CLI's words if its teacher or stage-1 student is gone
    (the HyperModel would name its own arguments)."""
    record = json.loads(path.read_text())
    for what, key in (("teacher", "teacher_path"), ("stage-1 student", "student_path")):
        if record.get(key) is not None and not pathlib.Path(record[key]).exists():
            raise SearchError(f"The search's {what} {record[key]!r}, recorded in {str(path)!r}, "
                              "is gone: its trials were trained from it. Restore it, or start "
                              "the search over in a new --workdir.")  # fmt: skip
    return record


def _check_models(config: ExperimentConfig, record: dict, data, log) -> None:
    """The checks ``fitnets_tf.train`` makes of its models before distilling, on the trials'
    validation images ``data``, where no stage-1 run made them: a search by KD alone (or
    retraining hints per trial) on a given teacher. The teacher's accuracy, and its refusal
    for another pixel scaling or class order (:func:`fitnets_tf.evaluation.check_teacher`);
    the student's pixel scaling (:func:`fitnets_tf.preprocessing.check_own_rescaling`) and
    ``--maxout_ties`` (:func:`fitnets_tf.builders.new_student`). A stage-1 run, which trains
    the teacher or the hints, checked them already."""
    if record["student_path"] is not None or config.models.trained_teacher() is None:
        return
    mode = data.preprocessor.mode
    student = builders.new_student(config, data.input_shape, data.num_classes)
    if warning := check_own_rescaling(student, mode, "student", config.models.student):
        log(warning)
    teacher = builders.load_teacher(record["teacher_path"], input_shape=data.input_shape)
    for line in evaluation.check_teacher(teacher, data.validation, mode, data.num_classes,
                                         data.spec.class_names, input_mean=data.preprocessor.mean,
                                         input_std=data.preprocessor.std,
                                         temperature=config.schedule.temperature):  # fmt: skip
        log(line)


def _check_teacher(config: ExperimentConfig) -> None:
    if config.models.trained_teacher() is None and "teacher" not in config.runtime.run_stages():
        raise SearchError(
            "No teacher: give --teacher_path, or include 'teacher' in --stages to train one."
        )


def _check_searchable(config: ExperimentConfig, options: TuneOptions) -> None:
    config.validate()
    options.validate()
    mode = config.schedule.modes[0]
    if mode not in ("fitnet", "kd"):
        raise SearchError(f"Tuning λ and τ needs --mode=fitnet or kd first; got {mode!r}.")
    if config.data.retrain_on_all or config.data.validation_size == 0:
        raise SearchError("Tuning needs a validation split (never the test split): drop "
                          "--retrain_on_all and --validation_size=0.")  # fmt: skip
    # A trial's stage 2 has its own length: a warm-up as long would be the whole trial.
    warmup = recipes.warmup_problems(config.schedule.warmup_epochs,
                                     {"trial_epochs": options.trial_epochs})  # fmt: skip
    if warmup:
        raise SearchError(f"{warmup[0]}: lower --warmup_epochs or raise --trial_epochs.")
    _check_teacher(config)


def tune(config: ExperimentConfig, options: TuneOptions, workdir: str | os.PathLike,
         log=print) -> dict | None:  # fmt: skip
    """Stage 1 once, then the search; returns the summary written to ``workdir/summary.json``.

    Re-running on the same ``workdir`` resumes: finished trials are kept, an interrupted one
    runs again. With keras-tuner's ``KERASTUNER_*`` variables set, the chief serves the oracle
    (and runs stage 1 first) and workers run trials; only the chief writes the results, and a
    worker returns None. Keras' dtype policy is restored on return. A ``workdir`` that is not
    a search's but holds names it writes, or lies inside the ``--dataset`` folder, is refused
    before anything is written (:func:`~fitnets_tf.run.ownership.claim_search`).
    """
    _check_searchable(config, options)
    builders.import_custom_modules(config)  # in each worker process too
    ownership.claim_search(workdir, config)  # before the directory is made: read only
    workdir = layout.prepare(workdir)
    description = describe(config, options)
    check_search(workdir, description, write=False)  # a different search stops here
    s = config.schedule
    with hold(workdir), runtime.session(seed=s.seed, deterministic=config.runtime.deterministic,
                                        mixed_precision=s.mixed_precision), notes.once():  # fmt: skip
        # notes.once: a note on the teacher (its softmax left out) once per search, not per trial
        record = stage_one(config, options, workdir, log, description)
        check_search(workdir, description, write=False)  # a worker: the chief's search
        return _search(config, options, workdir, record, log)


def _trial_inputs(config, record: dict, role: str, strategy, log) -> tuple[dict, tuple]:
    """``fit``'s data for the trials (none for the chief, which only serves the oracle: it
    reads no data) and ``(input_shape, num_classes)``."""
    if role == "chief":
        return {}, _teacher_shape(record)
    # The draw stage 1 recorded; a search from before it was recorded drew at random.
    holdout = data_record.recorded_holdout(record)
    data = distribute.check_last_batches(experiment.load_data(config, holdout), strategy)
    _check_models(config, record, data, log)  # on the data read for the trials: once
    inputs = dict(x=data.train, validation_data=data.validation, data_epoch=data.epoch)
    return inputs, (data.input_shape, data.num_classes)


def _search(config, options: TuneOptions, workdir: pathlib.Path, record: dict, log):
    role = distributed_role()
    strategy = None
    if config.runtime.strategy != "default":
        strategy = distribute.make_strategy(config.runtime.strategy,
                                            cluster_timeout=config.runtime.cluster_timeout)
    inputs, shape = _trial_inputs(config, record, role, strategy, log)
    tuner = make_tuner(
        hypermodel(config, options, record, shape), oracle=options.oracle,
        max_trials=options.max_trials, trial_epochs=options.trial_epochs, directory=workdir,
        project_name=layout.SearchLayout.project_name, seed=config.schedule.seed,
        distribution_strategy=strategy, worker_alive=worker_alive(workdir),
        trial_timeout_s=options.trial_timeout_minutes * 60,
    )  # fmt: skip
    if role != "worker":
        requeue_interrupted(tuner.oracle)
    log(f"== search: {options.oracle}, {options.max_trials} trials of {options.trial_epochs} "
        f"epoch(s) over {', '.join(options.space.names())} ({role})")  # fmt: skip
    no_room = io.disk_full_as_user_error(
        f"The search cannot write in {workdir}: {{reason}}. Every file it wrote is whole (the "
        "interrupted trial runs again): free space and re-run the same command to resume."
    )
    # The chief alone knows every trial handed out: it gives up those no worker will end.
    watching = watch(tuner.oracle, log) if role == "chief" else contextlib.nullcontext()
    error = None
    try:
        with no_room, watching:
            tuner.search(epochs=options.trial_epochs, verbose=runtime.verbosity(), **inputs)
    except RuntimeError as e:  # the oracle stops after too many consecutive failed trials
        if "consecutive failures" not in str(e):
            raise
        error = e
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM, from the CLI): the results so far
        if role != "worker":  # else summary.json and best.flags would be the last run's
            write_results(tuner.oracle, options, workdir, record["teacher_path"])
        raise
    if role == "worker":
        return None
    with io.disk_full_as_user_error(f"The search's results cannot be written in {workdir}: "
                                    "{reason}. Free space and re-run the same command."):  # fmt: skip
        summary = write_results(tuner.oracle, options, workdir, record["teacher_path"])
    schedule = config.schedule
    hints = schedule.modes[0] == "fitnet"
    warn_near_chance(summary, shape[1], workdir, log,
                     (schedule.hints_optimizer or schedule.optimizer) if hints else None,
                     hints_per_trial=options.retrain_hints_per_trial)  # fmt: skip
    if error is not None:
        raise SearchError(
            f"The search stopped: {str(error).splitlines()[0]} (results so far are in "
            f"{workdir}). Narrow the ranges (a high λ0 or learning rate diverges) in a new "
            "--workdir: this one's search keeps its ranges, and the same command resumes it "
            "with new trials."
        )
    return summary


def _teacher_shape(record: dict) -> tuple[tuple, int]:
    """The images' shape and the number of classes, from the teacher's ends: what a chief,
    which reads no data, needs to know of it (a user's folder could take minutes to read)."""
    teacher = builders.load_teacher(record["teacher_path"])
    return tuple(teacher.inputs[0].shape[1:]), int(teacher.outputs[0].shape[-1])


def hypermodel(config: ExperimentConfig, options: TuneOptions, record: dict,
               shape: tuple[tuple, int] | None = None) -> FitNetsHyperModel:  # fmt: skip
    """The trials' HyperModel: ``record``'s teacher and stage-1 student, ``config``'s rest;
    ``shape``: the images' shape and the class count, when the data was read already."""
    m, s = config.models, config.schedule
    input_shape, num_classes = shape or experiment.dataset_shape(config)
    build = dict(input_shape=input_shape, num_classes=num_classes,
                 kernel_initializer=m.kernel_initializer(), max_norm=m.max_norm,
                 maxout_ties=m.maxout_ties)  # fmt: skip
    retrain = s.modes[0] == "fitnet" and options.retrain_hints_per_trial
    return FitNetsHyperModel(
        record["teacher_path"],
        lambda: sources.resolve(m.student, seed=s.seed + 1, role="student", **build),
        record["student_path"], hparams=config.hyperparameters(), space=options.space,
        hints=config.hint_pairs(), hint_weights=m.hint_weights,
        hints_epochs=s.hints_epochs if retrain else 0, seed=s.seed,
        dtype_policy=runtime.dtype_policy(s.mixed_precision),
        compile_kwargs={"jit_compile": config.runtime.jit_compile},
    )  # fmt: skip
