"""Whether a trained teacher knows the data's classes under other labels, or is near chance.

A teacher trained with another class order than the data's (a PyTorch ``ImageFolder``'s
sub-folders in sorted order, against labels in the dataset's own order) calls each class by
another label: it is far below chance, or well above it with some labels swapped, and
distilling it teaches its mistakes without a word. The command line checks the validation
images (:func:`fitnets_tf.evaluation.check_teacher`), ``Distiller.fit`` the first images it
is given (:func:`fitnets_tf.fed_teacher.check_fed_teacher`): both refuse with these messages,
each naming its own fix.
"""

from __future__ import annotations

import numpy as np

from fitnets_tf.errors import ConfigError

# A teacher whose answers are unrelated to the labels is right this rarely by chance: below it,
# the teacher is refused as trained with another class order (one such run in 10,000 is
# refused for that reason instead of only being warned of; it had nothing to teach anyway).
# With 3 classes, 0 right is refused from 23 images on, with 10 classes from 88 on; fewer are
# too few to tell, and are warned of.
PERMUTED_P_VALUE = 1e-4

# How a user gives the teacher data in its own order, from the command line or from Python.
_RELABEL = {
    False: "an image folder's labels are its sub-folders in sorted order",
    True: "a PyTorch ImageFolder's classes are its sub-folders in sorted order",
}


def near_chance(accuracy: float, num_classes: int) -> bool:
    """Whether ``accuracy`` is near chance (``1 / num_classes``): under twice it, or, with two
    classes, where twice chance is 1 and every model but a perfect one would be, under halfway
    from it to 1 (0.75). The two agree from 3 classes on."""
    chance = 1 / num_classes
    return accuracy < min(2 * chance, (1 + chance) / 2)


def below_chance(predictions: np.ndarray, labels: np.ndarray, num_classes: int
                 ) -> tuple[float, float]:  # fmt: skip
    """``(expected, p)``: the count of right answers expected of predictions unrelated to the
    labels, and the probability of as few right as ``predictions`` have (binomial lower tail).

    Unrelated to the labels, a prediction is right with probability ``sum_k q_k r_k`` (``q``,
    ``r``: the predicted and the true classes' frequencies), not ``1 / num_classes``: a teacher
    that says one class for every image is right as often as that class is frequent, however
    unbalanced the set, and is not below chance.
    """
    from scipy import stats  # only here: the check runs once per run

    n = len(labels)
    if n == 0:
        return 0.0, 1.0
    q = np.bincount(predictions, minlength=num_classes)[:num_classes] / n
    r = np.bincount(labels, minlength=num_classes)[:num_classes] / n
    chance = float(np.dot(q, r))
    correct = int(np.sum(predictions == labels))
    return chance * n, float(stats.binom.cdf(correct, n, chance))


def relabelling(predictions: np.ndarray, labels: np.ndarray, num_classes: int
                ) -> tuple[np.ndarray, np.ndarray, list[int]] | None:  # fmt: skip
    """``(counts, renamed, moved)`` when the teacher calls some labels by other classes; else
    None. ``counts[label, class]``: images of each label the teacher gives each class;
    ``renamed[label]``: the renaming of its classes, one to one, that makes the most of its
    answers right; ``moved``: the labels of its cycles (label -> class -> ... -> label) whose
    every label the teacher gives its renamed class more often than its own: a class order
    permuted, not confusions.

    Refused when renaming ``moved`` makes at least 10 more images right, more than answers
    unrelated to the labels would, by the test of :data:`PERMUTED_P_VALUE` (each moved label's
    binomial tail at its renamed class's share of the answers, times the classes it could
    have been renamed to, combined by Fisher's method).

    A few classes swapped, or a teacher trained with torchvision's Fashion-MNIST order read
    from folders named by class (sorted: four of ten keep their index), score well above chance
    and would pass for a weak teacher. A teacher confusing classes (one trained an epoch puts
    several on one class) moves no whole cycle: the class it gives another label's images is
    still its own label's, or that label's images go nowhere else more often.
    """
    from scipy import stats
    from scipy.optimize import linear_sum_assignment  # only here: the check runs once per run

    counts = np.zeros((num_classes, num_classes), "int64")
    np.add.at(counts, (labels, np.clip(predictions, 0, num_classes - 1)), 1)
    _, renamed = linear_sum_assignment(counts, maximize=True)
    moved = _moved_cycles(counts, renamed)
    share = counts.sum(axis=0) / max(len(labels), 1)  # of each class among the answers
    odds = [min(1.0, num_classes * stats.binom.sf(counts[k, renamed[k]] - 1, counts[k].sum(),
                                                  share[renamed[k]])) for k in moved]  # fmt: skip
    gain = sum(int(counts[k, renamed[k]] - counts[k, k]) for k in moved)
    if not moved or gain < 10 or stats.chi2.sf(-2 * np.sum(np.log(np.maximum(odds, 1e-300))),
                                               2 * len(moved)) * num_classes >= PERMUTED_P_VALUE:
        return None
    return counts, renamed, moved


