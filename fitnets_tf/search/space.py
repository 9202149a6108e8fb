"""The search space: which of λ0, τ, λ's end value, the learning rate and τ² a search varies."""

from __future__ import annotations

import dataclasses
import math

import keras_tuner

from fitnets_tf.errors import SearchError
from fitnets_tf.stages import Hyperparameters

# Searched only when asked (``SearchSpace.with_optional``), with these ranges by default.
OPTIONAL = ("lambda_end", "learning_rate", "tau_squared")
OPTIONAL_RANGES = {"lambda_end": (0.0, 4.0), "learning_rate": (1e-4, 1e-2)}
# A hyperparameter is named after its option (and flag); where the stages' Hyperparameters
# call it otherwise, this maps one to the other.
_FIELD = {"kd_lambda": "lambda_start"}


def checked_bounds(name: str, value, positive: bool = True, received: str | None = None):
    """``value`` as ``(min, max)`` floats, or a :class:`SearchError` naming ``name``.

    ``received``: ``value`` as the user typed it, when ``name`` is a flag (``--x_range``).
    """
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        # An infinite bound passes min < max, and log sampling then draws inf or NaN.
        and all(math.isfinite(v) for v in value)
        and (value[0] > 0 if positive else value[0] >= 0)
        and value[0] < value[1]
    )
    if not ok:
        bound = "0 < min < max" if positive else "0 <= min < max"
        if received is None:
            raise SearchError(f"`{name}` must be two finite numbers (min, max) with {bound}. "
                              f"Received: {name}={value!r}")  # fmt: skip
        raise SearchError(f"{name} must be two finite numbers min,max with {bound}. "
                          f"Received: {received}")  # fmt: skip
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
                bounds = checked_bounds(name, value, positive=name != "lambda_end")
                object.__setattr__(self, name, bounds)
        if not isinstance(self.tau_squared, bool):
            raise SearchError(f"`tau_squared` must be a bool. Received: {self.tau_squared!r}")

    @classmethod
    def with_optional(cls, names, **ranges) -> SearchSpace:
        """λ0 and τ plus the ``OPTIONAL`` hyperparameters in ``names`` (default ranges)."""
        unknown = sorted(set(names) - set(OPTIONAL))
        if unknown:
            raise SearchError(
                f"Unknown optional hyperparameter(s) {unknown}: valid are {', '.join(OPTIONAL)}."
            )
        for name in ("lambda_end", "learning_rate"):
            # A range for a hyperparameter not searched would be dropped without a word.
            if ranges.get(name) is not None and name not in names:
                raise SearchError(
                    f"{name} is not searched, but its range is given: add {name!r} to "
                    "the names given to SearchSpace.with_optional, or drop its range."
                )
        kwargs = {k: v for k, v in ranges.items() if k in ("kd_lambda", "temperature")}
        for name in ("lambda_end", "learning_rate"):
            if name in names:
                kwargs[name] = ranges.get(name) or OPTIONAL_RANGES[name]
        return cls(**kwargs, tau_squared="tau_squared" in names)

    def names(self) -> tuple[str, ...]:
        """The searched hyperparameters (each the name of a ``fitnets_tf.train`` flag)."""
        optional = [n for n in ("lambda_end", "learning_rate") if getattr(self, n) is not None]
        tau_squared = ("tau_squared",) if self.tau_squared else ()
        return ("kd_lambda", "temperature", *optional, *tau_squared)

    def describe(self, base: Hyperparameters, *, as_flags: bool = False) -> dict:
        """Plain-data description (ranges, sampling, defaults): what ``search.json`` stores.

        Raises:
            SearchError: a base value lies outside its range (the first trial could not run
                it). The message names the ``SearchSpace`` field and the ``Hyperparameters``
                one (``base`` is ``FitNetsHyperModel``'s ``hparams``), or with ``as_flags``
                the command line's flags.
        """
        out = {}
        for name in self.names():
            default = base_value(base, name)
            if name == "tau_squared":
                out[name] = {"type": "bool", "default": default}
                continue
            low, high = getattr(self, name)
            sampling = "linear" if name == "lambda_end" else "log"
            if not low <= default <= high:
                raise SearchError(_outside(name, default, (low, high), sampling, as_flags))
            out[name] = {"min": low, "max": high, "sampling": sampling, "default": default}
        return out

    def hyperparameters(
        self, hp: keras_tuner.HyperParameters, base: Hyperparameters
    ) -> Hyperparameters:
        """Declares the space in ``hp`` and returns ``base`` with the trial's values."""
        values = {}
        for name, spec in self.describe(base).items():
            if spec.get("type") == "bool":
                values[name] = hp.Boolean(name, default=spec["default"])
            else:
                values[name] = hp.Float(name, spec["min"], spec["max"], sampling=spec["sampling"],
                                        default=spec["default"])  # fmt: skip
        return dataclasses.replace(base, **{_FIELD.get(k, k): v for k, v in values.items()})


def _outside(name: str, default, bounds: tuple, sampling: str, as_flags: bool) -> str:
    if as_flags:
        value, where = f"{name}={default}", f"[{bounds[0]}, {bounds[1]}]"
        the_range, the_value = f"--{name}_range", f"--{name}"
    else:
        field = f"hparams.{_FIELD.get(name, name)}"
        value, where = f"{field}={default}", f"space.{name}={bounds}"
        the_range, the_value = f"`space.{name}`", f"`{field}`"
    # A log-scale range cannot reach 0 or below: only the value can change.
    fix = (f"widen {the_range} to include it, or change {the_value}"
           if sampling == "linear" or default > 0 else
           f"it is searched on a log scale, above 0: change {the_value}")  # fmt: skip
    return f"The first trial uses the base {value}, outside the searched range {where}: {fix}."


def base_value(base: Hyperparameters, name: str):
    """The value of the hyperparameter ``name`` (a flag's name) in ``base``."""
    return getattr(base, _FIELD.get(name, name))
