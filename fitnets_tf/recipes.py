"""Training recipes: an optimizer by name, and a learning-rate schedule written in epochs.

The paper trains every stage with RMSProp at a constant learning rate. Later distillation
benchmarks use other recipes: the CIFAR-100 one of CRD (Tian et al., ICLR 2020) trains 240
epochs of SGD with momentum 0.9 and weight decay 5e-4, the learning rate ×0.1 at epochs 150,
180 and 210; transformer-era recipes use AdamW with a warm-up and a cosine decay.

A schedule is written in epochs (``constant``, ``cosine``, ``step:150,180,210``) and becomes a
Keras schedule of the optimizer's step once a stage's length and steps per epoch are known
(:func:`learning_rate`). Keras evaluates it at ``optimizer.iterations``, a variable saved with
the optimizer's state: a stage resumed from its checkpoint continues with the learning rates
of an uninterrupted one.

Weight decay is Keras' own, *decoupled*: before each update, ``w ← w − lr · weight_decay · w``
(Loshchilov & Hutter's AdamW form, for every optimizer). PyTorch's ``SGD(weight_decay=λ)``,
which the CIFAR benchmark uses, instead adds ``λ·w`` to the gradient, and momentum ``m`` then
accumulates it: at a constant learning rate its steady-state shrinkage per step is
``lr · λ / (1 − m)``, so decoupled ``λ / (1 − m)`` (5e-3 for λ = 5e-4, m = 0.9) matches it.
"""

from __future__ import annotations

import math
import numbers
import weakref

import keras

from fitnets_tf import layer_rates

OPTIMIZERS = ("rmsprop", "sgd", "adam", "adamw")
_CLASSES = {
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
}
# Variables left out of the weight decay (Keras matches these in the variable's name): biases
# and BatchNorm's γ and β. They hold few parameters and little of the capacity the decay is
# meant to limit; decaying them mostly shrinks activations (He et al. 2019, "Bag of Tricks":
# no bias decay). The CIFAR benchmark's PyTorch code decays every parameter.
NOT_DECAYED = ("bias", "gamma", "beta")
SCHEDULE_HELP = "constant, cosine, step:E1,E2,..."
# RMSProp's decay (the paper's code's) and a step schedule's factor. Another value of either
# where nothing uses it (another optimizer, no step schedule) is refused, not ignored.
RHO = 0.9
LR_DECAY = 0.1


def schedule_problem(text: str) -> str | None:
    """What is wrong with the schedule ``text``, one sentence, or None when it is valid."""
    kind, colon, epochs = str(text).partition(":")
    if kind in ("constant", "cosine") and not colon:
        return None
    if kind != "step":
        return f"unknown learning-rate schedule {text!r} (valid: {SCHEDULE_HELP})"
    try:
        milestones = [int(e) for e in epochs.split(",")]
    except ValueError:
        milestones = []
    increasing = all(a < b for a, b in zip(milestones, milestones[1:], strict=False))
    if not milestones or milestones[0] < 1 or not increasing:
        return (f"learning-rate schedule {text!r}: step: takes epochs >= 1 in increasing order, "
                "e.g. step:150,180,210")  # fmt: skip
    return None


def parse_schedule(text: str) -> tuple[str, tuple[int, ...]]:
    """``"step:150,180"`` as ``("step", (150, 180))``; ``"cosine"`` as ``("cosine", ())``."""
    problem = schedule_problem(text)
    if problem:
        raise ValueError(f"{problem}. Received: schedule={text!r}")
    kind, _, epochs = text.partition(":")
    return kind, tuple(int(e) for e in epochs.split(",")) if epochs else ()


def momentum_problem(momentum: float) -> str | None:
    """Momentum 1 keeps every past gradient forever; a negative one is no momentum at all."""
    return None if 0 <= momentum < 1 else f"momentum must be in [0, 1), got {momentum}"


def rho_problem(rho: float) -> str | None:
    """RMSProp's ρ = 1 never moves its mean of squared gradients off 0: each step would be the
    gradient over √ε, thousands of times the learning rate."""
    return None if 0 <= rho < 1 else f"rho must be in [0, 1), got {rho}"


def ema_problem(ema_momentum: float) -> str | None:
    """An average with momentum 1 never leaves the initial weights, which ``fit`` would then
    put back in place of the trained ones; 0 is no average (off)."""
    ok = isinstance(ema_momentum, numbers.Real) and 0 <= ema_momentum < 1
    return None if ok else f"ema_momentum must be in [0, 1) (0: off), got {ema_momentum!r}"


