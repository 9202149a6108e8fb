"""The two-stage FitNets trainer as a ``keras.Model``.

``Distiller`` wraps a frozen teacher and a student and overrides ``train_step`` /
``test_step`` for the paper's two phases, chosen at ``compile``:

* ``phase="hints"`` (stage 1): trains the student up to ``guided_layer`` and the regressor to
  predict the teacher's ``hint_layer`` (:func:`fitnets_tf.losses.hint_loss`);
* ``phase="kd"`` (stage 2): trains the whole student on
  ``H(y, P_S) + λ · H(P_T^τ, P_S^τ)`` (:func:`fitnets_tf.losses.cross_entropy`,
  :func:`fitnets_tf.losses.kd_loss`), λ annealed by
  :class:`fitnets_tf.callbacks.LambdaAnnealing`.

Calling the Distiller runs the student, so ``predict``/``evaluate`` report on the student.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from fitnets_tf import first_batches, losses, recipes
from fitnets_tf.distiller_saving import SavedInParts
from fitnets_tf.errors import ConfigError, HintShapeError  # noqa: F401  (HintShapeError: re-exported)
from fitnets_tf.fit_checks import CheckedRuns
from fitnets_tf.hint_flags import pair_name
from fitnets_tf.hint_path import (  # noqa: F401  (make_hint_path: re-exported)
    HintTaps,
    check_weights,
    make_hint_path,
    make_regressors,
    resolve_pairs,
    tap,
    valid_names,
)
from fitnets_tf.models import graph_teachers
from fitnets_tf.models.logits import (
    build_like,
    check_batched,
    check_class_logits,
    check_pair,
    ends,
    for_distilling,
)
from fitnets_tf.models.traced import as_graphs
from fitnets_tf.notes import note
from fitnets_tf.replica_gradients import clipped_across_replicas
from fitnets_tf.step_inputs import CACHED_HINT, CACHED_LOGITS, IMAGES, images_of  # noqa: F401

PHASES = ("hints", "kd")


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


class Distiller(SavedInParts, CheckedRuns, keras.Model):
    """FitNets: hint training, then knowledge distillation, of ``student`` from ``teacher``.

    Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.

    Args:
        teacher: trained ``keras.Model`` returning logits; frozen here and always
            called with ``training=False``.
        student: ``keras.Model`` returning logits, as many as the teacher's. A
            final softmax of either is left out (and said so): the soft targets are computed
            from logits, at temperature τ (:attr:`teacher`/:attr:`student` are then models
            sharing the given ones' layers up to it; a student's softmax must be a layer of
            its own, not a Dense's activation). The layers of models nested in either (a
            backbone in a ``Sequential``, a block that is a model) are brought to the top
            level (:func:`fitnets_tf.models.nesting.flattened`, weights shared), so a hint or
            guided layer inside them is named like any other. With hints, a subclassed model
            is taken as the graph of its own layers (:func:`fitnets_tf.models.traced.as_graph`).
        hint_layer: name of the teacher layer whose output guides the student (stage 1).
        guided_layer: name of the student layer that learns to predict the hint through the
            regressor. Both are needed for ``phase="hints"`` only.
        hints: several pairs instead: ``[(hint_layer, guided_layer), ...]``, one regressor
            each; stage 1 then trains the student up to its deepest guided layer on
            ``Σ wᵢ · L_HT,ᵢ`` and logs each term as ``hint_loss/<hint>:<guided>``. ``"auto"``:
            the paper's rule picks one pair (:func:`fitnets_tf.hint_choice.auto_pair`: printed,
            kept in :attr:`auto_pair`; an ONNX teacher loaded again, :attr:`teacher`, fetches it).
        hint_weights: the ``wᵢ`` of ``hints`` (default: 1 each).
        temperature: τ of the soft targets (paper: 3).
        kd_lambda: λ weighting the soft term (paper: 4, annealed to 1).
        tau_squared: multiply the soft term by τ² (off in the paper).
        regressor: ``"auto"`` (the paper: convolutional, valid kernel ``N_g − N_h + 1``, the
            hint's non-linearity), ``"linear"``, or a Keras layer of your own mapping the
            guided output to the hint shape (a list of them, one per pair, with ``hints``).
        regressor_initializer: kernel initializer of the automatic regressors (paper code:
            U(−0.05, 0.05)); a seeded one gets seed + i for the i-th pair.
        regressor_max_norm: bound of each automatic regressor kernel's L2 norm after every
            update, as the paper's nets' ``max_norm`` (its code: 0.9). None: no bound.
        label_smoothing: ε of stage 2's cross-entropy on the labels (target ``(1 − ε)·y +
            ε/K``; not of the soft term): 0 (none, the paper) to < 1.
        check_teacher: False: ``fit``'s first labelled images do not check the teacher
            (:mod:`fitnets_tf.fed_teacher`). ``check_scaling``, its older name, wins if given.

    Inputs are images, or ``{"images": x, "teacher_logits": t, "teacher_hint": h}`` with
    the teacher's outputs precomputed (:mod:`fitnets_tf.teacher_cache`; either key may be
    missing; ``h`` is a tuple of hints in pair order for several pairs): a phase then skips
    the teacher's forward pass when its output is given.

    The regressor is built here, so shape problems surface at construction, before any data
    is read. λ and τ are non-trainable variables: a callback's ``assign`` reaches the compiled
    step, where a Python float would be frozen at trace time.
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        hint_layer: str | None = None,
        guided_layer: str | None = None,
        temperature: float = 3.0,
        kd_lambda: float = 4.0,
        tau_squared: bool = False,
        regressor="auto",
        regressor_initializer=None,
        hints=None,
        hint_weights=None,
        label_smoothing: float = 0.0,
        regressor_max_norm: float | None = None,
        check_teacher: bool = True,
        **kwargs,
    ):
        if "dtype" not in kwargs and getattr(student, "compute_dtype", None) == "float16":
            kwargs["dtype"] = student.dtype_policy  # Keras scales by the model's, not the global
        check_teacher = kwargs.pop("check_scaling", check_teacher)  # its older name
        super().__init__(**kwargs)
        given_teacher = teacher
        if (hints, hint_layer, guided_layer) != (None, None, None):
            # Hints name layers: a subclassed model becomes the graph of its own layers.
            teacher, student = as_graphs(teacher, student)
        check_pair(teacher, student)  # before a softmax is looked for at the one output
        # A hint is often inside a backbone model, and so is a softmax (an application with its
        # classifier): their layers become taps by name, and a nested softmax is seen.
        teacher, student = for_distilling(teacher, "teacher"), for_distilling(student, "student")
        self.hints, self.auto_pair = resolve_pairs(teacher, student, hints, hint_layer, guided_layer)
        if self.auto_pair is not None:
            note(f"hints=auto: {pair_name(*self.hints[0])} ({self.auto_pair.reason}).")
        teacher, self.hints = graph_teachers.fetching(teacher, self.hints, self.auto_pair)
        self.teacher, self.student = teacher, student
        # A subclassed (or unbuilt) teacher's softmax is not in a graph: its first outputs tell.
        self._teacher_unchecked = ends(teacher) is None
        self._answers_unchecked, self._fit_inputs = bool(check_teacher), None
        self.hint_weights = check_weights(hint_weights, len(self.hints))
        # The one-pair names, as before several pairs (the first pair).
        self.hint_layer, self.guided_layer = self.hints[0] if self.hints else (None, None)
        self.tau_squared = bool(tau_squared)
        if problem := losses.label_smoothing_problem(label_smoothing):
            raise ConfigError(f"{problem} (0: none; 0.1 is common).")
        self.label_smoothing = float(label_smoothing)
        self.temperature = keras.Variable(losses.checked_weight("temperature", temperature),
                                          dtype="float32", trainable=False, name="temperature")
        self.kd_lambda = keras.Variable(
            losses.checked_weight("kd_lambda", kd_lambda, allow_zero=True), dtype="float32",
            trainable=False, name="kd_lambda",
        )  # fmt: skip
        self._taps = HintTaps()
        # The first pair's regressor keeps its attribute (and checkpoint key) of one-pair runs.
        self.regressor, self.more_regressors = None, []
        if self.hints:
            self.regressor, *self.more_regressors = make_regressors(
                teacher, student, self.hints, regressor, regressor_initializer, regressor_max_norm
            )
            self._taps.teacher_hint = tap(teacher, [h for h, _ in self.hints], "teacher_hint")
            self._taps.student_guided = tap(student, [g for _, g in self.hints], "student_guided")
        self.phase = None
        names = ["loss", "hint_loss", "ce_loss", "kd_loss", "kd_lambda", "temperature"]
        if len(self.hints) > 1:
            names += [f"hint_loss/{pair_name(*pair)}" for pair in self.hints]
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        build_like(student, teacher)
        # Last: a Distiller that fails to build leaves it untouched. The given model too: the
        # Distiller's may be a copy (softmax left out) that shares its layers but one.
        teacher.trainable = given_teacher.trainable = False
        # Built models make a built Distiller: save_weights, checkpoints and keras-tuner then
        # work before the first fit (a subclassed Model is otherwise "unbuilt" until called).
        self.built = teacher.built and student.built

    def __setattr__(self, name, value):
        # λ and τ are variables that the compiled step reads: a number set later is assigned
        # to them (checked), where putting it in their place would never reach the step.
        current = self.__dict__.get(name)
        if name in ("kd_lambda", "temperature") and isinstance(current, keras.Variable):
            current.assign(losses.checked_weight(name, value, allow_zero=name == "kd_lambda"))
            return
        super().__setattr__(name, value)

    @property
    def trainable_weights(self):
        """The weights the optimizer updates, in the order it was built on (Keras' meaning): in
        phase ``"hints"`` the student up to its guided layer and the regressors, in ``"kd"`` the
        student's. Keras' ``fit`` ends with ``optimizer.finalize_variable_values()`` of them,
        which under ``use_ema=True`` pairs them by position with its averages: all the weights
        would put a regressor's average in a later student layer, and a teacher made trainable
        again after the Distiller froze it would take the student's (or fail on their shapes)."""
        variables = self._phase_variables() if self.phase and self.trainable else None
        return variables or super().trainable_weights

    @property
    def non_trainable_weights(self):
        trained = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trained]

    @property
    def regressors(self) -> list:
        """The regressors of :attr:`hints`, in pair order."""
        return [self.regressor, *self.more_regressors] if self.regressor is not None else []

    def call(self, inputs, training=None):
        return self.student(images_of(inputs), training=training)

    # -- compile -----------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", phase: str = "kd", metrics=None, **kwargs):
        """Configures one phase.

        Args:
            optimizer: as in ``keras.Model.compile``. One already used is replaced by a fresh
                copy of its settings, at the rate it had when first given here (:func:`fitnets_tf.
                recipes.unused_optimizer`): no slot, step count or rate a callback set leaks on.
            phase: ``"hints"`` (stage 1) or ``"kd"`` (stage 2).
            metrics: metrics of the student's logits against the labels (``"kd"`` phase).
            **kwargs: passed to ``keras.Model.compile`` (``jit_compile``,
                ``steps_per_execution``...). ``loss`` is not accepted: the phase defines it.
        """
        if phase not in PHASES:  # compile(optimizer, loss), as for a Model, lands here
            raise ValueError(f"`phase` must be one of {PHASES} (each phase defines its own "
                             f"loss: pass none). Received: phase={phase!r}")  # fmt: skip
        if kwargs.get("loss") is not None:
            raise ValueError("Distiller defines its own loss per phase; do not pass `loss`.")
        if phase == "hints" and self.regressor is None:
            raise ValueError(
                "phase='hints' needs hint pairs given to the Distiller: "
                "hints=[(hint_layer, guided_layer), ...], hints='auto', or hint_layer and "
                "guided_layer. " + valid_names(self.teacher, self.student)
            )
        if isinstance(optimizer, keras.optimizers.Optimizer):
            optimizer = recipes.unused_optimizer(optimizer)
        self.phase = phase
        for regressor in self.regressors:
            # Stage 2 drops the regressors: they take no gradient and no optimizer slots.
            regressor.trainable = phase == "hints"
        super().compile(optimizer=optimizer, metrics=metrics if phase == "kd" else None, **kwargs)
        variables = self._phase_variables()
        if variables:
            with self.distribute_strategy.scope():
                self.optimizer.build(variables)
        # else: a subclassed student not built yet; Keras builds it, then the optimizer, on
        # the first batch (fit's symbolic build).

    def _phase_variables(self):
        if self.phase == "hints":
            variables = list(self._taps.student_guided.trainable_variables)
            for regressor in self.regressors:
                variables += regressor.trainable_variables
            return variables
        return self.student.trainable_variables

    def _build_student_on(self, x) -> list:
        """Builds an unbuilt (subclassed) student, and the optimizer, for batches like ``x``.

        Called while the train step is traced. Symbolically, so that the traced step holds no
        extra forward pass; Keras defers this build to the same moment for its own models.
        """
        images = images_of(x)
        self.student.compute_output_spec(keras.KerasTensor(images.shape, images.dtype))
        variables = self._phase_variables()
        if not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(variables)
        return variables

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:  # Keras resets the iterator after
            # fit's first build reads its training data; evaluate's and each validation's, not.
            fit_inputs, self._fit_inputs = self._fit_inputs, None
            first_batches.check_first_batch(self, iterator, fit_inputs)
        # Keras' TF trainer pulls one batch to build unbuilt state. Under
        # MultiWorkerMirroredStrategy (Keras 3.15) that batch is a PerReplica value it fails to
        # reduce. The Distiller's models, regressor and optimizer are built by __init__ and
        # compile(), so the batch is only needed for compiled metrics (stage 2's accuracy),
        # and for them only its shapes: this worker's part of it has them.
        metrics = self._compile_metrics
        if self.built and self.optimizer.built and (metrics is None or metrics.built):
            return
        if iterator is not None and isinstance(
            self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            data_batch, iterator = first_batches.first_batch(iterator, self.distribute_strategy), None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        names = ([n for n in self._trackers if n == "loss" or n.startswith("hint_loss")]
                 if self.phase == "hints" else ["loss", "ce_loss", "kd_loss"])  # fmt: skip
        tracked = [self._trackers[n] for n in names]
        if self.phase == "kd":
            tracked += [self._trackers["kd_lambda"], self._trackers["temperature"]]
            if self._compile_metrics is not None:
                tracked.append(self._compile_metrics)
        return tracked

    # -- steps -------------------------------------------------------------------------------

    def _phase_losses(self, x, y, sample_weight, training: bool):
        """Returns ``(loss_for_gradients, logged terms, student logits or None)``."""
        cached = x if isinstance(x, dict) else {}
        x = images_of(x)
        check_batched(x, self.teacher)  # at trace time: shapes only
        examples = losses.step_examples(x) if training else None  # gradients only
        if self.phase == "hints":
            if CACHED_HINT in cached:  # no teacher pass at all
                hints = cached[CACHED_HINT]
            else:
                hints = self._taps.teacher_hint(x, training=False)
            return (*self._hint_losses(_as_list(hints), x, sample_weight, training, examples), None)
        if y is None:
            raise ValueError("phase='kd' needs labels: the dataset must yield (images, labels).")
        if CACHED_LOGITS in cached:
            teacher_logits = cached[CACHED_LOGITS]
        else:
            teacher_logits = self.teacher(x, training=False)
        student_logits = self.student(x, training=training)
        check_class_logits(tuple(student_logits.shape), "student", self.student.name)  # subclassed
        ce = losses.cross_entropy(y, student_logits, self.label_smoothing)
        ce, ce_scaled = losses.per_replica_mean(ce, sample_weight, examples)
        kd = losses.kd_loss(teacher_logits, student_logits, self.temperature, self.tau_squared)
        kd, kd_scaled = losses.per_replica_mean(kd, sample_weight, examples)
        lam = ops.convert_to_tensor(self.kd_lambda)
        terms = {"loss": ce + lam * kd, "ce_loss": ce, "kd_loss": kd}
        scaled, terms = losses.with_regularization(
            ce_scaled + lam * kd_scaled, terms, [self.student]
        )
        return scaled, terms, student_logits

    def _hint_losses(self, hints, x, sample_weight, training: bool, examples=None):
        """``Σ wᵢ · L_HT,ᵢ`` (scaled for gradients) and the logged terms."""
        guided = _as_list(self._taps.student_guided(x, training=training))
        total = scaled_total = 0.0
        terms = {}
        for pair, weight, hint, g, regressor in zip(
            self.hints, self.hint_weights, hints, guided, self.regressors, strict=True
        ):
            per_example = losses.hint_loss(hint, regressor(g, training=training))
            mean, scaled = losses.per_replica_mean(per_example, sample_weight, examples)
            terms[f"hint_loss/{pair_name(*pair)}"] = mean
            # One pair of weight 1 computes exactly what it did before several pairs.
            total = total + (mean if weight == 1.0 else weight * mean)
            scaled_total = scaled_total + (scaled if weight == 1.0 else weight * scaled)
        terms = {"loss": total, "hint_loss": total, **(terms if len(self.hints) > 1 else {})}
        trained = [self._taps.student_guided, *self.regressors]
        return losses.with_regularization(scaled_total, terms, trained)

    def _update_trackers(self, terms, batch_size, training: bool):
        for name, value in terms.items():
            self._trackers[name].update_state(value, sample_weight=batch_size)
        if self.phase == "kd" and training:
            self._trackers["kd_lambda"].update_state(self.kd_lambda)
            self._trackers["temperature"].update_state(self.temperature)

    def _finish_step(self, x, y, sample_weight, terms, logits, training: bool):
        self._update_trackers(terms, ops.shape(keras.tree.flatten(x)[0])[0], training)
        if self.phase == "kd" and self._compile_metrics is not None:
            self._compile_metrics.update_state(y, logits, sample_weight=sample_weight)
        logs = self.get_metrics_result()
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 reduces step outputs across workers with a mean over axis 0, which
            # fails on scalars; a length-1 vector reduces to the same value.
            logs = {k: ops.reshape(v, (1,)) for k, v in logs.items()}
        return logs

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self._phase_variables() or self._build_student_on(x)
        with tf.GradientTape() as tape:
            loss, terms, logits = self._phase_losses(x, y, sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)  # loss scaling under mixed_float16
        grads = clipped_across_replicas(self.optimizer, tape.gradient(scaled, variables))
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return self._finish_step(x, y, sample_weight, terms, logits, training=True)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, terms, logits = self._phase_losses(x, y, sample_weight, training=False)
        logs = self._finish_step(x, y, sample_weight, terms, logits, training=False)
        # λ and τ are training-schedule values: a val_kd_lambda column would only repeat them.
        return {k: v for k, v in logs.items() if k not in ("kd_lambda", "temperature")}
