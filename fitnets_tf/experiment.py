"""One FitNets experiment, end to end: data, teacher, students of every mode, run directory.

``run(config, workdir)`` is what ``python -m fitnets_tf.train`` calls once its flags have become
an :class:`~fitnets_tf.config.ExperimentConfig`; notebooks and scripts call it directly. It
follows the paper's procedure, one method of :class:`Experiment` per step:

1. :func:`~fitnets_tf.run.plan.plan`: which stages of which modes run now, what is already
   done, and whether every stage finds the student it continues from;
2. :meth:`~Experiment.build_models`: the teacher (trained here or loaded) and one student per
   mode, all students from the same initial weights;
3. :meth:`~Experiment.train_teacher`, then freeze it;
4. :meth:`~Experiment.train_students`: per mode, stage 1 (hints, or labels up to the guided
   layer) and stage 2 (KD with λ annealed, or labels alone), each resumable;
5. :meth:`~Experiment.report`: test accuracy, size, latency, plots, the final student.

Everything cheap to check (names, layers, shapes, the run directory) is checked first.
"""

from __future__ import annotations

import json
import math
import os

import keras

from fitnets_tf import data as data_lib
from fitnets_tf import distribute, evaluation, export, hint_choice, notes, stages, teacher_cache
from fitnets_tf.builders import (  # noqa: F401  (load_data, load_teacher, models_of: re-exported)
    dataset_shape,
    import_custom_modules,
    load_data,
    load_run_data,
    load_teacher,
    models_of,
    new_student,
    new_teacher,
    trained_teacher,
)
from fitnets_tf.callbacks import (
    DivergenceWarning,
    EarlyStopping,
    LearningRateLogger,
    NonFiniteGuard,
)
from fitnets_tf.config import ExperimentConfig
from fitnets_tf.data import overview
from fitnets_tf.errors import ConfigError, DataError
from fitnets_tf.hint_flags import pair_name
from fitnets_tf.hint_path import check_weights, layer_pairs, make_regressors
from fitnets_tf.latency import check_timed_runtimes
from fitnets_tf.preprocessing import check_own_rescaling
from fitnets_tf.pretrained import is_pretrained, recipe_config
from fitnets_tf.regressor import describe, describe_line
from fitnets_tf.reporting import plots
from fitnets_tf.reporting.summary import dataset_fields, summary_table
from fitnets_tf.run import io, layout, ownership, preemption, runtime, student_file, teacher_file
from fitnets_tf.run.cluster import agree_on_progress, hold, lost_worker_named, strategy_for
from fitnets_tf.run.final_student import save_final_student
from fitnets_tf.run.plan import Plan, check_earlier_stages, plan  # noqa: F401  (Plan: re-exported)
from fitnets_tf.run.resume import RunState, StageCheckpoint, restore_seed_states


def run(config: ExperimentConfig, workdir: str | os.PathLike, log=print) -> dict:
    """Runs the experiment and returns the summary written to ``workdir/summary.json``.

    Keras' dtype policy is restored on return (the run's mixed precision does not leak). The run
    directory is locked meanwhile: a second process is refused (``WorkdirBusyError``, naming the
    holder). SIGTERM or SIGINT ends training after the step under way, with a checkpoint, and
    raises :class:`~fitnets_tf.run.preemption.Preempted`; a full disk raises ``DiskFullError``,
    naming the run directory. Either way, calling ``run`` again resumes.
    """
    config.validate()
    check_timed_runtimes(config.runtime)  # timed after training: checked now
    import_custom_modules(config)  # before the run directory is claimed
    # Before the directory is made, the lock file and the removal of killed writers' litter: a
    # user's folder refused is left as it was, and no folder is left inside an image folder.
    ownership.claim(workdir, config)
    files = layout.RunLayout(layout.prepare(workdir))
    s = config.schedule
    # Before any TensorFlow op: a multi-worker run's workers form their cluster, then agree on
    # their run directories and progress before any of them writes (fitnets_tf.run.cluster).
    strategy = strategy_for(config.runtime.strategy, config.runtime.cluster_timeout)
    with (
        hold(files.root, strategy, config.fingerprint()), preemption.watch(),
        io.run_writes(files.root), lost_worker_named(strategy, files.root),
        runtime.session(seed=s.seed, deterministic=config.runtime.deterministic,
                        mixed_precision=s.mixed_precision),
        notes.once(),  # a note on a model (its softmax left out): once, not once per mode
    ):  # fmt: skip
        agree_on_progress(files.root, config.fingerprint(), strategy)
        return Experiment(config, files, log).run()


