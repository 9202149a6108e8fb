"""The constants of torchvision's ``Normalize(mean, std)``, as ``--preprocessing=standardize``
takes them, and what can be wrong with them.

The most common PyTorch teacher was trained on ``Normalize(mean, std)`` of ``ToTensor()``'s
pixels / 255 and exported to ONNX without that step: fed anything else, it scores well below
what it can (not always near chance, so no accuracy check tells). Its constants are checked
where they are given, in one place: the layer's arguments, a run's configuration (before any
data is read) and ``data.load`` (once the images' channels are known).
"""

from __future__ import annotations

import math

import numpy as np

# How messages name the mode and the two constants: the layer's arguments, or the flags
# (``data.load``'s arguments have the flags' names).
_LAYER_NAMES = ("mode", "`mean`", "`std`")
_FLAG_NAMES = ("--preprocessing", "--input_mean", "--input_std")


def as_values(value) -> tuple[float, ...] | None:
    """One number or a sequence of numbers (a flag's, a config's list) as a tuple of floats."""
    return None if value is None else tuple(float(v) for v in np.asarray(value).reshape(-1))


def standardize_problems(mode: str, mean, std, channels: int | None = None, *,
                         flags: bool = False) -> list[str]:  # fmt: skip
    """What is wrong with the constants of ``standardize``, a sentence each (empty: nothing).

    Args:
        mode: the preprocessing mode they come with (``"auto"`` too): given with another one
            than ``"standardize"``, they would be ignored; that one needs both.
        mean, std: ``Normalize``'s, as sequences of numbers (or None: not given).
        channels: the images' channel count, which each must have one value for, or one for
            all; None: not known yet (a folder's, before it is read).
        flags: name the flags (``--input_mean``: a run's configuration, ``data.load``) and
            offer ``--channels`` as a fix, instead of the layer's arguments.
    """
    m, a, s = _FLAG_NAMES if flags else _LAYER_NAMES
    given = [name for name, values in ((a, mean), (s, std)) if values is not None]
    if mode != "standardize":
        return [f"{' and '.join(given)} {'are the constants' if len(given) > 1 else 'is a constant'} "
                f"of {m}=standardize, and this {m} is {mode!r}: add {m}=standardize, or drop "
                f"{'them' if len(given) > 1 else 'it'}"] if given else []  # fmt: skip
    if len(given) < 2:
        return [f"{m}=standardize needs {a} and {s}: the mean and std of torchvision's "
                "Normalize(mean, std) the model was trained behind, in its scale of pixels / "
                "255, one value or one per channel (ImageNet's: mean 0.485, 0.456, 0.406, std "
                "0.229, 0.224, 0.225)"]  # fmt: skip
    found = _value_problems(a, mean, s, std)
    counts = {name: len(values) for name, values in ((a, mean), (s, std))}
    if channels is None and len(set(counts.values()) - {1}) > 1:
        found.append(f"{a} has {counts[a]} values and {s} {counts[s]}: give one per channel "
                     "to both, or one value (every channel's)")  # fmt: skip
    for name, count in counts.items() if channels is not None else ():
        if count not in (1, channels):
            convertible = flags and count in (1, 3)  # --channels' values
            fix = f", or convert the images with --channels={count}" if convertible else ""
            found.append(f"{name} has {count} values and the images {channels} channel"
                         f"{'s' if channels > 1 else ''}: give one value (every channel's) or "
                         f"{channels}{fix}")  # fmt: skip
    return found


def _value_problems(a: str, mean: tuple[float, ...], s: str, std: tuple[float, ...]) -> list[str]:
    found = []
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in mean):
        # Raw pixels' statistics (mmcv's, timm's ImageNet mean 123.675, ...) are 255 times
        # torchvision's: named, since they would standardize every image to about -2.
        raw = [v for v in mean if math.isfinite(v) and v > 1]
        scale = (f": if these are of raw pixels in [0, 255], divide them and {s} by 255 "
                 f"({raw[0]:g} is {raw[0] / 255:.4g})" if raw else "")  # fmt: skip
        found.append(f"{a} must be in [0, 1], the range of the pixels / 255 whose mean "
                     f"Normalize subtracts, got {_listed(mean)}{scale}")  # fmt: skip
    if not all(math.isfinite(v) and v > 0 for v in std):
        found.append(f"{s} must be positive and finite (a standard deviation), got "
                     f"{_listed(std)}")  # fmt: skip
    return found


def _listed(values: tuple[float, ...]) -> str:
    return ",".join(map(str, values))  # as a flag takes them
