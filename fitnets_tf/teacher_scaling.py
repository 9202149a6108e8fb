"""Whether a trained teacher knows the run's images better scaled another way.

A teacher fed other pixels than it was trained on is not always near chance: the audits'
PyTorch teacher, trained behind torchvision's ``Normalize(0.2860, 0.3530)`` and fed pixels /
255, scored 0.42 on Fashion-MNIST instead of 0.89, and taught its mistakes without a word. So
the run's images are also given to the teacher the other ways models are commonly trained on
(raw pixels or pixels / 255; standardised per channel, by these images' own statistics, or
by ImageNet's, torchvision's usual constants), and a teacher that is right clearly more often
on one of them is refused with the ``--preprocessing`` flags that feed it so. A run that
standardises by constants it is given (``--preprocessing=standardize``) is checked the same
way, from the pixels / 255 those constants recover: constants a teacher was not trained on
(ImageNet's for one trained on pixels / 255, a mean and std swapped, a std of raw pixels)
feed it as wrongly as another scaling would.

"Clearly" is a one-sided sign test on the images one scaling gets right and the other wrong
(McNemar's exact test): a teacher fed what it was trained on is not beaten on a few hundred
images by a shift of their scale, while a teacher fed the wrong scaling loses tens of points.

From Python, :func:`fitnets_tf.fed_teacher.check_fed_teacher` makes the same check on the
first images ``Distiller.fit`` is given, the way they are fed told by their values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow as tf

# Images the check reads (the first of the split's batches): enough for a gain of 5 points to
# be told from chance (a gain of 0.05 on 512 images is 26 more right answers: alone among the
# differing answers, a p-value of 1.5e-8), few enough to cost seconds for a large teacher.
MAX_IMAGES = 512
MIN_GAIN = 0.05
# One teacher fed the right scaling in 10,000 is refused by chance, at most.
P_VALUE = 1e-4
_BATCH = 64
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The modes the check undoes to pixels / 255, besides "standardize" (by the run's constants).
_FED = {"scale": "pixels / 255", "none": "raw pixels in [0, 255]"}
_ADVICE = {
    "--preprocessing=none": "give the student the same first Rescaling(1/255) layer, if it is "
                            "yours.",
    "--preprocessing=scale": "drop the student's own rescaling, if it has one.",
    "--preprocessing=standardize": "with a teacher trained behind a Normalize, give its own "
                                   "values, which these approach.",
}


def first_copies(images: np.ndarray, labels: np.ndarray, seen: set) -> np.ndarray:
    """Which of ``images`` (with their ``labels``) are not a copy of one before: in ``seen``,
    the hashes of the (image, label) pairs found so far, which this adds to.

    The teacher's checks count each (image, label) once: copies are no evidence (a repeated
    dataset, a file copied twice into a class folder), and 8 images read as 512 passed the
    tests' thresholds with the same 8 answers."""
    new = np.zeros(len(labels), bool)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        key = (hashlib.blake2b(image.tobytes(), digest_size=16).digest(), int(label))
        new[i] = key not in seen
        seen.add(key)
    return new


