"""A user's images and labels in a NumPy ``.npz`` file (``--dataset=npz:PATH``).

The file holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val``,
``y_val`` (without them the validation examples are held out of the training ones, see
:mod:`~fitnets_tf.data.holdout`), and ``class_names`` (strings, in label order). Images:
``(N, H, W)`` (one channel) or ``(N, H, W, C)``, uint8 or numbers in ``[0, 255]``, channels
last. Labels: ``(N,)`` class indices ``0..K-1``, K
the largest training label + 1 (two or more). The whole file is read into memory (so are a
folder's images): NumPy cannot map a compressed archive, and the training split is held in
memory anyway (``load(cache=True)``).

Everything is checked as the file is read, so a bad array is reported now, by its key.
"""

from __future__ import annotations

import os
import pathlib
import zipfile

import numpy as np

from fitnets_tf.data.holdout import DEFAULT_HOLDOUT, Arrays, user_splits
from fitnets_tf.errors import DataError

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
VALIDATION_KEYS = ("x_val", "y_val")
#: Optional: the name of each class, in label order (recorded in the run's summary.json).
NAMES_KEY = "class_names"


def read_npz(
    path: str | os.PathLike,
    *,
    validation_size: int | None = None,
    retrain_on_all: bool = False,
    holdout: str = DEFAULT_HOLDOUT,
) -> tuple[dict[str, Arrays], int, tuple[str, ...] | None]:
    """The ``train`` / ``validation`` / ``test`` arrays of an ``.npz`` file, and its classes.

    Without ``x_val``, the validation examples are held out of the training ones as ``holdout``
    says (:data:`~fitnets_tf.data.holdout.HOLDOUT_METHODS`).

    Returns:
        ``({split: (images NHWC, int32 labels)}, number of classes, class names or None)``;
        images as uint8, or float32 when they were floats.

    Raises:
        DataError: the file is missing or unreadable, a key is missing, or an array is bad
            (rank, length, pixel range, labels), naming the key.
    """
    arrays = _load(pathlib.Path(path).expanduser())
    keys = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
    if VALIDATION_KEYS[0] in arrays:
        keys["validation"] = VALIDATION_KEYS
    splits = {split: _pair(arrays, x, y) for split, (x, y) in keys.items()}
    train_images, train_labels = splits["train"]
    for split, (x, y) in keys.items():
        if not len(splits[split][1]):  # an empty test set scores nothing, after all the training
            raise DataError(f"{x} and {y} are empty: give at least one example in each.")
    num_classes = int(train_labels.max()) + 1
    if num_classes < 2:
        raise DataError(
            f"y_train holds only the label {num_classes - 1}, and a classifier needs two classes "
            "or more: give labels 0..K-1 with K >= 2."
        )
    _check_every_class_trains(train_labels, num_classes)
    for split, (x, y) in keys.items():
        if splits[split][0].shape[1:] != train_images.shape[1:]:
            raise DataError(
                f"{x} holds images of shape {splits[split][0].shape[1:]} but x_train's are "
                f"{train_images.shape[1:]}: give images of one shape."
            )
        if len(splits[split][1]) and splits[split][1].max() >= num_classes:
            raise DataError(
                f"{y} holds the label {int(splits[split][1].max())}, out of the range of "
                f"y_train's labels (0..{num_classes - 1}): every class needs training examples. "
                "Fix the labels or add training examples of that class."
            )
    return user_splits(
        splits["train"], splits["test"], splits.get("validation"),
        validation_size=validation_size, retrain_on_all=retrain_on_all, holdout=holdout,
    ), num_classes, _class_names(arrays, num_classes)  # fmt: skip


def _class_names(arrays: dict[str, np.ndarray], num_classes: int) -> tuple[str, ...] | None:
    if NAMES_KEY not in arrays:
        return None
    names = arrays[NAMES_KEY]
    if names.dtype.kind not in "US" or names.shape != (num_classes,):
        raise DataError(
            f"{NAMES_KEY} is a {names.dtype} array of shape {names.shape}: give the {num_classes} "
            f"class names as strings in label order (np.array(['cat', 'dog', ...]))."
        )
    return tuple(str(n.decode() if isinstance(n, bytes) else n) for n in names)


def _pair(arrays: dict[str, np.ndarray], x_key: str, y_key: str) -> Arrays:
    """One split's checked ``(images, labels)``: one label per image."""
    x, y = images(arrays, x_key), labels(arrays, y_key)
    if len(x) != len(y):
        raise DataError(
            f"{x_key} has {len(x)} images but {y_key} has {len(y)} labels: give one label per "
            "image."
        )
    return x, y


