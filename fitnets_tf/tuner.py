"""Searching λ and τ (and optionally λ's end value, the learning rate, τ²) with keras-tuner.

The paper fixes τ = 3 and λ0 = 4 (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015,
section 4); another teacher/student pair may want other values. A trial is stage 2 alone: the
student starts from the hint-trained weights of stage 1, which :func:`tune` computes once, and
learns with the trial's λ0 (annealed by :class:`~fitnets_tf.callbacks.LambdaAnnealing`) and τ.
The objective is the student's best validation accuracy; the test split is never read.

Pieces, smallest first:

* :class:`SearchSpace`: the ranges; each hyperparameter is named after its ``fitnets_tf.train``
  flag and defaults to the flagfile's value, which is also the first trial (the baseline).
* :class:`FitNetsHyperModel`: ``build(hp)`` loads the teacher and makes the Distiller,
  ``fit(hp, ...)`` runs stage 2. Trials checkpoint the student only, and fail on a NaN.
* :func:`make_tuner`: a keras-tuner ``Tuner`` with a random, Bayesian or Hyperband oracle.
* :func:`tune`: stage 1 once, the search (resumable, chief/worker capable), the results.

Run directory of :func:`tune`::

    search.json       what the search is; a re-run must match it, or it stops
    stage1/           an ``experiment.run`` directory: teacher/teacher.keras and the
                      hint-trained student fitnet/hints/student.keras
    stage1.json       written when stage 1 is done: the teacher and student the trials use
    trials/           keras-tuner's project: oracle.json and trial_<id>/ with trial.json,
                      checkpoint.weights.h5 (the student's best epoch), log.csv, runs.jsonl
    results.csv       one row per trial: status, hyperparameters, validation accuracy
    results.png       validation accuracy over λ0 × τ
    summary.json      the best trial and the first (default) trial
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import time
from collections.abc import Callable

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from fitnets_tf import data as data_lib
from fitnets_tf import experiment, models, rundir, training
from fitnets_tf.distiller import Distiller

ORACLES = ("random", "bayesian", "hyperband")
OPTIONAL = ("lambda_end", "learning_rate", "tau_squared")
# Ranges of the optional hyperparameters when searched without one given.
OPTIONAL_RANGES = {"lambda_end": (0.0, 4.0), "learning_rate": (1e-4, 1e-2)}
OBJECTIVE = "val_accuracy"
PROJECT = "trials"
# A worker waits this long for the chief's stage 1 (keras-tuner waits an hour for its oracle).
STAGE_ONE_WAIT_S = 3600


class SearchError(ValueError):
    """The search cannot run as asked (a changed search space, no validation split...)."""


# -- the search space --------------------------------------------------------------------------


def _range(name: str, value, positive: bool = True) -> tuple[float, float]:
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and (value[0] > 0 if positive else value[0] >= 0)
        and value[0] < value[1]
    )
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(
            f"`{name}` must be two numbers (min, max) with {bound} min < max. "
            f"Received: {name}={value!r}"
        )
    return float(value[0]), float(value[1])


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The ranges of a search; ``None`` (``False``) leaves a hyperparameter at its base value.

    λ0, τ and the learning rate are sampled on a log scale (their effect is multiplicative),
    λ's end value linearly (it may be 0). Every default is the base ``Hyperparameters``' value,
    so the first trial is the configuration being tuned (the paper's λ0 = 4, τ = 3).

    Attributes:
        kd_lambda: range of λ0, the KD weight at the start of stage 2.
        temperature: range of τ.
        lambda_end: range of λ at the end of its linear decay.
        learning_rate: range of the RMSProp learning rate.
        tau_squared: also try multiplying the soft term by τ².
    """

    kd_lambda: tuple[float, float] = (0.5, 16.0)
    temperature: tuple[float, float] = (1.0, 10.0)
    lambda_end: tuple[float, float] | None = None
    learning_rate: tuple[float, float] | None = None
    tau_squared: bool = False

    def __post_init__(self):
        for name in ("kd_lambda", "temperature", "lambda_end", "learning_rate"):
            value = getattr(self, name)
            if value is not None or name in ("kd_lambda", "temperature"):
                object.__setattr__(self, name, _range(name, value, name != "lambda_end"))
        if not isinstance(self.tau_squared, bool):
            raise ValueError(f"`tau_squared` must be a bool. Received: {self.tau_squared!r}")

    @classmethod
    def with_optional(cls, names, **ranges) -> SearchSpace:
        """λ0 and τ plus the ``OPTIONAL`` hyperparameters in ``names`` (default ranges)."""
        unknown = sorted(set(names) - set(OPTIONAL))
        if unknown:
            raise ValueError(
                f"Unknown optional hyperparameter(s) {unknown}: valid are {', '.join(OPTIONAL)}."
            )
        kwargs = {k: v for k, v in ranges.items() if k in ("kd_lambda", "temperature")}
        for name in ("lambda_end", "learning_rate"):
            if name in names:
                kwargs[name] = ranges.get(name) or OPTIONAL_RANGES[name]
        return cls(**kwargs, tau_squared="tau_squared" in names)

    def names(self) -> tuple[str, ...]:
        """The searched hyperparameters (each the name of a ``fitnets_tf.train`` flag)."""
        optional = [n for n in ("lambda_end", "learning_rate") if getattr(self, n) is not None]
        return (
            "kd_lambda",
            "temperature",
            *optional,
            *(("tau_squared",) if self.tau_squared else ()),
        )

    def describe(self, base: training.Hyperparameters) -> dict:
        """Plain-data description (ranges, sampling, defaults): what ``search.json`` stores."""
        out = {}
        for name in self.names():
            default = _base_value(base, name)
            if name == "tau_squared":
                out[name] = {"type": "bool", "default": default}
                continue
            low, high = getattr(self, name)
            if not low <= default <= high:
                raise ValueError(
                    f"The first trial uses the base {name}={default}, outside the searched "
                    f"range [{low}, {high}]: widen the range or change --{name}."
                )
            sampling = "linear" if name == "lambda_end" else "log"
            out[name] = {"min": low, "max": high, "sampling": sampling, "default": default}
        return out

    def hyperparameters(
        self, hp: keras_tuner.HyperParameters, base: training.Hyperparameters
    ) -> training.Hyperparameters:
        """Declares the space in ``hp`` and returns ``base`` with the trial's values."""
        values = {}
        for name, spec in self.describe(base).items():
            if spec.get("type") == "bool":
                values[name] = hp.Boolean(name, default=spec["default"])
            else:
                values[name] = hp.Float(name, spec["min"], spec["max"], sampling=spec["sampling"],
                                        default=spec["default"])  # fmt: skip
        return _with_values(base, values)


