"""One FitNets experiment, end to end: data, teacher, students of every mode, run directory.

``run(config, workdir)`` is what ``python -m fitnets_tf.train`` calls once flags have become an
:class:`ExperimentConfig`; notebooks and scripts can call it directly. Everything cheap to
check (names, layers, shapes, the run directory) is checked before the first epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import keras
import tensorflow as tf

from fitnets_tf import data as data_lib
from fitnets_tf import (
    distribute,
    export,
    latency,
    models,
    report,
    resume,
    rundir,
    teacher_cache,
    training,
)
from fitnets_tf.callbacks import LearningRateLogger
from fitnets_tf.distiller import make_hint_path

STAGES = ("teacher", "hints", "kd")
INITS = ("paper", "he_uniform", "glorot_uniform")


class ConfigError(ValueError):
    """The experiment's configuration is invalid."""


class TeacherLoadError(ValueError):
    """A trained teacher could not be loaded."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything an experiment depends on, as plain values (see ``fitnets_tf.train`` flags)."""

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    batch_size: int = 128
    augment: bool = False
    limit: int | None = None
    validation_size: int | None = None
    retrain_on_all: bool = False
    teacher: str = "mnist_teacher"
    student: str = "mnist_fitnet"
    hint_layer: str | None = None
    guided_layer: str | None = None
    teacher_path: str | None = None
    init: str = "paper"
    max_norm: bool = True
    teacher_dropout: float | None = None
    teacher_input_dropout: float | None = None
    modes: tuple[str, ...] = ("fitnet",)
    stages: tuple[str, ...] = STAGES
    teacher_epochs: int = 10
    hints_epochs: int = 5
    kd_epochs: int = 10
    teacher_learning_rate: float | None = None
    hparams: training.Hyperparameters = training.Hyperparameters()
    early_stopping_patience: int = 0
    seed: int = 0
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False
    deterministic: bool = False
    measure_latency: bool = True
    # Precompute the frozen teacher's outputs once (fitnets_tf.teacher_cache); None: whenever
    # the training data is not augmented.
    cache_teacher: bool | None = None

    def validate(self) -> None:
        """Cheap checks, before any data is read or model built."""
        problems = []
        if self.dataset not in tuple(data_lib.DATASETS):
            problems.append(
                f"unknown dataset {self.dataset!r} (valid: {', '.join(tuple(data_lib.DATASETS))})"
            )
        for role in ("teacher", "student"):
            name = getattr(self, role)
            if name not in models.names():
                problems.append(f"unknown {role} {name!r} (valid: {', '.join(models.names())})")
        for mode in self.modes:
            if mode not in training.MODES:
                problems.append(f"unknown mode {mode!r} (valid: {', '.join(training.MODES)})")
        if not self.modes:
            problems.append("no mode given")
        for stage in self.stages:
            if stage not in STAGES:
                problems.append(f"unknown stage {stage!r} (valid: {', '.join(STAGES)})")
        if self.init not in INITS:
            problems.append(f"unknown init {self.init!r} (valid: {', '.join(INITS)})")
        hp = self.hparams
        if hp.temperature <= 0:
            problems.append(f"temperature must be > 0, got {hp.temperature}")
        if hp.lambda_start < 0 or hp.lambda_end < 0:
            problems.append(f"λ must be >= 0, got {hp.lambda_start} → {hp.lambda_end}")
        if hp.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0, got {hp.learning_rate}")
        for name in ("batch_size", "teacher_epochs", "hints_epochs", "kd_epochs"):
            if getattr(self, name) < (1 if name == "batch_size" else 0):
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.cache_teacher is True and self.augment:
            problems.append(teacher_cache.AUGMENTATION_MESSAGE)
        if problems:
            raise ConfigError("Invalid configuration: " + "; ".join(problems) + ".")

    def fingerprint(self) -> dict:
        """What the results depend on: a run directory only resumes the same fingerprint.

        Which stages run now, whether latency is measured and whether the teacher's outputs
        are cached (the same batches, the same targets) may change between calls.
        """
        values = dataclasses.asdict(self)
        for key in ("stages", "measure_latency", "cache_teacher"):
            values.pop(key)
        return json.loads(json.dumps(values))  # tuples as lists, as when read back

    def pair(self) -> tuple[str | None, str | None]:
        """The hint and guided layer names: given, else the paper's for these architectures."""
        hint = self.hint_layer
        guided = self.guided_layer
        if hint is None:
            hint = _paper_layer(models.hint_layer_name, self.teacher)
        if guided is None:
            guided = _paper_layer(models.guided_layer_name, self.student)
        return hint, guided


