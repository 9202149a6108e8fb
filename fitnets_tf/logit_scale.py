"""Whether a teacher's logits are as far apart as training leaves them, or 255 times off.

A ReLU network answers pixels scaled 255 times otherwise about as right as those it was
trained on (the sign test of :mod:`fitnets_tf.teacher_scaling` passes it), but its logits are
~255 times larger or smaller: its soft targets are near one-hot (trained on pixels / 255, fed
raw pixels) or near uniform (the other way round), and distillation teaches little more than
the labels, or nothing, without a word. Both are told from the median gap between the top two
logits, as given and on the same images scaled the other way, numbers measured by
``bench/teacher_logit_scale.py`` (README); of cached logits, the gap alone. ``Distiller.fit``
(:mod:`fitnets_tf.fed_teacher`) and the command line (:func:`fitnets_tf.evaluation.
check_teacher`) warn with the words made here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# The median gap above which a teacher's soft targets are not what cross-entropy training
# leaves (it stops pushing a gap once the answer's probability is ~1). bench/teacher_logit_scale
# .py: 2.5 to 26 for 8 small teachers fed as trained, 325 to 772 for those trained on pixels /
# 255 and fed raw pixels.
SATURATED_GAP = 100.0
# Below it, fed pixels / 255, a teacher's soft targets are near uniform at the usual τ (>= 1).
# bench/teacher_logit_scale.py: 0.021 and 0.101 for the ReLU teachers trained on raw pixels and
# fed pixels / 255, about a tenth of the smallest gap fed as trained.
FLAT_GAP = 0.25
# How many times the gap on the images scaled the other way it must differ by to blame the
# scaling (255 for a ReLU network without biases or normalisation layers; there, 104 to 247
# times as far fed raw pixels, 0.0038 and 0.0039 times as far fed pixels / 255).
GROWTH = 32.0


def top_gap(logits: np.ndarray) -> float:
    """The median over images of the gap between the top two logits."""
    top = np.sort(logits, axis=-1)[:, -2:]
    return float(np.median(top[:, 1] - top[:, 0]))


def top_probability(logits: np.ndarray, temperature: float) -> float:
    """The mean over images of the largest soft target at ``temperature``."""
    scaled = logits / temperature
    p = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return float(np.mean(p.max(axis=-1) / p.sum(axis=-1)))


def warning(logits_of: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
            labels: np.ndarray, logits: np.ndarray, mode: str, temperature: float, *,
            name: str, given: str, fix: dict[str, str]) -> str | None:  # fmt: skip
    """The warning for the teacher ``name`` given ``images`` (``mode``: "none", raw pixels,
    or "scale", pixels / 255) whose ``logits`` are 255 times off, or None.

    ``logits_of`` gives the teacher's logits of images; ``given`` says how the images were
    given (e.g. "on the first 512 images as fit is given them (...)"); ``fix[mode]`` says
    how to feed the teacher the other way.
    """
    if mode not in ("none", "scale"):
        return None
    gap = top_gap(logits)
    if gap < SATURATED_GAP if mode == "none" else gap >= FLAT_GAP:
        return None
    other = logits_of(images / 255 if mode == "none" else images * 255)
    other_gap = top_gap(other)
    far, near = (gap, other_gap) if mode == "none" else (other_gap, gap)
    if far <= GROWTH * near:  # `<=`: logits all tied both ways are not 255 times off
        return None
    right = [float(np.mean(np.argmax(z, axis=-1) == labels)) for z in (logits, other)]
    p = [top_probability(z, temperature) for z in (logits, other)]
    ratio = far / max(near, 1e-12)
    if mode == "none":
        trained, fed, size = "pixels / 255", "raw pixels", "larger"
        apart = (f"{gap:.0f} apart (median) {given}, {ratio:.0f} times as far as on the same "
                 f"images as pixels / 255 ({other_gap:.2f}): at τ={temperature:g} its soft "
                 "targets are near one-hot")  # fmt: skip
    else:
        trained, fed, size = "raw pixels", "pixels / 255", "smaller"
        apart = (f"{gap:.3f} apart (median) {given}, {ratio:.0f} times closer than on the same "
                 f"images as raw pixels ({other_gap:.2f}): at τ={temperature:g} its soft "
                 "targets are near uniform")  # fmt: skip
    return (
        f"warning: the top two logits of the teacher {name!r} are {apart} (mean top "
        f"probability {p[0]:.4f}; {p[1]:.4f} as {trained}), and distillation teaches little "
        f"more than the labels. A ReLU network trained on {trained} answers {fed} about as "
        f"right (here {right[0]:.4f}; {right[1]:.4f} as {trained}), with logits about 255 "
        f"times {size}. If it was trained on {trained}, {fix[mode]}"
    )


def cached_warning(logits: np.ndarray, temperature: float, *, name: str, given: str
                   ) -> str | None:  # fmt: skip
    """The warning for the teacher ``name``'s cached ``logits`` (``given``: of which images,
    e.g. "on the first 512 images fit is given") whose top two are as far apart as 255 times
    off makes them (:data:`SATURATED_GAP` or more, under :data:`FLAT_GAP`), or None.

    The teacher is not called on a cache: the gap on the images scaled the other way is not
    known, and the gap alone tells. Past either bound the soft targets are near one-hot or near
    uniform, whatever the cause, and distillation teaches little more than the labels.
    """
    gap = top_gap(logits)
    if FLAT_GAP <= gap < SATURATED_GAP:
        return None
    if gap >= SATURATED_GAP:
        apart, soft, size = f"{gap:.0f}", "one-hot", "larger"
        trained, fed = "pixels / 255", "raw pixels"
    else:
        apart, soft, size = f"{gap:.3f}", "uniform", "smaller"
        trained, fed = "raw pixels", "pixels / 255"
    return (
        f"warning: the top two of the teacher {name!r}'s cached logits are {apart} apart "
        f"(median) {given}: at τ={temperature:g} their soft targets are near {soft} (mean top "
        f"probability {top_probability(logits, temperature):.4f}), and distillation teaches "
        f"little more than the labels. A ReLU network trained on {trained} and given {fed} "
        f"answers about as right, with logits about 255 times {size}: if the teacher was given "
        f"{fed} when its logits were cached, cache them again from the images as it was "
        "trained on. The teacher is not called on cached logits, so the scaling of the images "
        "it was given cannot be checked here."
    )