_FIELD = {"kd_lambda": "lambda_start"}  # flag name -> Hyperparameters field, where they differ


def _base_value(base: training.Hyperparameters, name: str):
    return getattr(base, _FIELD.get(name, name))


def _with_values(base: training.Hyperparameters, values: dict) -> training.Hyperparameters:
    return dataclasses.replace(base, **{_FIELD.get(k, k): v for k, v in values.items()})


# -- the hypermodel ----------------------------------------------------------------------------


class _TrialDistiller(Distiller):
    """A Distiller whose weight files are the student's alone.

    keras-tuner checkpoints every trial with ``model.save_weights`` and restores it with
    ``load_weights`` (best model, Hyperband's next round). The teacher is frozen and on disk
    once, and stage 2 does not use the regressor, so a trial keeps only what it trained.
    """

    def save_weights(self, filepath, *args, **kwargs):
        with rundir.atomic_path(filepath) as tmp:
            self.student.save_weights(tmp, *args, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        self.student.load_weights(filepath, *args, **kwargs)


class _FailOnNonFinite(keras.callbacks.Callback):
    """Fails the trial at the first NaN/Inf loss: keras-tuner records it as FAILED.

    Stopping alone (``TerminateOnNaN``) would still validate the broken student, and NaN logits
    predict class 0: the accuracy is a number and could look like the best one.
    """

    def on_train_batch_end(self, batch, logs=None):
        self._check((logs or {}).get("loss"), f"batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        self._check((logs or {}).get("val_loss"), f"validation after epoch {epoch}")

    @staticmethod
    def _check(value, where: str):
        if value is not None and not np.all(np.isfinite(value)):
            raise keras_tuner.errors.FailedTrialError(
                f"Non-finite loss ({float(np.asarray(value))}) at {where}: the student diverged."
            )


class FitNetsHyperModel(keras_tuner.HyperModel):
    """Stage 2 of FitNets as a keras-tuner HyperModel over λ0, τ and friends.

    ``build(hp)`` loads the teacher from ``teacher_path`` (keras-tuner clears the Keras session
    before every trial, so nothing is kept across trials), builds a fresh student with
    ``build_student`` and gives it the weights of ``student_weights`` (stage 1's result), and
    returns the Distiller with the trial's τ and λ0. ``fit`` runs
    :func:`fitnets_tf.training.fit_kd` (λ annealed from λ0 to λ's end over the trial's
    epochs) and returns its History: keras-tuner scores the best epoch's ``val_accuracy``.

    ``clear_session`` also resets the dtype policy and the random state, so ``build`` applies
    ``dtype_policy`` and ``seed`` again: every trial starts from the same state and differs
    from the others by its hyperparameters only.

    Args:
        teacher_path: the trained teacher, a ``.keras`` file or a run directory.
        build_student: makes the student architecture (untrained) under the current policy.
        student_weights: a ``.keras`` or ``.weights.h5`` file of the hint-trained student;
            ``None`` starts from ``build_student``'s initialisation.
        hparams: everything not searched (and the defaults of what is).
        space: the :class:`SearchSpace`.
        hint_layer, guided_layer, hints_epochs: with ``hints_epochs > 0`` each trial first runs
            stage 1 itself (with its own learning rate) instead of loading ``student_weights``.
        seed: seeds every trial identically.
        dtype_policy: e.g. ``"mixed_float16"``.
        compile_kwargs: for ``Distiller.compile`` (``jit_compile``...).
    """

    def __init__(
        self,
        teacher_path: str | os.PathLike,
        build_student: Callable[[], keras.Model],
        student_weights: str | os.PathLike | None = None,
        *,
        hparams: training.Hyperparameters | None = None,
        space: SearchSpace | None = None,
        hint_layer: str | None = None,
        guided_layer: str | None = None,
        hints_epochs: int = 0,
        seed: int = 0,
        dtype_policy: str = "float32",
        compile_kwargs: dict | None = None,
        name: str = "fitnets",
    ):
        super().__init__(name=name)
        if hints_epochs and (hint_layer is None or guided_layer is None):
            raise ValueError("`hints_epochs` > 0 needs `hint_layer` and `guided_layer`.")
        hparams = hparams or training.Hyperparameters()
        space = space or SearchSpace()
        space.describe(hparams)  # fails now if a default lies outside its range
        self.teacher_path = teacher_path
        self.build_student = build_student
        self.student_weights = student_weights
        self.hparams, self.space = hparams, space
        self.hint_layer, self.guided_layer, self.hints_epochs = (
            hint_layer,
            guided_layer,
            hints_epochs,
        )
        self.seed, self.dtype_policy = seed, dtype_policy
        self.compile_kwargs = dict(compile_kwargs or {})
        self._student_values = None  # numpy: survives clear_session, read from disk once

    def declare_hyperparameters(self, hp):
        self.space.hyperparameters(hp, self.hparams)

    def build(self, hp) -> Distiller:
        keras.config.set_dtype_policy(self.dtype_policy)
        keras.utils.set_random_seed(self.seed)
        hparams = self.space.hyperparameters(hp, self.hparams)
        teacher = experiment.load_teacher(self.teacher_path)
        student = self.build_student()
        if self.student_weights is not None and not self.hints_epochs:
            student.set_weights(self._stage_one_weights(student))
        hints = self.hints_epochs > 0
        return _TrialDistiller(
            teacher,
            student,
            hint_layer=self.hint_layer if hints else None,
            guided_layer=self.guided_layer if hints else None,
            temperature=hparams.temperature,
            kd_lambda=hparams.lambda_start,
            tau_squared=hparams.tau_squared,
            regressor=hparams.regressor,
        )

    def _stage_one_weights(self, student: keras.Model) -> list:
        if self._student_values is None:
            path = str(self.student_weights)
            if path.endswith(".weights.h5"):
                student.load_weights(path)
                self._student_values = student.get_weights()
            else:
                trained = keras.saving.load_model(path, compile=False, safe_mode=True)
                self._student_values = trained.get_weights()
        return self._student_values

    def fit(self, hp, model, x, validation_data=None, *, epochs: int, callbacks=(),
            initial_epoch: int = 0, verbose="auto", data_epoch=None, **kwargs):  # fmt: skip
        """Stage 2 for one trial (after stage 1 when ``hints_epochs``); returns the History.

        Called by ``tuner.search(x, validation_data, epochs=...)`` as ``Model.fit`` would be.

        ``data_epoch`` is the training pipeline's epoch counter (``Datasets.epoch``): kept in
        step with Keras' epochs, every trial sees the same batches in the same order.
        """
        hparams = self.space.hyperparameters(hp, self.hparams)
        common = [_FailOnNonFinite()]
        if data_epoch is not None:
            common.append(data_lib.EpochSync(data_epoch))
        if self.hints_epochs and initial_epoch == 0:
            training.fit_hints(model, x, validation_data, epochs=self.hints_epochs, hparams=hparams,
                               callbacks=common, verbose=verbose, **self.compile_kwargs)  # fmt: skip
        return training.fit_kd(
            model, x, validation_data, epochs=epochs, initial_epoch=initial_epoch,
            hparams=hparams, callbacks=[*common, *callbacks], verbose=verbose,
            **self.compile_kwargs, **kwargs,
        )  # fmt: skip


# -- oracles and tuners ------------------------------------------------------------------------


class _DefaultsFirst:
    """Makes the defaults (the configuration being tuned) the first trial of any oracle.

    Random, Bayesian (initial points) and Hyperband (new brackets) oracles all draw new values
    through ``_random_values``; the first draw returns the defaults instead.
    """

    def _random_values(self):
        defaults = {hp.name: hp.default for hp in self.hyperparameters.space}
        if not self._duplicate(defaults):
            return defaults
        return super()._random_values()


class _RandomOracle(_DefaultsFirst, keras_tuner.oracles.RandomSearchOracle):
    pass


class _BayesianOracle(_DefaultsFirst, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class _HyperbandOracle(_DefaultsFirst, keras_tuner.oracles.HyperbandOracle):
    pass


class _Tuner(keras_tuner.Tuner):
    """A Tuner that logs each trial's epochs (``log.csv``) and its runs (``runs.jsonl``)."""

    def __init__(self, oracle, hypermodel, **kwargs):
        # keras_tuner.Tuner.__init__ by name: the stock Hyperband class builds its own oracle.
        keras_tuner.Tuner.__init__(self, oracle, hypermodel, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        log = keras.callbacks.CSVLogger(os.path.join(self.get_trial_dir(trial.trial_id), "log.csv"))
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), log]
        return super().run_trial(trial, *args, **kwargs)

    def on_trial_begin(self, trial):
        self._record(trial, "start")
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        self._record(trial, "end")
        super().on_trial_end(trial)

    def _record(self, trial, event: str):
        # One line per start and end: a trial re-run after an interruption shows two starts.
        path = pathlib.Path(self.get_trial_dir(trial.trial_id)) / "runs.jsonl"
        line = {"event": event, "tuner_id": self.tuner_id, "status": trial.status,
                "time": round(time.time(), 3)}  # fmt: skip
        previous = path.read_text() if path.is_file() else ""
        rundir.write_text(path, previous + json.dumps(line) + "\n")


class _HyperbandTuner(_Tuner, keras_tuner.Hyperband):
    """Hyperband's epochs per round and warm starts, with our oracle and records."""


def make_tuner(
    hypermodel: keras_tuner.HyperModel,
    *,
    oracle: str = "random",
    max_trials: int = 8,
    trial_epochs: int = 3,
    directory: str | os.PathLike,
    project_name: str = PROJECT,
    seed: int = 0,
    distribution_strategy=None,
) -> keras_tuner.Tuner:
    """A resumable tuner (``overwrite=False``) maximising ``val_accuracy``.

    Args:
        oracle: ``"random"``, ``"bayesian"`` (Gaussian process; needs scikit-learn) or
            ``"hyperband"`` (``trial_epochs`` is its ``max_epochs``, factor 3).
        max_trials: number of trials (Hyperband: a cap on its brackets' trials).
        seed: the oracle's seed.
    """
    if oracle not in ORACLES:
        raise ValueError(f"`oracle` must be one of {ORACLES}. Received: oracle={oracle!r}")
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    # keras-tuner replaces a seed of 0 by a random one.
    common = dict(objective=objective, seed=seed + 1)
    if oracle == "random":
        the_oracle = _RandomOracle(max_trials=max_trials, **common)
    elif oracle == "bayesian":
        the_oracle = _BayesianOracle(max_trials=max_trials, **common)
    else:
        the_oracle = _HyperbandOracle(max_epochs=trial_epochs, factor=3, **common)
        the_oracle.max_trials = max_trials
    cls = _HyperbandTuner if oracle == "hyperband" else _Tuner
    return cls(
        the_oracle,
        hypermodel,
        directory=str(directory),
        project_name=project_name,
        overwrite=False,
        distribution_strategy=distribution_strategy,
    )


# -- results -----------------------------------------------------------------------------------


def completed(trial) -> bool:
    return trial.status == "COMPLETED" and trial.score is not None and math.isfinite(trial.score)


def best_trial(oracle):
    """The completed trial with the highest validation accuracy, or None.

    Unlike ``oracle.get_best_trials``, never a failed trial (keras-tuner pads its list with
    them when too few trials completed).
    """
    done = [t for t in oracle.trials.values() if completed(t)]
    return max(done, key=lambda t: t.score) if done else None


def trial_rows(oracle, space: SearchSpace, trial_epochs: int) -> list[dict]:
    """One row per trial, in trial order."""
    rows = []
    defaults = {hp.name: hp.default for hp in oracle.hyperparameters.space}
    for trial in sorted(oracle.trials.values(), key=lambda t: t.trial_id):
        values = trial.hyperparameters.values
        row = {"trial_id": trial.trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in space.names()})
        row["defaults"] = all(values.get(k) == v for k, v in defaults.items())
        done = completed(trial)
        row[OBJECTIVE] = trial.score if done else None
        for metric in ("val_loss", "accuracy"):  # at the best epoch
            exists = done and trial.metrics.exists(metric)
            row[metric] = float(trial.metrics.get_history(metric)[-1].mean()) if exists else None
        row["best_epoch"] = trial.best_step + 1 if done else None
        row["epochs"] = values.get("tuner/epochs", trial_epochs)
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["trial_id"])
    writer.writeheader()
    writer.writerows(rows)
    rundir.write_text(path, out.getvalue())


