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

import dataclasses

import keras
import tensorflow as tf
from keras import ops

from fitnets_tf import losses
from fitnets_tf import regressor as regressor_lib
from fitnets_tf.errors import ConfigError, HintShapeError

PHASES = ("hints", "kd")
# Keys of precomputed teacher outputs fed with the images (fitnets_tf.teacher_cache).
IMAGES, CACHED_LOGITS, CACHED_HINT = "images", "teacher_logits", "teacher_hint"


@dataclasses.dataclass
class _Taps:
    """Sub-models that share the teacher's and student's weights.

    Held in a plain object so Keras does not track them as layers of the Distiller: their
    weights already belong to ``teacher`` and ``student``.
    """

    teacher_hint: keras.Model | None = None
    student_guided: keras.Model | None = None


def _check_functional(model, role: str):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{role}` must be a keras.Model. Received: {type(model).__name__}")
    try:
        model.inputs  # noqa: B018  (Functional and built Sequential models have them)
    except (AttributeError, ValueError) as e:
        raise TypeError(
            f"`{role}` must be a Functional (or built Sequential) keras.Model so that its layers "
            f"can be tapped by name; got a subclassed {type(model).__name__}. Wrap it with "
            "keras.Model(inputs, outputs) or pass no hint_layer/guided_layer."
        ) from e


def _inputs(model: keras.Model):
    # A lone input unwrapped, so a tap called with a tensor matches its input structure.
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _layer(model: keras.Model, name: str, role: str):
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise ConfigError(
            f"Unknown {role} '{name}' in model '{model.name}'. Valid layer names: "
            f"{', '.join(names)}."
        )
    return model.get_layer(name)


def _build_like(student: keras.Model, teacher: keras.Model) -> None:
    """Builds a subclassed student on the teacher's input shape, when that shape is known.

    An unbuilt model has no variables yet, so there would be nothing to optimise; calling it
    once on zeros creates them (as Keras' first ``fit`` batch would).
    """
    if student.built:
        return
    try:
        shape = tuple(teacher.inputs[0].shape[1:])
    except (AttributeError, ValueError, IndexError):
        return  # a subclassed teacher too: the first batch builds both
    if all(d is not None for d in shape):
        student(ops.zeros((1, *shape)), training=False)


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    ok = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"`{name}` must be a number {bound}. Received: {name}={value!r}")
    return float(value)


def _per_replica_mean(per_example, sample_weight=None):
    """Batch mean of a per-example loss, and the same divided by the replica count.

    Gradients of replicas are summed by ``tf.distribute``, so the value we differentiate is the
    local mean / replicas; the logged value stays the local mean (metrics aggregate replicas).
    """
    if sample_weight is not None:
        per_example = per_example * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
    mean = ops.mean(per_example)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return mean, mean / float(replicas)


def _valid_names(teacher: keras.Model, student: keras.Model) -> str:
    return (
        f"Teacher layers: {', '.join(layer.name for layer in teacher.layers)}. "
        f"Student layers: {', '.join(layer.name for layer in student.layers)}."
    )


def make_hint_path(
    teacher: keras.Model,
    student: keras.Model,
    hint_layer: str,
    guided_layer: str,
    regressor="auto",
    initializer=None,
) -> tuple[keras.Model, keras.Model, keras.layers.Layer]:
    """The stage-1 path: teacher up to the hint, student up to the guided layer, regressor.

    The two sub-models share the weights of ``teacher`` and ``student`` and compute nothing
    past the tapped layers. Nothing is modified, so this also serves to check a pair before
    any training: it raises ``ConfigError`` (:class:`~fitnets_tf.errors.HintShapeError` for
    shapes) naming both layers, their shapes and the valid layer names.

    Args:
        teacher, student: Functional models.
        hint_layer, guided_layer: layer names.
        regressor: ``"auto"``, ``"linear"`` or a Keras layer (see :class:`Distiller`).
        initializer: kernel initializer of an automatic regressor.
    """
    _check_functional(teacher, "teacher")
    _check_functional(student, "student")
    hint = _layer(teacher, hint_layer, "hint_layer")
    guided = _layer(student, guided_layer, "guided_layer")
    guided_shape = tuple(guided.output.shape[1:])
    hint_shape = tuple(hint.output.shape[1:])
    if isinstance(regressor, keras.layers.Layer):
        if not regressor.built:
            regressor.build((None, *guided_shape))
        out = tuple(regressor.compute_output_shape((None, *guided_shape))[1:])
        if out != hint_shape:
            raise HintShapeError(
                f"The given regressor maps the guided layer '{guided_layer}' {guided_shape} to "
                f"{out}, but the hint layer '{hint_layer}' is {hint_shape}."
            )
    else:
        regressor_lib.check_shapes(
            guided_shape,
            hint_shape,
            guided_layer=guided_layer,
            hint_layer=hint_layer,
            valid=_valid_names(teacher, student),
        )
        regressor = regressor_lib.build_regressor(
            guided_shape,
            hint_shape,
            regressor_lib.hint_nonlinearity(hint),
            kind=regressor,
            initializer=initializer,
        )
    teacher_hint = keras.Model(_inputs(teacher), hint.output, name="teacher_hint")
    student_guided = keras.Model(_inputs(student), guided.output, name="student_guided")
    return teacher_hint, student_guided, regressor


class Distiller(keras.Model):
    """FitNets: hint training, then knowledge distillation, of ``student`` from ``teacher``.

    Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.

    Args:
        teacher: trained Functional ``keras.Model`` returning logits; frozen here and always
            called with ``training=False``.
        student: Functional ``keras.Model`` returning logits.
        hint_layer: name of the teacher layer whose output guides the student (stage 1).
        guided_layer: name of the student layer that learns to predict the hint through the
            regressor. Both are needed for ``phase="hints"`` only.
        temperature: τ of the soft targets (paper: 3).
        kd_lambda: λ weighting the soft term (paper: 4, annealed to 1).
        tau_squared: multiply the soft term by τ² (off in the paper).
        regressor: ``"auto"`` (the paper: convolutional, valid kernel ``N_g − N_h + 1``, the
            hint's non-linearity), ``"linear"``, or a Keras layer of your own mapping the
            guided output to the hint shape.
        regressor_initializer: kernel initializer of an automatic regressor (paper code:
            U(−0.05, 0.05)).

    Inputs are images, or ``{"images": x, "teacher_logits": t, "teacher_hint": h}`` with
    the teacher's outputs precomputed (:mod:`fitnets_tf.teacher_cache`; either key may be
    missing): a phase then skips the teacher's forward pass when its output is given.

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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (hint_layer is None) != (guided_layer is None):
            raise ValueError(
                "Give both `hint_layer` and `guided_layer` (for hint training) or neither "
                f"(KD only). Received: hint_layer={hint_layer!r}, guided_layer={guided_layer!r}"
            )
        self.teacher = teacher
        self.student = student
        self.hint_layer = hint_layer
        self.guided_layer = guided_layer
        self.tau_squared = bool(tau_squared)
        self.temperature = keras.Variable(
            _positive("temperature", temperature), dtype="float32", trainable=False,
            name="temperature",
        )  # fmt: skip
        self.kd_lambda = keras.Variable(
            _positive("kd_lambda", kd_lambda, allow_zero=True), dtype="float32", trainable=False,
            name="kd_lambda",
        )  # fmt: skip
        self._taps = _Taps()
        self.regressor = None
        if hint_layer is not None:
            self._taps.teacher_hint, self._taps.student_guided, self.regressor = make_hint_path(
                teacher, student, hint_layer, guided_layer, regressor, regressor_initializer
            )
        self.phase = None
        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "hint_loss", "ce_loss", "kd_loss", "kd_lambda", "temperature")
        }
        _build_like(student, teacher)
        teacher.trainable = False  # last: a Distiller that fails to build leaves it untouched
        # Built models make a built Distiller: save_weights, checkpoints and keras-tuner then
        # work before the first fit (a subclassed Model is otherwise "unbuilt" until called).
        self.built = teacher.built and student.built

    def call(self, inputs, training=None):
        if isinstance(inputs, dict) and IMAGES in inputs:
            inputs = inputs[IMAGES]
        return self.student(inputs, training=training)

    # -- compile -----------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", phase: str = "kd", metrics=None, **kwargs):
        """Configures one phase.

        Args:
            optimizer: as in ``keras.Model.compile``. An optimizer that has already been used
                is replaced by a fresh copy of its configuration, so no slot or step count
                leaks from one phase into the next.
            phase: ``"hints"`` (stage 1) or ``"kd"`` (stage 2).
            metrics: metrics of the student's logits against the labels (``"kd"`` phase).
            **kwargs: passed to ``keras.Model.compile`` (``jit_compile``,
                ``steps_per_execution``...). ``loss`` is not accepted: the phase defines it.
        """
        if phase not in PHASES:
            raise ValueError(f"`phase` must be one of {PHASES}. Received: phase={phase!r}")
        if kwargs.get("loss") is not None:
            raise ValueError("Distiller defines its own loss per phase; do not pass `loss`.")
        if phase == "hints" and self.regressor is None:
            raise ValueError(
                "phase='hints' needs `hint_layer` and `guided_layer` given to the Distiller. "
                + _valid_names(self.teacher, self.student)
            )
        if isinstance(optimizer, keras.optimizers.Optimizer) and optimizer.built:
            optimizer = optimizer.__class__.from_config(optimizer.get_config())
        self.phase = phase
        if self.regressor is not None:
            # Stage 2 drops the regressor: it takes no gradient and no optimizer slots.
            self.regressor.trainable = phase == "hints"
        super().compile(optimizer=optimizer, metrics=metrics if phase == "kd" else None, **kwargs)
        variables = self._phase_variables()
        if variables:
            with self.distribute_strategy.scope():
                self.optimizer.build(variables)
        # else: a subclassed student not built yet; Keras builds it, then the optimizer, on
        # the first batch (fit's symbolic build).

    def _phase_variables(self):
        if self.phase == "hints":
            return (
                self._taps.student_guided.trainable_variables + self.regressor.trainable_variables
            )
        return self.student.trainable_variables

    def _build_student_on(self, x) -> list:
        """Builds an unbuilt (subclassed) student, and the optimizer, for batches like ``x``.

        Called while the train step is traced. Symbolically, so that the traced step holds no
        extra forward pass; Keras defers this build to the same moment for its own models.
        """
        images = x[IMAGES] if isinstance(x, dict) else x
        self.student.compute_output_spec(keras.KerasTensor(images.shape, images.dtype))
        variables = self._phase_variables()
        if not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(variables)
        return variables

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer pulls one batch to build unbuilt state. Under
        # MultiWorkerMirroredStrategy (Keras 3.15) that batch is a PerReplica value it fails to
        # reduce. The Distiller's models, regressor and optimizer are built by __init__ and
        # compile(), so the batch is only needed for compiled metrics.
        if (
            self.built
            and self.optimizer.built
            and (self._compile_metrics is None or self._compile_metrics.built)
        ):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        names = ["loss", "hint_loss"] if self.phase == "hints" else ["loss", "ce_loss", "kd_loss"]
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
        if cached:
            x = cached[IMAGES]
        if self.phase == "hints":
            if CACHED_HINT in cached:  # no teacher pass at all
                hint = cached[CACHED_HINT]
            else:
                hint = self._taps.teacher_hint(x, training=False)
            guided = self._taps.student_guided(x, training=training)
            per_example = losses.hint_loss(hint, self.regressor(guided, training=training))
            mean, scaled = _per_replica_mean(per_example, sample_weight)
            return scaled, {"loss": mean, "hint_loss": mean}, None
        if y is None:
            raise ValueError("phase='kd' needs labels: the dataset must yield (images, labels).")
        if CACHED_LOGITS in cached:
            teacher_logits = cached[CACHED_LOGITS]
        else:
            teacher_logits = self.teacher(x, training=False)
        student_logits = self.student(x, training=training)
        ce, ce_scaled = _per_replica_mean(losses.cross_entropy(y, student_logits), sample_weight)
        kd, kd_scaled = _per_replica_mean(
            losses.kd_loss(teacher_logits, student_logits, self.temperature, self.tau_squared),
            sample_weight,
        )
        lam = ops.convert_to_tensor(self.kd_lambda)
        terms = {"loss": ce + lam * kd, "ce_loss": ce, "kd_loss": kd}
        return ce_scaled + lam * kd_scaled, terms, student_logits

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
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return self._finish_step(x, y, sample_weight, terms, logits, training=True)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, terms, logits = self._phase_losses(x, y, sample_weight, training=False)
        logs = self._finish_step(x, y, sample_weight, terms, logits, training=False)
        # λ and τ are training-schedule values: a val_kd_lambda column would only repeat them.
        return {k: v for k, v in logs.items() if k not in ("kd_lambda", "temperature")}