# The default experiment (configs/fashion_mnist.flags): what `python -m fitnets_tf.train` runs
# without a flagfile. Sized for a 2-core CPU: see that file for the reasons.
DEFAULT = ExperimentConfig(
    dataset="fashion_mnist",
    teacher="mnist_teacher",
    student="mnist_fitnet",
    init="paper",
    teacher_dropout=0.2,
    teacher_input_dropout=0.0,
    modes=("fitnet", "kd", "scratch"),
    teacher_epochs=3,
    hints_epochs=2,
    kd_epochs=5,
    teacher_learning_rate=1e-3,
    hparams=training.Hyperparameters(learning_rate=1e-3),
)


def _paper_layer(lookup, name):
    try:
        return lookup(name)
    except ValueError:
        return None


def _kernel_initializer(init: str):
    return None if init == "paper" else init


def load_teacher(path: str | os.PathLike) -> keras.Model:
    """Loads a trained teacher from a ``.keras`` file or a previous run directory."""
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        path = path / "teacher" / "teacher.keras"
    if not path.is_file():
        raise TeacherLoadError(
            f"No teacher at {str(path)!r}. Pass --teacher_path=FILE.keras or a run directory "
            "whose teacher stage finished, or add 'teacher' to --stages to train one."
        )
    try:
        # safe_mode: a .keras file must not be able to run code (no Lambda layers, no pickle).
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # noqa: BLE001  (Keras raises many types for a bad file)
        raise TeacherLoadError(
            f"Cannot load the teacher {str(path)!r}: {type(e).__name__}: {e}. Is it a .keras file "
            "saved by Keras 3 (model.save)? Retrain it with --stages=teacher,..."
        ) from e


def _load_student_into(student: keras.Model, path: pathlib.Path, why: str) -> None:
    if not path.is_file():
        raise ConfigError(
            f"{why}, but {str(path)!r} does not exist: run that stage first in this --workdir, "
            "or include it in --stages."
        )
    trained = keras.saving.load_model(path, safe_mode=True, compile=False)
    student.set_weights(trained.get_weights())


