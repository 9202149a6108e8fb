"""The validation and test examples held out of a user's data: drawn once, the same every run.

A folder of images or a NumPy file may be in any order (often by class), so the held-out
examples are drawn, not the last ones as for the paper's datasets, and the splits it gives
are put in a mixed order. There are three methods (:data:`HOLDOUT_METHODS`). Which one a run
uses is a property of the run, not an option: it is
recorded in the run's ``data.json`` (:mod:`~fitnets_tf.run.data_record`) and read back before
its data is loaded (:func:`fitnets_tf.builders.run_holdout`), so a resumed run, its export and
its search's trials all see the examples it started with.

* ``"stratified_mixed"`` (:data:`DEFAULT_HOLDOUT`, every new run): each class gives its share
  of the held-out examples, rounded by largest remainder (:func:`stratified_counts`) so that
  the total is exact, and keeps one example to train on. The held-out class proportions are
  the data's, to within one example per class. The splits the data gives (a folder's
  ``test/`` and ``validation/``, an npz file's ``x_test`` and ``x_val``, and the training
  examples when none are drawn from them) are put in a seeded permutation's order too.
* ``"stratified"``: the same draw, the given splits in the data's own order (often by class:
  ``limit`` and int8 calibration, which read the first examples, saw one class). What runs
  started before the given splits were mixed recorded: their ``data.json`` holds the sha256 of
  the training labels in that order, and they resume on it.
* ``"random"`` (:data:`LEGACY_HOLDOUT`): one random draw over all examples, the given splits in
  the data's order, what every run did before the draw was stratified (its ``data.json`` names
  no ``holdout``). Kept bit for bit: those runs resume, and their exports calibrate, on the
  examples they started with.

All are seeded by :data:`SPLIT_SEED`, not by the run's seed: runs with different seeds are
validated and tested on the same images, so their results compare. A draw returns the two parts
in the order of one seeded permutation, so the first examples (``limit``) mix the classes.

Corner cases of the stratified draw. The test examples are drawn first, then the validation
ones from what is left, each draw by class shares of its own pool. A class whose share is
under one example may have none held out (the largest remainders go first): a class of one
example is never held out, so it is trained on but neither validated nor tested, and a class
of two gives at most one (to the test or the validation examples). A class is drawn whole only
when the examples are too few for one of each class to stay: holding out ``count`` of ``n``
examples of ``K`` classes with ``count > n - K`` (a folder of ten classes of one image each).
The total is kept then, and :func:`user_splits` refuses the data, naming the class.
"""

from __future__ import annotations

import numpy as np

from fitnets_tf.errors import ConfigError, DataError

#: Share of the training examples held out for validation when ``validation_size`` is None.
VALIDATION_FRACTION = 0.1
#: Share of a folder's images held out for test when it has no ``test/`` sub-folder.
TEST_FRACTION = 0.1
#: Seeds every held-out draw of user data.
SPLIT_SEED = 0
#: How a user's held-out examples are drawn, and its given splits ordered (module docstring).
HOLDOUT_METHODS = ("stratified_mixed", "stratified", "random")
#: The method of a new run.
DEFAULT_HOLDOUT = "stratified_mixed"
#: The draw of a run whose record names none: every run started before the draw was stratified.
LEGACY_HOLDOUT = "random"

Arrays = tuple[np.ndarray, np.ndarray]  # (images, labels), first axis the example


def check_holdout(holdout) -> None:
    """Refuses a ``holdout`` that is not one of :data:`HOLDOUT_METHODS`.

    Raises:
        ConfigError: naming the value and the valid ones.
    """
    if holdout not in HOLDOUT_METHODS:
        raise ConfigError(
            f"`holdout` must be one of {', '.join(HOLDOUT_METHODS)} (a run's own is recorded in "
            f"its data.json). Received: holdout={holdout!r}"
        )


def held_out_count(pool: int, size: int | None, fraction: float, split: str) -> int:
    """How many of ``pool`` examples ``split`` takes: ``size``, else ``fraction`` of them.

    The fraction is rounded, and at least one example.

    Raises:
        ConfigError: ``size`` is not None or an int >= 0.
        DataError: no training example would be left.
    """
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ConfigError(f"`validation_size` must be an int >= 0. Received: {size!r}")
    count = max(1, round(fraction * pool)) if size is None else size
    if count >= pool:
        fix = ("or give your own test split (a folder's test/ sub-folder, an npz file's x_test)"
               if split == "test" else "or pass a smaller --validation_size")  # fmt: skip
        raise DataError(
            f"Holding out {count} {split} example(s) leaves none of the {pool} to train on: "
            f"add examples {fix}."
        )
    return count