def _moved_cycles(counts: np.ndarray, renamed: np.ndarray) -> list[int]:
    """The labels of ``renamed``'s cycles whose every label has more images on its renamed
    class than on its own."""
    moved, seen = [], set()
    for start in range(len(renamed)):
        cycle, k = [], start
        while k not in seen:
            seen.add(k)
            cycle.append(k)
            k = int(renamed[k])
        if len(cycle) > 1 and all(counts[k, renamed[k]] > counts[k, k] for k in cycle):
            moved += cycle
    return moved


def _relabelled_message(relabelled, accuracy: float, split: str, class_names, inputs=None
                        ) -> str:  # fmt: skip
    """The refusal of a teacher that calls labels by other classes (:func:`relabelling`):
    those labels, most images first, and how to relabel the data in the teacher's order (the
    folder names; from ``fit``, given ``inputs`` (a :class:`~fitnets_tf.fit_inputs.
    FitInputs`), the map of each label to the teacher's class in the form ``fit`` was given)."""
    counts, renamed, moved = relabelled

    def name(k):
        return f"{k} ({class_names[k]!r})" if class_names else str(k)

    moved = sorted(moved, key=lambda k: (-counts[k, renamed[k]], k))
    said = "; ".join(f"label {name(k)} is its class {renamed[k]} for {counts[k, renamed[k]]} "
                     f"of {counts[k].sum()} images" for k in moved[:5])  # fmt: skip
    more = f" (and {len(moved) - 5} more labels)" if len(moved) > 5 else ""
    by_cache = inputs.by_cache if inputs is not None else ""
    again = " (its logits cached again)" if by_cache else ""
    text = (f"The teacher{by_cache} calls classes by other labels than this data's: on the "
            f"{split} images (accuracy {accuracy:.4f}), {said}{more}. It was trained with "
            f"another class order. Give the teacher trained with this data's order{again}, or "
            "relabel the data in the teacher's")  # fmt: skip
    if inputs is not None:  # the labels the cycles move, the others kept: a one-to-one map
        order = [int(renamed[k]) if k in moved else k for k in range(len(renamed))]
        return (f"{text}: {inputs.labels_fix(order)} ({_RELABEL[True]}). A teacher right to "
                "answer so: Distiller(..., check_teacher=False) skips this check.")  # fmt: skip
    text += f" ({_RELABEL[False]}: prefix each with its class number in the teacher's order"
    if class_names:
        folders = sorted((int(t), class_names[k]) for k, t in enumerate(renamed))
        text += f", here {', '.join(f'{t}_{folder}' for t, folder in folders)}"
    return text + ")."


def refuse_another_order(predictions: np.ndarray, labels: np.ndarray, num_classes: int,
                         split: str, class_names=None, inputs=None) -> None:  # fmt: skip
    """Refuses a teacher whose ``predictions`` call some ``labels`` by other classes
    (:func:`relabelling`), on the run's ``split``; ``inputs``: the fix said for ``fit``, in
    the form it was given (a :class:`~fitnets_tf.fit_inputs.FitInputs`).

    Raises:
        ConfigError: naming the labels and how to give the data in the teacher's order.
    """
    if (relabelled := relabelling(predictions, labels, num_classes)) is not None:
        accuracy = float(np.mean(predictions == labels))
        raise ConfigError(_relabelled_message(relabelled, accuracy, split, class_names, inputs))


def below_chance_hint(predictions: np.ndarray, labels: np.ndarray, num_classes: int,
                      split: str, class_names=None, inputs=None) -> str:  # fmt: skip
    """Refuses a teacher far *below* chance on ``split`` (:func:`below_chance` under
    :data:`PERMUTED_P_VALUE`): it knows the classes under other labels. Else the sentence that
    says a teacher below chance on too few images to be sure ("" when it is not below).

    Raises:
        ConfigError: the teacher is far below chance, with the fix (for ``fit``, given its
            ``inputs``, a :class:`~fitnets_tf.fit_inputs.FitInputs`).
    """
    expected, p = below_chance(predictions, labels, num_classes)
    below = (f"{int(np.sum(predictions == labels))} of the {len(labels)} {split} images right, "
             f"where answers unrelated to the labels would get {expected:.1f}")  # fmt: skip
    if p < PERMUTED_P_VALUE:
        order = f" (label k is the k-th of: {', '.join(class_names)})" if class_names else ""
        python = inputs is not None
        skip = (" A teacher right to answer so: Distiller(..., check_teacher=False) skips this "
                "check." if python else "")  # fmt: skip
        raise ConfigError(
            f"The teacher{inputs.by_cache if python else ''} is far below chance: {below} (the "
            f"odds of so few by chance: {p:.1e}). "
            "It knows the classes, under other labels: it was trained with another class "
            f"order than this data's{order}. Give the teacher trained with this order, or "
            f"relabel the data in the teacher's ({_RELABEL[python]}).{skip}"
        )
    accuracy = float(np.mean(predictions == labels)) if len(labels) else 0.0
    if accuracy < 1 / num_classes and p < 0.05:
        return (f" It is below chance ({below}), the sign of another class order, though too "
                "few images to be sure.")  # fmt: skip
    return ""