def plot_results(
    rows: list[dict], path: str | os.PathLike, title: str = "", space: SearchSpace | None = None
) -> None:
    """Validation accuracy over λ0 × τ: one dot per trial; failed trials as red crosses.

    With ``space``, the axes span the searched ranges, so the plot also shows the coverage.
    """
    from matplotlib import ticker

    from fitnets_tf import report  # matplotlib, Agg backend

    fig, ax = report.plt.subplots(figsize=(6.4, 4.8))
    ok = [r for r in rows if r[OBJECTIVE] is not None]
    failed = [r for r in rows if r["status"] in ("FAILED", "INVALID")]
    if ok:
        points = ax.scatter([r["kd_lambda"] for r in ok], [r["temperature"] for r in ok],
                            c=[r[OBJECTIVE] for r in ok], cmap="viridis", s=90,
                            edgecolors="k", zorder=3)  # fmt: skip
        fig.colorbar(points, ax=ax, label="validation accuracy (best epoch)")
        for r in ok:
            ax.annotate(f"{r[OBJECTIVE]:.3f}", (r["kd_lambda"], r["temperature"]),
                        textcoords="offset points", xytext=(6, 5), fontsize=7)  # fmt: skip
        best = max(ok, key=lambda r: r[OBJECTIVE])
        ax.scatter([best["kd_lambda"]], [best["temperature"]], marker="*", s=420,
                   facecolors="none", edgecolors="red", linewidths=1.5, label="best", zorder=4)  # fmt: skip
    for r in (r for r in rows if r["defaults"]):
        ax.scatter([r["kd_lambda"]], [r["temperature"]], marker="s", s=220, facecolors="none",
                   edgecolors="black", label="defaults (first trial)", zorder=4)  # fmt: skip
    if failed:
        ax.scatter([r["kd_lambda"] for r in failed], [r["temperature"] for r in failed],
                   marker="x", c="red", s=70, label="failed (NaN)", zorder=3)  # fmt: skip
    for axis, name, label in ((ax.xaxis, "kd_lambda", "λ0 (kd_lambda)"),
                              (ax.yaxis, "temperature", "τ (temperature)")):  # fmt: skip
        (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 3, 5)))
        axis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(ticker.NullFormatter())
        axis.set_label_text(label)
        if space is not None:
            low, high = getattr(space, name)
            (ax.set_xlim if axis is ax.xaxis else ax.set_ylim)(low / 1.1, high * 1.1)
    ax.set_title(title or "FitNets stage 2: validation accuracy per trial", fontsize=10)
    ax.legend(fontsize=8, loc="best", markerscale=0.5)
    fig.tight_layout()
    report._save(fig, path)