def own_optimizer_problem(hints_optimizer: str | None, optimizer: str) -> str | None:
    """Stage 1's own optimizer (another than stage 2's) runs without weight decay, where adamw
    is adam: Keras' AdamW would refuse to be built, after the teacher had trained."""
    if hints_optimizer == "adamw" and optimizer != "adamw":
        return (f"hints_optimizer adamw differs from optimizer {optimizer}, and a stage-1 "
                "optimizer of its own runs without weight decay, where adamw is adam: use "
                "hints_optimizer adam (or optimizer adamw for both stages)")  # fmt: skip
    return None


def _number_problems(**values) -> list[str]:
    """Rates and decays a caller of the library passed directly (the config checks its own)."""
    return [
        f"{name} must be a finite number {bound}, got {value!r}"
        for name, (value, bound, ok) in values.items()
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value)
    ]


def combination_problems(optimizer: str, *, momentum: float = 0.0, nesterov: bool = False,
                         weight_decay: float = 0.0, rho: float = RHO,
                         epsilon: float | None = None) -> list[str]:  # fmt: skip
    """What is wrong with these options together, one sentence each (empty: nothing).

    The optimizer's name itself is checked against :data:`OPTIMIZERS` on its own.
    """
    found = []
    if momentum and optimizer not in ("sgd", "rmsprop"):
        found.append(f"{optimizer} takes no momentum (its beta_1 is Keras' 0.9): drop it")
    if rho != RHO and optimizer != "rmsprop":
        found.append(f"rho={rho} is RMSProp's decay, which {optimizer} does not have: drop it "
                     "or use rmsprop")  # fmt: skip
    if epsilon is not None and optimizer == "sgd":
        found.append(f"epsilon={epsilon} is RMSProp's, Adam's and AdamW's, and sgd has none: "
                     "drop it")  # fmt: skip
    if nesterov and not (optimizer == "sgd" and momentum):
        found.append("nesterov needs optimizer sgd with momentum > 0")
    if optimizer == "adamw" and not weight_decay:
        found.append("adamw needs weight_decay > 0 (without it, it is adam)")
    if optimizer == "adam" and weight_decay:
        # Keras' Adam(weight_decay=...) is AdamW; PyTorch's would be L2 in the gradient.
        found.append(f"Keras' adam with weight_decay={weight_decay} decays weights as adamw "
                     "does (decoupled): use adamw, or weight_decay=0")  # fmt: skip
    return found


def unused_lr_decay_problems(lr_decay: float, schedules) -> list[str]:
    """A ``lr_decay`` of its own where none of the ``schedules`` of the stages that run is a
    step schedule, which alone uses it."""
    if lr_decay == LR_DECAY or any(s.startswith("step:") for s in schedules):
        return []
    return [f"lr_decay={lr_decay} scales step schedules only, and no stage that runs has one "
            "(lr_schedule=step:E1,...): drop it or give a step schedule"]  # fmt: skip


def ema_stopping_problems(ema_momentum: float, early_stopping_patience: int) -> list[str]:
    """EMA with early stopping: it judges and restores the trained weights of its best epoch,
    after ``fit`` has put the average in their place, which it would throw away."""
    if ema_momentum and early_stopping_patience:
        return ["--ema_momentum and --early_stopping_patience: early stopping watches and "
                "restores the trained weights, not their average, which it would discard: "
                "drop one"]  # fmt: skip
    return []


def warmup_problems(warmup_epochs: int, stage_epochs: dict[str, int]) -> list[str]:
    """A warm-up at least as long as a stage (``{name: epochs}``): it would end warming up."""
    return [f"warmup_epochs={warmup_epochs} is not shorter than {name}={epochs}: that stage "
            "would end before its warm-up does" for name, epochs in stage_epochs.items()
            if 0 < epochs <= warmup_epochs]  # fmt: skip