def first_images(images: tf.data.Dataset, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` distinct images of ``images`` (batches of images and class ids;
    :func:`first_copies`) and their labels, as arrays."""
    xs, ys, total, seen = [], [], 0, set()
    for x, y in images:
        x, y = np.asarray(x), np.asarray(y).reshape(-1)
        new = first_copies(x, y, seen)
        xs.append(x if new.all() else x[new])  # no copy of a batch without copies
        ys.append(y[new])
        total += len(ys[-1])
        if total >= count:
            break
    if not xs:
        return np.zeros((0,)), np.zeros((0,), "int64")
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def _fmt(values) -> str:
    return ",".join(f"{v:.4f}" for v in values)


def as_python(values) -> str:
    """Constants as a batch ``x`` takes them in Python: one number, or a list per channel."""
    values = np.atleast_1d(values)
    return _fmt(values) if len(values) == 1 else f"[{_fmt(values)}]"


def _unit(x: np.ndarray, mode: str, mean, std) -> np.ndarray:
    """The images as pixels / 255, from the ``mode`` the run fed them in."""
    if mode == "standardize":  # (pixels / 255 - mean) / std, undone
        return x * np.asarray(std, "float32") + np.asarray(mean, "float32")
    return x / 255.0 if mode == "none" else x


def _alternatives(unit: np.ndarray, mode: str, mean=None, std=None
                  ) -> Iterator[tuple[str, str, np.ndarray]]:  # fmt: skip
    """``(how, flags, images)`` for each other scaling of ``unit`` (the images / 255) than the
    run's ``mode`` (under ``"standardize"``, by ``mean`` and ``std``), each made when it is
    asked for: all at once, 512 images of 224x224x3 are 300 MB a copy."""
    for other in _FED:
        if other != mode:
            yield (f"as {_FED[other]}", f"--preprocessing={other}",
                   unit * 255.0 if other == "none" else unit)  # fmt: skip
    constants = []
    if unit.shape[-1] == 3:  # first: of equal gains, the constants a teacher was trained on
        constants.append(("by ImageNet's mean and std (torchvision's usual Normalize)",
                          *(np.asarray(v, "float32") for v in IMAGENET)))  # fmt: skip
    own_mean = unit.mean(axis=(0, 1, 2))
    own_std = np.maximum(unit.std(axis=(0, 1, 2)), 1e-6)  # a constant channel: no division by 0
    constants.append((f"per channel by their own mean ({_fmt(own_mean)}) and std "
                      f"({_fmt(own_std)}), as torchvision's Normalize(mean, std) does",
                      own_mean, own_std))  # fmt: skip
    channels = unit.shape[-1:]
    for how, m, s in constants:
        # Within the flags' rounding, the run's own: these images, fed as the run feeds them.
        if mode == "standardize" and all(_fmt(np.broadcast_to(a, channels)) == _fmt(
                np.broadcast_to(b, channels)) for a, b in ((m, mean), (s, std))):  # fmt: skip
            continue
        yield (f"standardised {how}",
               f"--preprocessing=standardize --input_mean={_fmt(m)} --input_std={_fmt(s)}",
               (unit - m) / s)  # fmt: skip


def _right(predict, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    batches = [predict(tf.constant(images[i:i + _BATCH], tf.float32))
               for i in range(0, len(images), _BATCH)]  # fmt: skip
    return np.concatenate(batches) == labels


def sign_test(base_right: np.ndarray, other_right: np.ndarray) -> float:
    """The probability of ``other_right`` winning as many of the images the two disagree on as
    it does, were either equally likely to win each (one-sided; McNemar's exact test)."""
    from scipy import stats  # only here: the check runs once per run

    wins = int(np.sum(other_right & ~base_right))
    losses = int(np.sum(base_right & ~other_right))
    if wins + losses == 0:
        return 1.0
    return float(stats.binom.sf(wins - 1, wins + losses, 0.5))


def _fed(mode: str, mean, std) -> str:
    """How the run fed the images, with the flags that make it so."""
    if mode == "standardize":
        given = [",".join(f"{v:g}" for v in values) for values in (mean, std)]
        return (f"pixels / 255 standardised by --preprocessing=standardize "
                f"--input_mean={given[0]} --input_std={given[1]}")  # fmt: skip
    return f"{_FED[mode]}, --preprocessing={mode}, given or the dataset's default"


class Found(NamedTuple):
    """A scaling of the images the teacher is right on clearly more often than as fed."""

    accuracy: float  # as fed
    count: int  # images read
    better: float  # scaled as ``how`` says
    how: str
    flags: str  # the --preprocessing flags that feed the images so
    expression: str  # the same scaling of a batch ``x`` as fed, in Python


def other_scaling(predict, images: tf.data.Dataset, mode: str, *, mean=None, std=None,
                  given: np.ndarray | None = None) -> Found | None:  # fmt: skip
    """The scaling of ``images`` (the first :data:`MAX_IMAGES`, fed as ``mode``: ``"scale"``,
    ``"none"``, or ``"standardize"`` by ``mean`` and ``std``; other modes are not checked)
    that ``predict(batch) -> classes``, the teacher's inference, is right on clearly more
    often than on the images as fed, the best of them; None when none is. ``given``: the
    teacher's classes of those images as fed, when the caller has them (not computed again).

    Raises:
        ValueError: ``mode`` is ``"standardize"`` without ``mean`` and ``std``, which the
            images are recovered by.
    """
    if mode == "standardize" and (mean is None or std is None):
        raise ValueError("better_scaling(mode='standardize') needs the run's `mean` and `std` "
                         f"(Normalize's constants) to recover its pixels; got mean={mean}, "
                         f"std={std}.")  # fmt: skip
    if mode not in (*_FED, "standardize"):
        return None
    x, y = first_images(images, MAX_IMAGES)
    if len(y) == 0:
        return None
    base = _right(predict, x, y) if given is None else np.asarray(given) == y
    better = []
    for how, flags, other in _alternatives(_unit(x.astype("float32", copy=False), mode, mean,
                                                 std), mode, mean, std):  # fmt: skip
        right = _right(predict, other, y)
        del other  # before the next is made
        if np.mean(right) - np.mean(base) >= MIN_GAIN and sign_test(base, right) < P_VALUE:
            better.append((float(np.mean(right)), how, flags))
    if not better:
        return None
    accuracy, how, flags = max(better, key=lambda found: found[0])  # the first of equals
    return Found(float(np.mean(base)), len(y), accuracy, how, flags,
                 _expression(flags, mode, mean, std))  # fmt: skip


def _expression(flags: str, mode: str, mean, std) -> str:
    """``flags``' scaling of a batch ``x`` fed as ``mode``, as Python."""
    unit = {"scale": "x", "none": "x / 255",
            "standardize": f"(x * {as_python(std)} + {as_python(mean)})"
            if mode == "standardize" else ""}[mode]  # fmt: skip
    if flags == "--preprocessing=scale":
        return unit
    if flags == "--preprocessing=none":
        return f"{unit} * 255"
    constants = [part.split("=", 1)[1] for part in flags.split()[1:]]  # mean, std
    return f"({unit} - [{constants[0]}]) / [{constants[1]}]"


def better_scaling(predict, images: tf.data.Dataset, mode: str, split: str, *,
                   mean=None, std=None) -> str | None:  # fmt: skip
    """The refusal for a teacher right clearly more often on ``images`` scaled another way
    than the run's ``mode`` (:func:`other_scaling`), naming the flags that feed it so; None
    when no other scaling does clearly better."""
    found = other_scaling(predict, images, mode, mean=mean, std=std)
    if found is None:
        return None
    return (
        f"The teacher is right on {found.accuracy:.4f} of the first {found.count} {split} "
        f"images fed as this run feeds them ({_fed(mode, mean, std)}), but on "
        f"{found.better:.4f} of the same images {found.how}: it was trained on images scaled "
        f"so, and would teach its mistakes. Run with {found.flags}, which feeds both models so "
        f"and makes it the exports' input; {_ADVICE[found.flags.split()[0]]}"
    )
