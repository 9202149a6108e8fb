"""The validation and test examples held out of a user's data: drawn once, the same every run.

A folder of images or a NumPy file may be in any order (often by class), so the held-out
examples are a seeded random draw, not the last ones as for the paper's datasets. The draw is
seeded by :data:`SPLIT_SEED`, not by the run's seed: runs with different seeds are validated and
tested on the same images, so their results compare.
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

Arrays = tuple[np.ndarray, np.ndarray]  # (images, labels), first axis the example


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
        raise DataError(
            f"Holding out {count} {split} example(s) leaves none of the {pool} to train on: "
            "add examples or pass a smaller --validation_size."
        )
    return count


def hold_out(arrays: Arrays, count: int) -> tuple[Arrays, Arrays]:
    """``(kept, held out)``: ``count`` examples drawn by :data:`SPLIT_SEED`, the rest.

    Both parts are in the draw's order, so the first examples (``limit``) mix the classes.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(len(arrays[1]))
    held, kept = order[:count], order[count:]
    return tuple(a[kept] for a in arrays), tuple(a[held] for a in arrays)


def user_splits(
    train: Arrays,
    test: Arrays | None = None,
    validation: Arrays | None = None,
    *,
    validation_size: int | None = None,
    retrain_on_all: bool = False,
    class_names: list[str] | None = None,
) -> dict[str, Arrays]:
    """The ``train`` / ``validation`` / ``test`` arrays of a user's data.

    A missing ``test`` is drawn first (:data:`TEST_FRACTION`), then a missing ``validation``
    from what is left (``validation_size`` examples, default :data:`VALIDATION_FRACTION`; 0:
    none). ``retrain_on_all`` trains on train + validation, as the paper's last run.

    Raises:
        DataError: a class has no training example left (the draw is not stratified: a class
            of one or two examples can be drawn whole); ``class_names`` name the classes in
            the message (default: by label).
    """
    splits = _drawn_splits(train, test, validation, validation_size, retrain_on_all)
    _check_none_drawn_whole(splits, class_names)
    return splits


def _check_none_drawn_whole(splits: dict[str, Arrays], class_names: list[str] | None) -> None:
    labels = {split: np.asarray(pair[1]) for split, pair in splits.items()}
    num_classes = 1 + max(int(y.max()) for y in labels.values() if y.size)
    counts = np.bincount(labels["train"], minlength=num_classes)
    if counts.all():
        return
    k = int(np.flatnonzero(counts == 0)[0])
    name = repr(class_names[k]) if class_names else f"label {k}"
    where = ", ".join(f"{int((y == k).sum())} in {s}" for s, y in labels.items() if s != "train")
    raise DataError(
        f"Class {name} has no training example left: the held-out examples are a random draw, "
        f"and its examples all went there ({where}). Add examples of it, pass a smaller "
        "--validation_size, or give your own test split (a folder's test/ sub-folder, an "
        "npz file's x_test)."
    )


def _drawn_splits(train, test, validation, validation_size, retrain_on_all) -> dict[str, Arrays]:
    if test is None:
        train, test = hold_out(train, held_out_count(len(train[1]), None, TEST_FRACTION, "test"))
    if retrain_on_all:
        if validation is not None:
            train = tuple(np.concatenate(pair) for pair in zip(train, validation, strict=True))
        return {"train": train, "test": test}
    if validation is None:
        count = held_out_count(len(train[1]), validation_size, VALIDATION_FRACTION, "validation")
        if count == 0:
            return {"train": train, "test": test}
        train, validation = hold_out(train, count)
    return {"train": train, "validation": validation, "test": test}