def _stage_callbacks(state, key: str, stage_dir: pathlib.Path, patience: int, log,
                     final_model=None, final_path=None) -> list:  # fmt: skip
    """Per stage: NaN guard, early stopping, checkpoint + logs + final save, TensorBoard."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    early_stopping = None
    callbacks = [resume.NonFiniteGuard(key), LearningRateLogger()]
    if patience:
        # The paper stops after `patience` epochs without validation improvement and keeps
        # the best model. Stages with labels are judged by accuracy: their val_loss is not
        # comparable across epochs in stage 2, where λ (its weight on the KD term) is annealed.
        hints = key.endswith("/hints")
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss" if hints else "val_accuracy", mode="min" if hints else "max",
            patience=patience, restore_best_weights=True,
        )  # fmt: skip
        callbacks.append(early_stopping)
    callbacks += [
        # After early stopping (it saves its state, and the best weights it restores), before
        # the loggers (an epoch is logged once its checkpoint exists).
        resume.StageCheckpoint(state, key, stage_dir, student=final_model,
                               early_stopping=early_stopping, log=log, final_path=final_path),
        keras.callbacks.TensorBoard(str(stage_dir / "tensorboard"), write_graph=False),
    ]  # fmt: skip
    return callbacks


def _test_accuracy(model: keras.Model, test) -> float:
    correct = total = 0
    predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1), autograph=False)
    for x, y in test:
        pred = predict(x)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(tf.cast(pred, y.dtype), y), tf.int32)))
        total += int(tf.shape(y)[0])
    return correct / max(total, 1)


def _describe(name: str, model: keras.Model, test, stage_seconds, measure: bool) -> dict:
    row = {
        "name": name,
        "architecture": model.name,
        "test_accuracy": _test_accuracy(model, test),
        "params": models.count_params(model),
        "mults": models.count_multiplications(model),
        "train_seconds": round(sum(stage_seconds.values()), 2) if stage_seconds else None,
        "stage_seconds": stage_seconds,
    }
    if measure:
        timings = latency.measure_latency(model, batch_sizes=(1, 128), repeats=10)
        row["latency_ms_per_image_batch1"] = timings[1]["ms_per_image"]
        row["latency_ms_per_image_batch128"] = timings[128]["ms_per_image"]
    return row


def _verbose() -> int:
    # Progress bars on a terminal; one line per epoch in logs and CI.
    import sys

    return 1 if sys.stdout.isatty() else 2


def run(config: ExperimentConfig, workdir: str | os.PathLike, log=print) -> dict:
    """Runs the experiment and returns the summary written to ``workdir/summary.json``."""
    config.validate()
    workdir = rundir.prepare(workdir)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    strategy = distribute.make_strategy(config.strategy)
    state = resume.RunState(workdir, config.fingerprint())  # refuses another configuration
    rundir.write_json(workdir / "versions.json", rundir.versions(config.seed))

    data = data_lib.load(
        config.dataset,
        data_dir=config.data_dir,
        batch_size=config.batch_size,
        seed=config.seed,
        augment=config.augment,
        limit=config.limit,
        validation_size=config.validation_size,
        retrain_on_all=config.retrain_on_all,
    )
    hint_layer, guided_layer = config.pair()
    needs_pair = any(m in ("fitnet", "stagewise_labels") for m in config.modes)
    if needs_pair and (hint_layer is None or guided_layer is None):
        raise ConfigError(
            f"Modes {config.modes} need --hint_layer and --guided_layer: {config.teacher!r} / "
            f"{config.student!r} have no paper pair."
        )
    train_teacher = "teacher" in config.stages and config.teacher_path is None
    mode_stages = {
        mode: [s for s in training.STAGES_OF_MODE[mode] if training.PAPER_STAGE[s] in config.stages]
        for mode in config.modes
    }
    keys = (["teacher"] if train_teacher else []) + [
        f"{mode}/{stage}" for mode, stages in mode_stages.items() for stage in stages
    ]
    if state.finished(keys) and (workdir / "summary.json").exists():
        log(f"The run in {workdir} already finished these stages ({', '.join(keys)}): nothing "
            "to do. Its results are in summary.json.")  # fmt: skip
        return json.loads((workdir / "summary.json").read_text())
    if state.resuming:
        done = [k for k in keys if state.done(k)]
        log(f"resuming the run in {workdir}; stages done: {', '.join(done) or 'none'}")
    build = dict(
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        kernel_initializer=_kernel_initializer(config.init),
        max_norm=config.max_norm,
    )
    verbose = _verbose()
    compile_kwargs = {"jit_compile": config.jit_compile}
    patience = config.early_stopping_patience
    teacher_file = workdir / "teacher" / "teacher.keras"
    with strategy.scope():
        if train_teacher and not state.done("teacher"):
            teacher = models.build(
                config.teacher, seed=config.seed, dropout=config.teacher_dropout,
                input_dropout=config.teacher_input_dropout, **build,
            )  # fmt: skip
        else:
            teacher = load_teacher(
                teacher_file if train_teacher else config.teacher_path or workdir
            )
        students = {}
        for mode in config.modes:
            keras.utils.set_random_seed(config.seed + 1)  # every mode starts from the same init
            students[mode] = models.build(config.student, seed=config.seed + 1, **build)
            if mode in ("fitnet", "stagewise_labels"):
                # Fails now, naming both layers, if the pair cannot be used.
                make_hint_path(teacher, students[mode], hint_layer, guided_layer,
                               config.hparams.regressor)  # fmt: skip
    # Saved with the run so exports can bake it in and clients can send raw pixels.
    raw = keras.Input(data.input_shape, name="images")
    preprocessor = keras.Model(raw, data.preprocessor(raw), name="preprocessor")
    rundir.save_model(preprocessor, workdir / "preprocessor.keras")
    epoch_sync = data.epoch_callback()

    if train_teacher and not state.done("teacher"):
        log(f"== teacher: {config.teacher} on {config.dataset}")
        teacher_hp = dataclasses.replace(
            config.hparams,
            learning_rate=config.teacher_learning_rate or config.hparams.learning_rate,
        )
        callbacks = _stage_callbacks(state, "teacher", workdir / "teacher", patience, log,
                                     final_model=teacher, final_path=teacher_file)  # fmt: skip
        training.fit_labels(
            teacher, data.train, data.validation, epochs=config.teacher_epochs, hparams=teacher_hp,
            callbacks=[epoch_sync, *callbacks], verbose=verbose,
            initial_epoch=state.stage("teacher")["epochs_done"], **compile_kwargs,
        )  # fmt: skip
    teacher.trainable = False

    distiller_data = None
    to_run = {s for m, stages in mode_stages.items() for s in stages if not state.done(f"{m}/{s}")}
    if _caches_teacher(config, data) and to_run & {"hints", "kd"}:
        # The hint only when a hint stage is still to run (it is the cache's big part).
        hint = hint_layer if "hints" in to_run else None
        distiller_data = _cache_teacher_outputs(teacher, data, hint, log)

    histories: dict[str, dict] = {}
    if "teacher" in state.data["stages"]:
        histories["teacher"] = {"teacher": state.stage("teacher")["history"]}
    rows = [_describe("teacher", teacher, data.test, _seconds(state, ["teacher"]),
                      config.measure_latency)]  # fmt: skip
    for mode, student in students.items():
        stages = mode_stages[mode]
        if not stages:
            continue
        all_stages = training.STAGES_OF_MODE[mode]
        todo = [s for s in stages if not state.done(f"{mode}/{s}")]
        # The student enters the first stage to run with the weights of the stage before it.
        first = all_stages.index(todo[0]) if todo else len(all_stages)
        if first > 0:
            previous = all_stages[first - 1]
            _load_student_into(student, workdir / mode / previous / "student.keras",
                               f"Stage '{previous}' of mode '{mode}' is not run now")  # fmt: skip
        if todo:
            log(f"== student: {config.student}, mode {mode}, stages {', '.join(todo)}")

            def callbacks_for(stage, mode=mode, student=student):
                return [epoch_sync, *_stage_callbacks(state, f"{mode}/{stage}",
                        workdir / mode / stage, patience, log, final_model=student)]  # fmt: skip

            training.train_student(
                mode, teacher, student, data.train, data.validation, hparams=config.hparams,
                hint_layer=hint_layer, guided_layer=guided_layer,
                hints_epochs=config.hints_epochs, kd_epochs=config.kd_epochs,
                callbacks_for=callbacks_for, stages=todo, verbose=verbose,
                initial_epochs={s: state.stage(f"{mode}/{s}")["epochs_done"] for s in todo},
                distiller_data=distiller_data, **compile_kwargs,
            )  # fmt: skip
        rundir.save_model(student, workdir / mode / "student.keras")
        histories[mode] = {s: state.stage(f"{mode}/{s}")["history"] for s in stages}
        keys_of_mode = [f"{mode}/{s}" for s in all_stages]
        rows.append(_describe(mode, student, data.test, _seconds(state, keys_of_mode),
                              config.measure_latency))  # fmt: skip
        report.plot_curves(histories[mode], f"{config.student}: {mode}",
                           workdir / "plots" / f"curves_{mode}.png")  # fmt: skip

    trained = [m for m in config.modes if m in histories]
    if trained:
        final = students[trained[0]]
        rundir.save_model(final, workdir / "student.keras")
        export.export_student(final, workdir / "student_saved_model", "saved_model", overwrite=True)
    for row in rows:
        path = teacher_file if row["name"] == "teacher" else workdir / row["name"] / "student.keras"
        row["keras_file_bytes"] = path.stat().st_size if path.exists() else None
    summary = {
        "dataset": config.dataset,
        "teacher": config.teacher,
        "student": config.student,
        "hint_layer": hint_layer,
        "guided_layer": guided_layer,
        "final_student_mode": trained[0] if trained else None,
        "models": rows,
        "histories": histories,
    }
    if "teacher" in histories:
        report.plot_curves(histories["teacher"], config.teacher,
                           workdir / "plots" / "curves_teacher.png")  # fmt: skip
    report.plot_comparison(rows, workdir / "plots" / "comparison.png")
    rundir.write_json(workdir / "summary.json", summary)
    state.mark_finished(keys)
    log(report.table(rows))
    return summary


# A cached hint is held in memory beside the training split; above this it is computed live.
MAX_CACHED_HINT_BYTES = 2 * 2**30


def _caches_teacher(config: ExperimentConfig, data: data_lib.Datasets) -> bool:
    if config.cache_teacher is None:
        return not data.augmenting and data.train_examples is not None
    return config.cache_teacher


def _cache_teacher_outputs(teacher, data, hint_layer, log):
    """One teacher pass over train and validation: its logits (and hint) for the Distiller."""
    start = time.perf_counter()
    if hint_layer is not None:
        size = teacher_cache.hint_bytes(teacher, hint_layer, data.num_train_examples)
        if size > MAX_CACHED_HINT_BYTES:
            log(f"teacher cache: the hint of {data.num_train_examples} examples would take "
                f"{size / 2**30:.1f} GiB; stage 1 computes it live.")  # fmt: skip
            hint_layer = None
    cached = teacher_cache.cache_datasets(teacher, data, hint_layer=hint_layer)
    what = "logits and hints" if hint_layer else "logits"
    log(f"teacher cache: {what} of {data.num_train_examples} training examples in "
        f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return cached


def _seconds(state, keys) -> dict | None:
    times = {k.split("/")[-1]: round(state.stage(k).get("seconds", 0.0), 2)
             for k in keys if k in state.data["stages"]}  # fmt: skip
    return times or None