def learning_rate(
    base: float,
    schedule: str = "constant",
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    warmup_epochs: int = 0,
    decay: float = LR_DECAY,
):
    """The ``learning_rate`` of a Keras optimizer for one stage: a float or a schedule.

    Epochs count from the stage's start (0-based): ``step:150`` trains epochs 0–149 at ``base``
    and the rest at ``base · decay``, as the CIFAR benchmark's code does. ``cosine`` decays
    from ``base`` to 0 over the stage's epochs after the warm-up. The warm-up rises linearly
    from 0 over the first ``warmup_epochs`` epochs (0 at the first step, as Keras'
    ``CosineDecay``); under a step schedule it scales the first epochs of that schedule.

    Args:
        base: the learning rate (the peak, after any warm-up).
        schedule: ``constant``, ``cosine`` or ``step:E1,E2,...``.
        epochs: the stage's length; with ``steps_per_epoch``, needed by any schedule but a
            constant rate without warm-up (which returns the float ``base``).
        steps_per_epoch: optimizer steps (batches) per epoch.
        warmup_epochs: epochs of linear warm-up.
        decay: factor of each step of a step schedule.
    """
    kind, milestones = parse_schedule(schedule)
    found = _number_problems(learning_rate=(base, "> 0", lambda v: v > 0),
                             lr_decay=(decay, "in (0, 1]", lambda v: 0 < v <= 1))  # fmt: skip
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        found.append(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
    if found:
        raise ValueError("; ".join(found) + ".")
    if kind == "constant" and not warmup_epochs:
        return float(base)
    if epochs is None or steps_per_epoch is None:
        raise ValueError(
            f"The schedule {schedule!r} (warm-up {warmup_epochs} epochs) is a function of the "
            "step: it needs the stage's `epochs` and `steps_per_epoch`. Received: "
            f"epochs={epochs}, steps_per_epoch={steps_per_epoch}"
        )
    warmup = warmup_epochs * steps_per_epoch
    schedules = keras.optimizers.schedules
    if kind == "cosine":
        decay_steps = max(epochs - warmup_epochs, 1) * steps_per_epoch
        if not warmup:
            return schedules.CosineDecay(float(base), decay_steps)
        return schedules.CosineDecay(0.0, decay_steps, warmup_target=float(base),
                                     warmup_steps=warmup)  # fmt: skip
    rate = float(base)
    if kind == "step":
        # PiecewiseConstantDecay changes value *after* a boundary step: the last step of
        # epoch E - 1 is the boundary, so epoch E's first step has the decayed rate.
        rate = schedules.PiecewiseConstantDecay(
            [e * steps_per_epoch - 1 for e in milestones],
            [float(base) * decay**i for i in range(len(milestones) + 1)],
        )
    return LinearWarmup(rate, warmup) if warmup else rate


def build_optimizer(
    name: str,
    learning_rate,
    *,
    rho: float = RHO,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    ema_momentum: float = 0.0,
    global_clipnorm: float = 0.0,
    epsilon: float | None = None,
    scaled_variables=(),
    rate_scale: float = 1.0,
) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer ``name`` (one of :data:`OPTIMIZERS`).

    ``rho`` is RMSProp's; ``momentum`` SGD's and RMSProp's; ``nesterov`` SGD's. Adam and AdamW
    keep Keras' β1 = 0.9, β2 = 0.999. ``epsilon`` is RMSProp's, Adam's and AdamW's ε (None:
    Keras' 1e-7); RMSProp divides by ``sqrt(v + ε)``. ``weight_decay`` is decoupled (see the
    module docstring) and skips the :data:`NOT_DECAYED` variables. ``ema_momentum`` > 0 is
    Keras' ``use_ema``: the optimizer keeps an average of the weights it trains, which ``fit``
    puts in their place when it ends. ``global_clipnorm`` > 0 scales the gradients down to
    that norm over all the trained variables together (0: off for either). ``rate_scale``
    other than 1: the ``scaled_variables`` train at that multiple of the learning rate
    (:mod:`fitnets_tf.layer_rates`).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"`name` must be one of {OPTIMIZERS}. Received: name={name!r}")
    found = combination_problems(name, momentum=momentum, nesterov=nesterov,
                                 weight_decay=weight_decay, rho=rho, epsilon=epsilon)  # fmt: skip
    own_problems = [momentum_problem(momentum), rho_problem(rho) if name == "rmsprop" else None]
    found += filter(None, own_problems)
    found += _number_problems(weight_decay=(weight_decay, ">= 0", lambda v: v >= 0),
                              global_clipnorm=(global_clipnorm, ">= 0", lambda v: v >= 0),
                              rate_scale=(rate_scale, "> 0", lambda v: v > 0))
    if epsilon is not None:
        found += _number_problems(epsilon=(epsilon, "> 0", lambda v: v > 0))
    found += filter(None, [ema_problem(ema_momentum)])
    if not callable(learning_rate):  # a schedule's values are its own
        found += _number_problems(learning_rate=(learning_rate, "> 0", lambda v: v > 0))
    if found:
        raise ValueError(
            "; ".join(found) + f". Received: optimizer={name!r}, rho={rho}, momentum={momentum}, "
            f"nesterov={nesterov}, weight_decay={weight_decay}"
        )
    own = {"rmsprop": dict(rho=rho, momentum=float(momentum)),
           "sgd": dict(momentum=float(momentum), nesterov=nesterov)}.get(name, {})  # fmt: skip
    # None, not 0.0: Keras then adds no decay ops to the step at all.
    decay = float(weight_decay) if weight_decay else None
    # Keras' own defaults where off (no EMA, no clipping): the step is then the one before.
    if ema_momentum:
        own.update(use_ema=True, ema_momentum=float(ema_momentum))
    if global_clipnorm:
        own.update(global_clipnorm=float(global_clipnorm))
    if epsilon is not None:
        own.update(epsilon=float(epsilon))
    scaled = rate_scale != 1
    optimizer = (layer_rates.CLASSES if scaled else _CLASSES)[name](
        learning_rate, weight_decay=decay, **own
    )
    if decay:
        optimizer.exclude_from_weight_decay(var_names=list(NOT_DECAYED))
    if scaled:
        optimizer.scale_rates(scaled_variables, rate_scale)
    return optimizer