# -- the whole search --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """How to search (everything else comes from the experiment's config).

    Attributes:
        oracle: one of ``ORACLES``.
        max_trials: trials in all (raising it on a re-run adds trials).
        trial_epochs: stage-2 epochs per trial (Hyperband: the most a trial gets). λ decays
            from λ0 to its end value over these epochs, as over ``kd_epochs`` in a full run.
        space: the :class:`SearchSpace`.
        retrain_hints_per_trial: every trial runs stage 1 itself, with its learning rate.
    """

    oracle: str = "random"
    max_trials: int = 8
    trial_epochs: int = 3
    space: SearchSpace = SearchSpace()
    retrain_hints_per_trial: bool = False

    def validate(self) -> None:
        problems = []
        if self.oracle not in ORACLES:
            problems.append(f"unknown oracle {self.oracle!r} (valid: {', '.join(ORACLES)})")
        for name in ("max_trials", "trial_epochs"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if problems:
            raise SearchError("Invalid tuning options: " + "; ".join(problems) + ".")


# Besides those the experiment's fingerprint leaves out, what does not change a trial's result.
_FREE = ("data_dir", "modes", "kd_epochs", "strategy", "jit_compile", "deterministic")


def describe(config: experiment.ExperimentConfig, options: TuneOptions) -> dict:
    """What defines a search's trials: stored as ``search.json``, compared on every re-run."""
    fields = {k: v for k, v in config.fingerprint().items() if k not in _FREE}
    return json.loads(json.dumps({
        "space": options.space.describe(config.hparams),
        "oracle": options.oracle,
        "trial_epochs": options.trial_epochs,
        "retrain_hints_per_trial": options.retrain_hints_per_trial,
        "mode": config.modes[0],
        "config": fields,
    }))  # fmt: skip


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
    path = workdir / "search.json"
    if not path.is_file():
        if write:
            rundir.write_json(path, description)
        return
    old, new = _flatten(json.loads(path.read_text())), _flatten(description)
    diffs = [f"{k}: {old.get(k, '(absent)')} → {new.get(k, '(absent)')}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]  # fmt: skip
    if diffs:
        raise SearchError(
            f"{str(workdir)!r} holds a different search ({'; '.join(diffs)}). Resuming it would "
            "mix the results of two searches: use a new --workdir, or delete this one to start "
            "over, or go back to the flags it was started with (its flags.txt)."
        )


def distributed_role() -> str:
    """``"single"``, or keras-tuner's distributed role, by its rule (``KERASTUNER_*``)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _teacher_file(path: str | os.PathLike) -> str:
    path = pathlib.Path(path).expanduser()
    return str(path / "teacher" / "teacher.keras" if path.is_dir() else path)


def _wait_for(path: pathlib.Path, what: str, log, timeout: float = STAGE_ONE_WAIT_S) -> None:
    if path.is_file():
        return
    log(f"Waiting for the chief's {what} ({path}).")
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise SearchError(f"No {path} after {timeout:.0f} s: is the chief running?")
        time.sleep(1.0)


def stage_one(
    config: experiment.ExperimentConfig,
    options: TuneOptions,
    workdir: pathlib.Path,
    log=print,
    description: dict | None = None,
) -> dict:
    """Trains the teacher (unless ``config.teacher_path``) and stage 1, once per workdir.

    Runs :func:`fitnets_tf.experiment.run` on ``workdir/stage1`` with the first mode and the
    stages needed, then records ``description`` (see :func:`check_search`) and the teacher
    and student files (``workdir/stage1.json``); a re-run, or a worker, reuses them. The
    description is recorded only now, so a search that failed before its first trial can be
    started again with other flags.
    """
    marker = workdir / "stage1.json"
    if distributed_role() == "worker":
        _wait_for(marker, "stage 1", log)
    if marker.is_file():
        return json.loads(marker.read_text())
    _check_teacher(config)
    mode = config.modes[0]
    hints = mode == "fitnet" and not options.retrain_hints_per_trial
    stages = ("teacher",) if config.teacher_path is None else ()
    stages += ("hints",) if hints else ()
    stage1 = workdir / "stage1"
    if stages:
        log(f"== stage 1, once for all trials: {', '.join(stages)} ({stage1})")
        # kd_epochs=0: stage 2 is the trials' (and it may change between calls).
        once = dataclasses.replace(config, modes=(mode,), stages=stages, kd_epochs=0,
                                   measure_latency=False)  # fmt: skip
        experiment.run(once, stage1, log=log)
    record = {
        "teacher_path": _teacher_file(config.teacher_path or stage1),
        "student_path": str(stage1 / mode / "hints" / "student.keras") if hints else None,
    }
    if description is not None:
        check_search(workdir, description)
    rundir.write_json(marker, record)
    return record


def _check_teacher(config: experiment.ExperimentConfig) -> None:
    if config.teacher_path is None and "teacher" not in config.stages:
        raise SearchError(
            "No teacher: give --teacher_path, or include 'teacher' in --stages to train one."
        )


def tune(
    config: experiment.ExperimentConfig,
    options: TuneOptions,
    workdir: str | os.PathLike,
    log=print,
) -> dict | None:
    """Stage 1 once, then the search; returns the summary written to ``workdir/summary.json``.

    Re-running on the same ``workdir`` resumes: finished trials are kept, an interrupted one
    runs again. With keras-tuner's ``KERASTUNER_*`` variables set, the chief serves the oracle
    (and runs stage 1 first) and workers run trials; only the chief writes the results, and a
    worker returns None.
    """
    config.validate()
    options.validate()
    mode = config.modes[0]
    if mode not in ("fitnet", "kd"):
        raise SearchError(f"Tuning λ and τ needs --mode=fitnet or kd first; got {mode!r}.")
    if config.retrain_on_all or config.validation_size == 0:
        raise SearchError("Tuning needs a validation split (never the test split): drop "
                          "--retrain_on_all and --validation_size=0.")  # fmt: skip
    workdir = rundir.prepare(workdir)
    _check_teacher(config)
    role = distributed_role()
    description = describe(config, options)
    check_search(workdir, description, write=False)  # a different search stops here

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = "mixed_float16" if config.mixed_precision else "float32"
    keras.config.set_dtype_policy(policy)
    record = stage_one(config, options, workdir, log, description)
    check_search(workdir, description, write=False)  # a worker: the chief's search

    hypermodel = _hypermodel(config, options, record, policy)
    strategy = None
    if config.strategy != "default":
        from fitnets_tf import distribute

        strategy = distribute.make_strategy(config.strategy)
    tuner = make_tuner(
        hypermodel, oracle=options.oracle, max_trials=options.max_trials,
        trial_epochs=options.trial_epochs, directory=workdir, seed=config.seed,
        distribution_strategy=strategy,
    )  # fmt: skip
    if role != "worker":
        _requeue_interrupted(tuner.oracle)
    log(f"== search: {options.oracle}, {options.max_trials} trials of {options.trial_epochs} "
        f"epoch(s) over {', '.join(options.space.names())} ({role})")  # fmt: skip
    inputs = {}
    if role != "chief":  # the chief only serves the oracle
        data = data_lib.load(
            config.dataset, data_dir=config.data_dir, batch_size=config.batch_size,
            seed=config.seed, augment=config.augment, limit=config.limit,
            validation_size=config.validation_size,
        )  # fmt: skip
        inputs = dict(x=data.train, validation_data=data.validation, data_epoch=data.epoch)
    error = None
    try:
        tuner.search(epochs=options.trial_epochs, verbose=experiment._verbose(), **inputs)
    except RuntimeError as e:  # the oracle stops after too many consecutive failed trials
        if "consecutive failures" not in str(e):
            raise
        error = e
    if role == "worker":
        return None
    summary = write_results(tuner.oracle, options, workdir, record["teacher_path"])
    if error is not None:
        raise SearchError(
            f"The search stopped: {str(error).splitlines()[0]} (results so far are in "
            f"{workdir}). Narrow the ranges (a high λ0 or learning rate diverges) and re-run."
        )
    return summary


def _hypermodel(config, options: TuneOptions, record: dict, policy: str) -> FitNetsHyperModel:
    spec = data_lib.DATASETS[config.dataset]
    build = dict(input_shape=spec.input_shape, num_classes=spec.num_classes,
                 kernel_initializer=experiment._kernel_initializer(config.init),
                 max_norm=config.max_norm)  # fmt: skip
    hint_layer, guided_layer = config.pair()
    retrain = config.modes[0] == "fitnet" and options.retrain_hints_per_trial
    return FitNetsHyperModel(
        record["teacher_path"],
        lambda: models.build(config.student, seed=config.seed + 1, **build),
        record["student_path"],
        hparams=config.hparams, space=options.space, hint_layer=hint_layer,
        guided_layer=guided_layer, hints_epochs=config.hints_epochs if retrain else 0,
        seed=config.seed, dtype_policy=policy, compile_kwargs={"jit_compile": config.jit_compile},
    )  # fmt: skip


def _requeue_interrupted(oracle) -> None:
    """Queues every RUNNING trial to run again: nothing runs before the oracle starts.

    keras-tuner re-queues the trials its ``oracle.json`` lists as ongoing; a kill between a
    trial's ``trial.json`` and that file would leave the trial RUNNING and never re-run.
    """
    for trial_id, trial in oracle.trials.items():
        if trial.status == "RUNNING" and trial_id not in oracle._retry_queue:
            oracle._retry_queue.append(trial_id)


def write_results(oracle, options: TuneOptions, workdir: pathlib.Path, teacher_path=None) -> dict:
    """``results.csv``, ``results.png`` and ``summary.json`` from the oracle's trials."""
    rows = trial_rows(oracle, options.space, options.trial_epochs)
    for row in rows:
        row["seconds"] = _trial_seconds(workdir / PROJECT / f"trial_{row['trial_id']}")
    write_csv(rows, workdir / "results.csv")
    title = f"{options.oracle} search, {len(rows)} trials of {options.trial_epochs} epoch(s)"
    plot_results(rows, workdir / "results.png", title, options.space)
    best = best_trial(oracle)
    by_id = {r["trial_id"]: r for r in rows}
    summary = {
        "objective": OBJECTIVE,
        "oracle": options.oracle,
        "completed": sum(r[OBJECTIVE] is not None for r in rows),
        "failed": sum(r["status"] == "FAILED" for r in rows),
        "best": by_id[best.trial_id] if best else None,
        "defaults": next((r for r in rows if r["defaults"]), None),
        "teacher_path": teacher_path,
        "trials": rows,
    }
    rundir.write_json(workdir / "summary.json", summary)
    return summary


def _trial_seconds(trial_dir: pathlib.Path) -> float | None:
    """Wall time of the trial's last run, from its ``runs.jsonl``."""
    path = trial_dir / "runs.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    if len(events) < 2 or events[-1]["event"] != "end" or events[-2]["event"] != "start":
        return None
    return round(events[-1]["time"] - events[-2]["time"], 1)


def table(rows: list[dict]) -> str:
    """The trials, best first, as fixed-width text (the CLI prints it last)."""
    rows = sorted(rows, key=lambda r: -1.0 if r[OBJECTIVE] is None else r[OBJECTIVE], reverse=True)
    names = [k for k in rows[0] if k in ("kd_lambda", "temperature", *OPTIONAL)] if rows else []
    lines = [("trial", *names, "val acc", "status")]
    for r in rows:
        cells = ["-" if r[n] is None else (str(r[n]) if isinstance(r[n], bool) else f"{r[n]:.4g}")
                 for n in names]  # fmt: skip
        acc = "-" if r[OBJECTIVE] is None else f"{r[OBJECTIVE]:.4f}"
        note = " (defaults)" if r["defaults"] else ""
        lines.append((r["trial_id"], *cells, acc, r["status"] + note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
                     for line in lines)  # fmt: skip