class Experiment:
    """The steps of :func:`run`, sharing the config, the run directory and its progress."""

    def __init__(self, config: ExperimentConfig, files: layout.RunLayout, log=print):
        self.config, self.files, self.log = config, files, log
        self.plan = plan(config)
        self.hints = config.hint_pairs()  # "auto" until build_models chooses
        self.auto_pair = None
        self.regressors: list[dict] | None = None  # each pair's, as built (hints.json)
        self._check_pair()
        self.state = RunState(files.root, config.fingerprint())  # refuses another configuration
        self.teacher_config = self._teacher_config()
        self.verbose = runtime.verbosity()
        self.rows: list[dict] = []
        self.histories: dict[str, dict] = {}

    def _check_pair(self) -> None:
        if any(m in stages.HINT_MODES for m in self.config.schedule.modes) and not self.hints:
            raise ConfigError(
                f"Modes {self.config.schedule.modes} need hint/guided pairs: "
                f"{self.config.models.teacher!r} / {self.config.models.student!r} have no "
                "paper pair. Give --hints=auto, --hints=teacher_layer:student_layer,... or "
                "--hint_layer and --guided_layer (--list_layers shows the layers)."
            )

    def _teacher_config(self) -> ExperimentConfig:
        """The options the teacher is trained with: the run's, or a shipped teacher's recipe."""
        if not (self.plan.train_teacher and is_pretrained(path := self.config.models.teacher_path)):
            return self.config
        started = [k for k in self.state.data["stages"] if k != "teacher"]
        if started and not self.state.done("teacher"):
            raise ConfigError(
                f"The students of {self.files.root} ({', '.join(started)}) learned from the "
                f"shipped teacher {path}: retraining it here would mix two teachers in one run. "
                "Retrain it in a new --workdir, or drop 'teacher' from --stages."
            )
        return recipe_config(self.config)

    def run(self) -> dict:
        keys = self.plan.keys
        if self.state.finished(keys) and self.files.summary.exists():
            self.log(f"The run in {self.files.root} already finished these stages "
                     f"({', '.join(keys)}): nothing to do. Its results are in summary.json.")  # fmt: skip
            return json.loads(self.files.summary.read_text())
        if self.state.resuming:
            self.log(f"resuming the run in {self.files.root}; stages done: "
                     f"{', '.join(self.plan.done(self.state)) or 'none'}")  # fmt: skip
        check_earlier_stages(self.plan, self.state, self.files)
        teacher_file.check_same(self.state, teacher_file.given_file(self.config, self.plan,
                                                                    self.state))  # fmt: skip
        student_file.check_same(self.state, student_file.given_file(self.config))
        # First: a multi-worker strategy configures TensorFlow's collective ops, which
        # TensorFlow refuses once any op has run (loading the data runs some).
        strategy = distribute.make_strategy(self.config.runtime.strategy,
                                            cluster_timeout=self.config.runtime.cluster_timeout)
        io.write_json(self.files.versions, runtime.versions(self.config.schedule.seed))
        self.data = distribute.check_last_batches(self.load_data(), strategy)
        self.log(overview.line(self.data) + distribute.described(strategy))
        # Everything that makes variables (models, regressors, each stage's optimizer) under
        # the strategy: an optimizer made outside it cannot update a mirrored model.
        with strategy.scope():
            teacher, students = self.build_models()
            self.save_preprocessor()
            self.train_teacher(teacher)
            teacher.trainable = False
            self.check_teacher(teacher)
            self.train_students(teacher, students)
        return self.report(teacher, students)

    # -- data and models ---------------------------------------------------------------------

    def load_data(self) -> data_lib.Datasets:
        return load_run_data(self.config, self.files.data, started=self.state.resuming)

    def build_models(self) -> tuple[keras.Model, dict[str, keras.Model]]:
        """The teacher and one student per mode; fails now, naming the layers, on a bad pair,
        and where the images' size came from when a model does not take them."""
        try:
            return self._build_models()
        except DataError as e:  # a model's input shape: the size may be the data's choice
            height, width = self.data.input_shape[:2]
            raise DataError(f"{e} The data's size, {height}x{width}, is "
                            f"{overview.size_from(self.data.spec)}.") from None  # fmt: skip

    def _build_models(self) -> tuple[keras.Model, dict[str, keras.Model]]:
        shape = self.data.input_shape, self.data.num_classes
        if self.plan.train_teacher and not self.state.done("teacher"):
            teacher = new_teacher(self.teacher_config, *shape)
        else:
            here = self.plan.train_teacher or self.state.done("teacher")  # its students' teacher
            path = (self.files.teacher if here else None) or self.config.models.trained_teacher()
            teacher = trained_teacher(path or self.files.root, *shape, hints=self.hints)
        students = {}
        for mode in self.config.schedule.modes:
            students[mode] = new_student(self.config, *shape)
            if warning := check_own_rescaling(students[mode], self.data.preprocessor.mode,
                                              "student", self.config.models.student):  # fmt: skip
                self.log(warning)
            if mode in stages.HINT_MODES:
                teacher = self._check_hints(teacher, students[mode])
        return teacher, students

    def _check_hints(self, teacher: keras.Model, student: keras.Model) -> keras.Model:
        """Resolves ``hints=auto``, checks every pair, writes hints.json; returns the teacher."""
        if self.hints == "auto":
            teacher, self.hints, self.auto_pair = hint_choice.auto_hints(teacher, student)
            self.log(f"hints=auto: {pair_name(*self.hints[0])} ({self.auto_pair.reason}).")
        self.hints = layer_pairs(teacher, self.hints)  # an ONNX teacher's: by their layers
        built = make_regressors(teacher, student, self.hints, self.config.models.regressor,
                                max_norm=self.config.models.regressor_bound())  # fmt: skip
        described = [describe(r) for r in built]
        if described != self.regressors:  # once per run, not once per mode
            for pair, fields in zip(self.hints, described, strict=True):
                self.log(describe_line(pair_name(*pair), fields))
        self.regressors = described
        io.write_json(self.files.hints, self.hints_record())
        return teacher

    def hints_record(self) -> dict | None:
        """The pairs of stage 1, their weights and the automatic choice (None: no pairs yet)."""
        if not isinstance(self.hints, list) or not self.hints:
            return None
        weights = check_weights(self.config.models.hint_weights, len(self.hints))
        regressors = self.regressors or [None] * len(self.hints)
        pairs = [{"hint_layer": h, "guided_layer": g, "weight": w, "regressor": r}
                 for (h, g), w, r in zip(self.hints, weights, regressors, strict=True)]  # fmt: skip
        return {"pairs": pairs, "auto": self.auto_pair.as_dict() if self.auto_pair else None}

    def save_preprocessor(self) -> None:
        # Saved with the run so exports can bake it in and clients can send raw pixels.
        raw = keras.Input(self.data.input_shape, name=export.INPUT_NAME)
        preprocessor = keras.Model(raw, self.data.preprocessor(raw), name="preprocessor")
        io.save_model(preprocessor, self.files.preprocessor)

    # -- training ----------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        """Batches per training epoch (the last may be short): learning-rate schedules count
        the epochs of a stage in these optimizer steps."""
        return math.ceil(self.data.num_train_examples / self.data.batch_size)

    def stage_callbacks(self, key: str, final_model=None, final_path=None) -> list:
        """Per stage: data order, NaN guard, early stopping, checkpoint + logs, TensorBoard."""
        stage_files = self.files.stage(key)
        stage_files.root.mkdir(parents=True, exist_ok=True)
        early_stopping = self._early_stopping(key)
        return [
            self.data.epoch_callback(), NonFiniteGuard(key), DivergenceWarning(key, self.log),
            LearningRateLogger(), *([early_stopping] if early_stopping else []),
            # After early stopping (it saves its state and the best weights it restores),
            # before the loggers (an epoch is logged once its checkpoint exists).
            StageCheckpoint(self.state, key, stage_files.root, student=final_model,
                            early_stopping=early_stopping, log=self.log, final_path=final_path,
                            checkpoint_every=self.config.runtime.checkpoint_every,
                            checkpoint_minutes=self.config.runtime.checkpoint_minutes),
            keras.callbacks.TensorBoard(str(stage_files.tensorboard), write_graph=False),
        ]  # fmt: skip

    def _early_stopping(self, key: str):
        schedule = (self.teacher_config if key == "teacher" else self.config).schedule
        patience = schedule.early_stopping_patience
        return EarlyStopping.for_stage(key, patience) if patience else None

    def train_teacher(self, teacher: keras.Model) -> None:
        if not self.plan.train_teacher or self.state.done("teacher"):
            return
        c = self.teacher_config
        how = f", retraining {self.config.models.teacher_path} by its recorded recipe"
        self.log(f"== teacher: {c.models.teacher} on {c.data.dataset}"
                 f"{how if c is not self.config else ''}")  # fmt: skip
        callbacks = self.stage_callbacks("teacher", teacher, self.files.teacher)
        stages.fit_labels(
            teacher, self.data.train, self.data.validation, epochs=c.schedule.teacher_epochs,
            hparams=c.hyperparameters(teacher=True), callbacks=callbacks, verbose=self.verbose,
            initial_epoch=self.state.initial_epoch("teacher"),
            initial_step=self.state.initial_step("teacher"),
            jit_compile=c.runtime.jit_compile, steps_per_epoch=self.steps_per_epoch,
        )  # fmt: skip

    def check_teacher(self, teacher: keras.Model) -> None:
        """Prints the teacher's validation accuracy before it teaches (refused when trained on
        pixels scaled otherwise, warned near chance: :func:`evaluation.check_teacher`)."""
        # No validation split (--retrain_on_all): the test split, on which nothing is chosen.
        split = "validation" if self.data.validation is not None else "test"
        images = getattr(self.data, split)
        if images is None or not self._to_run() & {"hints", "kd"}:
            return
        here = self.plan.train_teacher or self.state.done("teacher")  # on these images
        fed, names = self.data.preprocessor, self.data.spec.class_names
        for line in evaluation.check_teacher(teacher, images, fed.mode, self.data.num_classes,
                                             names, split, other_scalings=not here,
                                             input_mean=fed.mean, input_std=fed.std,
                                             temperature=self.config.schedule.temperature):  # fmt: skip
            self.log(line)

    def _to_run(self) -> set[str]:
        return {s for mode, names in self.plan.mode_stages.items() for s in names
                if not self.state.done(f"{mode}/{s}")}  # fmt: skip

    def teacher_outputs(self, teacher: keras.Model):
        """The Distiller's data with the teacher's outputs cached, or None to run it live."""
        to_run = self._to_run()
        uncropped = self.config.schedule.kd_targets == "uncropped"
        if not teacher_cache.wanted(self.config.runtime.cache_teacher, self.data, uncropped):
            return None
        if not to_run & {"hints", "kd"}:
            return None
        # The hints only when a hint stage is still to run (they are the cache's big part).
        hint = [h for h, _ in self.hints] if "hints" in to_run else None
        return teacher_cache.cache_for_run(
            teacher, self.data, hint, self.log, memory_gb=self.config.runtime.cache_memory_gb,
            directory=self.files.teacher_cache,
        )  # fmt: skip

    def train_students(self, teacher: keras.Model, students: dict[str, keras.Model]) -> None:
        distiller_data = self.teacher_outputs(teacher)
        for mode, student in students.items():
            if self.plan.mode_stages[mode]:
                self.train_mode(mode, teacher, student, distiller_data)

    def train_mode(self, mode: str, teacher, student, distiller_data) -> None:
        """The stages of one mode still to run, from the weights of the stage before them."""
        todo = self.plan.todo(mode, self.state)
        if earlier := self.plan.starts_from(mode, self.state):  # found by check_earlier_stages
            self._load_stage_student(student, mode, earlier)
        if todo:
            self.log(f"== student: {self.config.models.student}, mode {mode}, stages "
                     f"{', '.join(todo)}")  # fmt: skip
            c = self.config
            stages.train_student(
                mode, teacher, student, self.data.train, self.data.validation,
                hparams=c.hyperparameters(), hints=self.hints or None,
                hint_weights=c.models.hint_weights, hints_epochs=c.schedule.hints_epochs,
                kd_epochs=c.schedule.kd_epochs, stages=todo, verbose=self.verbose,
                callbacks_for=lambda stage: self.stage_callbacks(f"{mode}/{stage}", student),
                initial_epochs={s: self.state.initial_epoch(f"{mode}/{s}") for s in todo},
                initial_steps={s: self.state.initial_step(f"{mode}/{s}") for s in todo},
                distiller_data=distiller_data, seed=c.schedule.seed + 2, check_teacher=False,
                jit_compile=c.runtime.jit_compile, steps_per_epoch=self.steps_per_epoch,
            )  # fmt: skip
        io.save_model(student, self.files.mode_student(mode))

    def _load_stage_student(self, student: keras.Model, mode: str, stage: str) -> None:
        path = self.files.stage_student(mode, stage)
        student.set_weights(io.load_model(path, "student").get_weights())
        # A .keras file leaves out seed-generator states: dropout goes on where the stage left it.
        restore_seed_states(student, self.state.stage(f"{mode}/{stage}").get("seed_states"))

    # -- results -----------------------------------------------------------------------------

    def _row(self, name: str, model: keras.Model, keys, history: dict | None = None) -> dict:
        runtime = self.config.runtime
        row = evaluation.summary_row(name, model, self.data.test, self.state.seconds(keys),
                                     runtime.measure_latency, runtime.serving_runtimes)  # fmt: skip
        path = self.files.model_file(name)
        row["keras_file_bytes"] = path.stat().st_size if path.exists() else None
        for warning in evaluation.training_warnings(name, model, history, row["test_accuracy"],
                                                    self.data.num_classes):  # fmt: skip
            self.log(warning)
        return row

    def report(self, teacher: keras.Model, students: dict[str, keras.Model]) -> dict:
        """Evaluates every model, writes the final student, plots and ``summary.json``."""
        if "teacher" in self.state.data["stages"]:
            self.histories["teacher"] = {"teacher": self.state.stage("teacher")["history"]}
        self.rows = [self._row("teacher", teacher, ["teacher"])]
        for mode, student in students.items():
            if not self.plan.mode_stages[mode]:
                continue
            self.histories[mode] = {s: self.state.stage(f"{mode}/{s}")["history"]
                                    for s in self.plan.mode_stages[mode]}  # fmt: skip
            keys = [f"{mode}/{s}" for s in stages.STAGES_OF_MODE[mode]]
            self.rows.append(self._row(mode, student, keys, self.histories[mode]))
            plots.plot_curves(self.histories[mode], f"{self.config.models.student}: {mode}",
                              self.files.curves(mode))  # fmt: skip
        trained = [m for m in self.config.schedule.modes if m in self.histories]
        if trained:
            self._save_final_student(students[trained[0]])
        summary = self._summary(trained[0] if trained else None)
        if "teacher" in self.histories:
            plots.plot_curves(self.histories["teacher"], self.config.models.teacher,
                              self.files.curves("teacher"))  # fmt: skip
        plots.plot_comparison(self.rows, self.files.comparison_plot)
        io.write_json(self.files.summary, summary)
        self.state.mark_finished(self.plan.keys)
        self.log(summary_table(self.rows))
        return summary

    def _save_final_student(self, student: keras.Model) -> None:
        save_final_student(student, self.files, self.data.spec.class_names or None)

    def _summary(self, final_mode: str | None) -> dict:
        c, hints = self.config, self.hints_record()
        first = hints["pairs"][0] if hints else {}  # one pair's fields, as before several pairs
        return {
            **dataset_fields(c.data.dataset, self.data.spec.class_names),
            "teacher": c.models.teacher_path or c.models.teacher,  # the one used
            "student": c.models.student,
            "hint_layer": first.get("hint_layer"),
            "guided_layer": first.get("guided_layer"),
            "hints": hints,
            "final_student_mode": final_mode,
            "models": self.rows,
            "histories": self.histories,
        }