# {optimizer: its learning rate when unused_optimizer first saw it}; weak: the optimizers are
# the user's.
_GIVEN_RATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unused_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """``optimizer`` itself if it has not been used (built), else a :func:`fresh_copy` of it.

    The first call for an optimizer records its learning rate, which its fresh copies then
    start from: a rate a callback changed while it trained (``ReduceLROnPlateau`` lowers the
    rate variable) belongs to that training, not to the settings it was given with.
    """
    rate = getattr(optimizer, "_learning_rate", None)
    if optimizer not in _GIVEN_RATES and isinstance(rate, keras.Variable):
        _GIVEN_RATES[optimizer] = float(keras.ops.convert_to_numpy(rate))
    if not optimizer.built:
        return optimizer
    # Recorded too: the copy Keras trains, given back (distiller.optimizer), starts over as well.
    return unused_optimizer(fresh_copy(optimizer))


def fresh_copy(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """A new optimizer with ``optimizer``'s settings and none of its state (slots, step count).

    Its configuration is copied, but not through serialization where that would fail or lose
    something: the learning rate's schedule or callable is shared as it is (a schedule of the
    user's own need not be registered, a lambda need not be deserialized: both are
    stateless), and so are the weight-decay exclusions, which the configuration omits. A
    constant rate is the one :func:`unused_optimizer` recorded when it first saw
    ``optimizer``, if it did; otherwise the rate variable's current value.
    """
    rate = optimizer._learning_rate  # the schedule/callable itself; get_config serializes it
    try:
        config = optimizer.get_config()
        if not isinstance(rate, keras.Variable) and callable(rate):
            config["learning_rate"] = rate
        elif optimizer in _GIVEN_RATES:
            config["learning_rate"] = _GIVEN_RATES[optimizer]
        fresh = optimizer.__class__.from_config(config)
    except (NotImplementedError, TypeError, ValueError) as e:
        raise ValueError(
            f"This {optimizer.__class__.__name__} has been used already, and a fresh copy of "
            f"it cannot be made from its configuration ({e}). Pass a new optimizer instead."
        ) from e
    for name in ("_exclude_from_weight_decay", "_exclude_from_weight_decay_pattern",
                 "_rate_factors"):  # fmt: skip
        if hasattr(optimizer, name):  # exclude_from_weight_decay() or scale_rates() was called
            setattr(fresh, name, getattr(optimizer, name))
    return fresh


@keras.saving.register_keras_serializable(package="fitnets_tf")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule (or a constant rate) scaled by ``min(1, step / warmup_steps)``.

    Keras' ``CosineDecay`` warms up by itself (``warmup_target``); this warms up the rates
    that cannot: a constant one and ``PiecewiseConstantDecay``. The ramp is CosineDecay's:
    0 at step 0, linear up to the wrapped schedule's value at ``warmup_steps``.

    Args:
        after: a ``LearningRateSchedule`` or a float learning rate.
        warmup_steps: length of the ramp in optimizer steps (>= 1).
    """

    def __init__(self, after, warmup_steps: int):
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"`warmup_steps` must be an int >= 1. Received: {warmup_steps!r}")
        self.after, self.warmup_steps = after, warmup_steps

    def __call__(self, step):
        rate = self.after(step) if callable(self.after) else self.after
        ramp = keras.ops.minimum(keras.ops.cast(step, "float32") / self.warmup_steps, 1.0)
        return keras.ops.cast(rate, "float32") * ramp

    def get_config(self):
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.optimizers.schedules.serialize(after)
        return {"after": after, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        if isinstance(after, dict):
            after = keras.optimizers.schedules.deserialize(after)
        return cls(after, config["warmup_steps"])