def hold_out(arrays: Arrays, count: int, holdout: str = DEFAULT_HOLDOUT) -> tuple[Arrays, Arrays]:
    """``(kept, held out)``: ``count`` examples drawn as ``holdout`` says, and the rest.

    Both parts are in the order of one permutation seeded by :data:`SPLIT_SEED`, so the first
    examples (``limit``) mix the classes.

    Raises:
        ConfigError: ``holdout`` is not one of :data:`HOLDOUT_METHODS`.
    """
    check_holdout(holdout)
    order = _permutation(len(arrays[1]))
    held = _HELD[_DRAW[holdout]](np.asarray(arrays[1])[order], count)
    return tuple(a[order[~held]] for a in arrays), tuple(a[order[held]] for a in arrays)


def _permutation(n: int) -> np.ndarray:
    """The order of every draw and of every split mixed: the same whatever the run's seed."""
    return np.random.default_rng(SPLIT_SEED).permutation(n)


def _random_held(labels: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` examples of the permutation, whatever their classes."""
    return np.arange(len(labels)) < count


def _stratified_held(labels: np.ndarray, count: int) -> np.ndarray:
    """Per class, its first :func:`stratified_counts` examples along the permutation."""
    labels = labels.astype(np.int64)
    sizes = np.bincount(labels)
    # Each example's rank among its class's examples along the permutation (0: the first).
    by_class = np.argsort(labels, kind="stable")
    rank = np.empty(len(labels), np.int64)
    rank[by_class] = np.arange(len(labels)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return rank < stratified_counts(labels, count)[labels]


# Which examples of the permuted labels are held out, per draw: no elif chain to keep in step.
_HELD = {"stratified": _stratified_held, "random": _random_held}
# The draw of each method: "stratified_mixed" differs from "stratified" in the given splits only.
_DRAW = {"stratified_mixed": "stratified", "stratified": "stratified", "random": "random"}
# The methods that leave the splits the data gives in its order: runs started before the mixing.
_GIVEN_IN_ORDER = ("stratified", "random")


def mixing_given_splits(holdout: str) -> str:
    """The method that holds out the same examples as ``holdout`` and mixes the splits the
    data gives, where one does (``random`` has none): what a reader of the first training
    examples that needs every class but not the run's order (int8 calibration) loads with."""
    check_holdout(holdout)
    return DEFAULT_HOLDOUT if _DRAW[holdout] == _DRAW[DEFAULT_HOLDOUT] else holdout


def stratified_counts(labels, count: int) -> np.ndarray:
    """How many examples of each class (index: the label) a stratified draw of ``count`` takes.

    Each class's exact share, ``count * size / n``, rounded down; the examples still to take go
    one each to the classes furthest below their share (largest remainder), ties to the larger
    class, then to the lower label. The total is ``count``. No class gives its last example
    while the others can give the rest (so a class of one gives none); when they cannot
    (``count > n - K`` for ``K`` classes), the total wins and classes are drawn whole, in the
    same order.

    Raises:
        ConfigError: ``count`` is not between 0 and the number of examples.
    """
    sizes = np.bincount(np.asarray(labels, np.int64))
    n = int(sizes.sum())
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 0 <= count <= n:
        raise ConfigError(
            f"`count` must be an int from 0 to the {n} examples drawn from. Received: {count!r}"
        )
    held = count * sizes // n  # at most size - 1 while count < n
    for cap in (np.maximum(sizes - 1, 0), sizes):  # one kept per class; then, if need be, none
        held = _fill(held, int(count), sizes, cap)
    return held


def _fill(held: np.ndarray, count: int, sizes: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """``held`` raised towards a total of ``count``, one per class and round, none past ``cap``."""
    n = int(sizes.sum())
    while (left := count - int(held.sum())) > 0:
        open_ = np.flatnonzero(held < cap)
        if not open_.size:
            break
        # How far below its exact share each class is, times n: integers, so ties are exact.
        shortfall = count * sizes[open_] - n * held[open_]
        ranked = open_[np.lexsort((open_, -sizes[open_], -shortfall))]
        held[ranked[:left]] += 1
    return held


def user_splits(
    train: Arrays,
    test: Arrays | None = None,
    validation: Arrays | None = None,
    *,
    validation_size: int | None = None,
    retrain_on_all: bool = False,
    class_names: list[str] | None = None,
    holdout: str = DEFAULT_HOLDOUT,
) -> dict[str, Arrays]:
    """The ``train`` / ``validation`` / ``test`` arrays of a user's data.

    A missing ``test`` is drawn first (:data:`TEST_FRACTION`), then a missing ``validation``
    from what is left (``validation_size`` examples, default :data:`VALIDATION_FRACTION`; 0:
    none), both as ``holdout`` says (:data:`HOLDOUT_METHODS`). ``retrain_on_all`` trains on
    train + validation, as the paper's last run.

    Raises:
        ConfigError: ``holdout`` is not one of :data:`HOLDOUT_METHODS`.
        DataError: a class has no training example left (``"stratified"``: too few examples
            for one of each class to stay; ``"random"``: a small class drawn whole);
            ``class_names`` name the classes in the message (default: by label).
    """
    check_holdout(holdout)
    splits = _drawn_splits(train, test, validation, validation_size, retrain_on_all, holdout)
    _check_none_drawn_whole(splits, class_names, holdout)
    return splits


# Why a class can have lost all its examples to the held-out ones, per draw.
_DRAWN_WHOLE = {
    "stratified": "the held-out examples are drawn per class, keeping one of each class to train "
    "on while the examples suffice, and here they do not: its examples all went there ({where})",
    "random": "the held-out examples are a random draw (holdout='random', the draw of runs "
    "started before it was stratified; a new --workdir draws per class), and its examples all "
    "went there ({where})",
}


def _check_none_drawn_whole(
    splits: dict[str, Arrays], class_names: list[str] | None, holdout: str
) -> None:
    labels = {split: np.asarray(pair[1]) for split, pair in splits.items()}
    num_classes = 1 + max(int(y.max()) for y in labels.values() if y.size)
    counts = np.bincount(labels["train"], minlength=num_classes)
    if counts.all():
        return
    k = int(np.flatnonzero(counts == 0)[0])
    name = repr(class_names[k]) if class_names else f"label {k}"
    where = ", ".join(f"{int((y == k).sum())} in {s}" for s, y in labels.items() if s != "train")
    why = _DRAWN_WHOLE[_DRAW[holdout]].format(where=where)
    raise DataError(
        f"Class {name} has no training example left: {why}"
        ". Add examples of it, pass a smaller --validation_size, or give your own test split (a "
        "folder's test/ sub-folder, an npz file's x_test)."
    )


def _drawn_splits(
    train, test, validation, validation_size, retrain_on_all, holdout
) -> dict[str, Arrays]:
    drawn = set()  # the splits a draw already put in the permutation's order
    if test is None:
        count = held_out_count(len(train[1]), None, TEST_FRACTION, "test")
        train, test = hold_out(train, count, holdout)
        drawn = {"train", "test"}
    if retrain_on_all:
        if validation is not None:
            train = tuple(np.concatenate(pair) for pair in zip(train, validation, strict=True))
            drawn.discard("train")  # its validation part is in the data's order
        validation = None
    elif validation is None:
        count = held_out_count(len(train[1]), validation_size, VALIDATION_FRACTION, "validation")
        if count:
            train, validation = hold_out(train, count, holdout)
            drawn |= {"train", "validation"}
    splits = {"train": train, "validation": validation, "test": test}
    splits = {split: arrays for split, arrays in splits.items() if arrays is not None}
    if holdout in _GIVEN_IN_ORDER:
        return splits
    # A drawn split keeps its draw's order: a folder without sub-folders splits as before.
    return {split: arrays if split in drawn else _mixed(arrays)
            for split, arrays in splits.items()}  # fmt: skip


def _mixed(arrays: Arrays) -> Arrays:
    """``arrays`` in the order of :func:`_permutation`, classes mixed (the data's are often
    sorted by class: the first examples, ``limit``'s, were all of one)."""
    order = _permutation(len(arrays[1]))
    return tuple(a[order] for a in arrays)
