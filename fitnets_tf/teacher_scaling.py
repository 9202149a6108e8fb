"""Whether a trained teacher knows the run's images better scaled another way.

A teacher fed other pixels than it was trained on is not always near chance: the audits'
PyTorch teacher, trained behind torchvision's ``Normalize(0.2860, 0.3530)`` and fed pixels /
255, scored 0.42 on Fashion-MNIST instead of 0.89, and taught its mistakes without a word. So
the run's images are also given to the teacher the other ways models are commonly trained on
(raw pixels or pixels / 255; standardised per channel, by these images' own statistics, or
by ImageNet's, torchvision's usual constants), and a teacher that is right clearly more often
on one of them is refused with the ``--preprocessing`` flags that feed it so.

"Clearly" is a one-sided sign test on the images one scaling gets right and the other wrong
(McNemar's exact test): a teacher fed what it was trained on is not beaten on a few hundred
images by a shift of their scale, while a teacher fed the wrong scaling loses tens of points.
"""

from __future__ import annotations

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
_FED = {"scale": "pixels / 255", "none": "raw pixels in [0, 255]"}
_ADVICE = {
    "--preprocessing=none": "give the student the same first Rescaling(1/255) layer, if it is "
                            "yours.",
    "--preprocessing=scale": "drop the student's own rescaling, if it has one.",
    "--preprocessing=standardize": "with a teacher trained behind a Normalize, give its own "
                                   "values, which these approach.",
}


def _first_images(images: tf.data.Dataset, count: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, total = [], [], 0
    for x, y in images:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y).reshape(-1))
        total += len(ys[-1])
        if total >= count:
            break
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def _fmt(values) -> str:
    return ",".join(f"{v:.4f}" for v in values)


def _alternatives(unit: np.ndarray, mode: str) -> list[tuple[str, str, np.ndarray]]:
    """``(how, flags, images)`` for each other scaling of ``unit`` (the images / 255)."""
    other = ("none", unit * 255.0) if mode == "scale" else ("scale", unit)
    found = [(f"as {_FED[other[0]]}", f"--preprocessing={other[0]}", other[1])]
    if unit.shape[-1] == 3:  # first: of equal gains, the constants a teacher was trained on
        m, s = (np.asarray(v, "float32") for v in IMAGENET)
        found.append(("standardised by ImageNet's mean and std (torchvision's usual Normalize)",
                      f"--preprocessing=standardize --input_mean={_fmt(m)} --input_std={_fmt(s)}",
                      (unit - m) / s))  # fmt: skip
    mean = unit.mean(axis=(0, 1, 2))
    std = np.maximum(unit.std(axis=(0, 1, 2)), 1e-6)  # a constant channel: no division by 0
    found.append((
        f"standardised per channel by their own mean ({_fmt(mean)}) and std ({_fmt(std)}), "
        "as torchvision's Normalize(mean, std) does",
        f"--preprocessing=standardize --input_mean={_fmt(mean)} --input_std={_fmt(std)}",
        (unit - mean) / std))  # fmt: skip
    return found


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


def better_scaling(predict, images: tf.data.Dataset, mode: str, split: str) -> str | None:
    """The refusal for a teacher right clearly more often on ``images`` scaled another way
    than the run's ``mode`` (``"scale"`` or ``"none"``; other modes are not checked), naming
    the flags that feed it so; None when no other scaling does clearly better.

    ``predict(batch) -> classes`` is the teacher's inference.
    """
    if mode not in _FED:
        return None
    x, y = _first_images(images, MAX_IMAGES)
    if len(y) == 0:
        return None
    base = _right(predict, x, y)
    unit = x.astype("float32") / (255.0 if mode == "none" else 1.0)
    better = []
    for how, flags, other in _alternatives(unit, mode):
        right = _right(predict, other, y)
        if np.mean(right) - np.mean(base) >= MIN_GAIN and sign_test(base, right) < P_VALUE:
            better.append((float(np.mean(right)), how, flags))
    if not better:
        return None
    accuracy, how, flags = max(better, key=lambda found: found[0])  # the first of equals
    return (
        f"The teacher is right on {np.mean(base):.4f} of the first {len(y)} {split} images fed "
        f"as this run feeds them ({_FED[mode]}, --preprocessing={mode}, given or the dataset's "
        f"default), but on {accuracy:.4f} of the same images {how}: it was trained on images "
        f"scaled so, and would teach its mistakes. Run with {flags}, which feeds both models "
        f"so and makes it the exports' input; {_ADVICE[flags.split()[0]]}"
    )