def _load(path: pathlib.Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(
            f"The NumPy file {str(path)!r} does not exist: give --dataset=npz:PATH with PATH an "
            f".npz file holding {', '.join(REQUIRED_KEYS)} (np.savez(PATH, x_train=..., ...))."
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):  # a .npy file: one array
            raise ValueError(f"it holds one {loaded.shape} array, not named arrays")
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        # Object arrays need pickle, refused as unsafe (ValueError).
        raise DataError(
            f"Cannot read {path} as an .npz archive of numeric arrays ({e}). Write it with "
            f"np.savez(PATH, {'=..., '.join(REQUIRED_KEYS)}=...)."
        ) from None
    # The validation pair is optional, but not half of it.
    with_validation = any(key in arrays for key in VALIDATION_KEYS)
    expected = REQUIRED_KEYS + (VALIDATION_KEYS if with_validation else ())
    missing = [key for key in expected if key not in arrays]
    if missing:
        raise DataError(
            f"{path} has no {', '.join(missing)} (it holds "
            f"{', '.join(sorted(arrays)) or 'nothing'}): save the arrays under the keys "
            f"{', '.join(REQUIRED_KEYS)}, and optionally {', '.join(VALIDATION_KEYS)} together."
        )
    return arrays


def images(arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    """``arrays[key]`` as NHWC images with pixels in ``[0, 255]`` (a channel axis added to NHW)."""
    x = arrays[key]
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(
            f"{key} has shape {x.shape}: images must be (N, H, W) or (N, H, W, C) arrays."
        )
    if x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 2, 3, 4):
        # PyTorch's layout: read as is, it would be images of C rows with W channels.
        raise DataError(
            f"{key} has shape {x.shape}: channels first, (N, C, H, W). Images must be channels "
            f"last, (N, H, W, C): save np.transpose({key}, (0, 2, 3, 1))."
        )
    if x.dtype == np.uint8:
        return x
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{key} holds {x.dtype} values: images must be uint8 or numbers.")
    if x.size and not np.isfinite(x).all():
        first = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataError(
            f"{key} holds NaN or infinite values (the first in image {first}): give raw pixels, "
            "uint8 or finite numbers in [0, 255]."
        )
    if x.size and not (x.min() >= 0 and x.max() <= 255):
        raise DataError(
            f"{key} holds values outside [0, 255] (from {x.min()} to {x.max()}): give raw "
            "pixels, uint8 or numbers in [0, 255]; the run scales them itself."
        )
    if np.issubdtype(x.dtype, np.floating) and x.size and x.max() <= 1:
        raise DataError(
            f"{key} holds values in [0, 1]: they look already scaled. Give raw pixels in "
            f"[0, 255] (multiply by 255); the run scales them itself."
        )
    return x.astype(np.uint8 if np.issubdtype(x.dtype, np.integer) else np.float32)


def _check_every_class_trains(train_labels: np.ndarray, num_classes: int) -> None:
    """The classes are 0..max(y_train): one without an example is most often a stray label."""
    missing = np.setdiff1d(np.arange(num_classes), train_labels)
    if len(missing):
        shown = ", ".join(str(k) for k in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise DataError(
            f"y_train's labels go up to {num_classes - 1} (so {num_classes} classes), but "
            f"{shown} never occur: every class needs training examples. A stray label? The "
            f"largest, {num_classes - 1}, is at index {int(train_labels.argmax())}. Labels must "
            "be 0..K-1 (renumber them, e.g. with np.unique(y, return_inverse=True))."
        )


def labels(arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    """``arrays[key]`` as int32 class indices.

    Raises:
        DataError: not one label per example (``(N,)`` or ``(N, 1)``), not whole numbers, or
            negative.
    """
    y = arrays[key]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{key} has shape {y.shape}: labels must be an (N,) array of class indices "
            "(one-hot labels: pass y.argmax(axis=1))."
        )
    numeric = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    if not numeric or (y.size and not np.array_equal(y, np.round(y))):
        bad = y.flat[0] if not numeric else y[y != np.round(y)][0]
        # Class names as labels are common; the fix is one NumPy call (sorted names -> 0..K-1).
        raise DataError(
            f"{key} holds {bad.item()!r}, not a class index: labels must be whole numbers 0..K-1. "
            "Names or booleans: number them with `names, y = np.unique(y_all, "
            "return_inverse=True)` over the labels of every split together (class k is names[k])."
        )
    if y.size and y.min() < 0:
        raise DataError(f"{key} holds the negative label {y.min()}: labels must be 0..K-1.")
    return y.astype(np.int32)
