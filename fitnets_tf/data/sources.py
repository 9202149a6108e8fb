"""What a ``--dataset`` value names, and reading the user's own data.

* a built-in name (:data:`~fitnets_tf.data.specs.DATASETS`): the paper's datasets, through
  :mod:`~fitnets_tf.data.tfds_source`;
* ``folder:PATH``: images in one sub-folder per class (:mod:`~fitnets_tf.data.image_folder`);
* ``npz:PATH``: NumPy arrays (:mod:`~fitnets_tf.data.npz_file`);
* any other dataset TFDS knows, prepared in ``data_dir`` (:mod:`~fitnets_tf.data.prepared_tfds`).

The user's data has no :class:`~fitnets_tf.data.specs.DatasetSpec` in advance: reading it
makes one (shape, classes, class names). Its defaults: preprocessing ``scale`` (to ``[0, 1]``)
and no flips (``augment`` crops only: a flip changes the label of a digit or a letter).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile

import numpy as np
import tensorflow as tf

from fitnets_tf.data.holdout import DEFAULT_HOLDOUT
from fitnets_tf.data.image_folder import VALIDATION_FOLDERS, read_folder
from fitnets_tf.data.npz_file import VALIDATION_KEYS, read_npz
from fitnets_tf.data.prepared_tfds import is_tfds_name, read_prepared
from fitnets_tf.data.shapes import DEFAULT_RESIZE_MODE, as_height_width, at_size
from fitnets_tf.data.specs import DATASETS, DatasetSpec
from fitnets_tf.errors import ConfigError

FOLDER = "folder:"
NPZ = "npz:"


def dataset_problem(name: str) -> str | None:
    """What is wrong with a ``--dataset`` value, one sentence, or None (a cheap check).

    Built-in names pass; ``folder:PATH`` and ``npz:PATH`` when PATH exists; other names when
    TFDS knows them (whether they are prepared in ``data_dir`` is checked as they are read).
    """
    if name in DATASETS:
        return None
    for prefix, kind, exists in ((FOLDER, "folder", os.path.isdir), (NPZ, "file", os.path.isfile)):
        if name.startswith(prefix):
            path = os.path.expanduser(name.removeprefix(prefix))
            if not exists(path):
                return f"dataset {kind} {path!r} does not exist (--dataset={name})"
            return None
    if is_tfds_name(name):
        return None
    return (
        f"unknown dataset {name!r} (valid: a built-in name ({', '.join(DATASETS)}), "
        "folder:PATH (one sub-folder of images per class), npz:PATH (x_train, y_train, x_test, "
        "y_test arrays), or a TFDS dataset prepared in --data_dir)"
    )


def gives_validation(name: str) -> bool | None:
    """Whether the user's folder or ``.npz`` file holds its own validation split, read
    cheaply (sub-folder names, archive keys) so that a config check needs no image: None when
    it cannot tell (another dataset, a missing or unreadable path: reading it will say why).
    """
    path = pathlib.Path(os.path.expanduser(name.removeprefix(FOLDER).removeprefix(NPZ)))
    if name.startswith(FOLDER) and path.is_dir():
        # read_folder's layout: validation/ (or val/) counts only beside train/ and test/.
        given = [path / part for part in ("train", "test")]
        found = [path / part for part in VALIDATION_FOLDERS if (path / part).is_dir()]
        return all(part.is_dir() for part in given) and bool(found)
    if name.startswith(NPZ) and path.is_file():
        try:
            with np.load(path) as arrays:  # lists the archive; reads no array
                return VALIDATION_KEYS[0] in arrays.files
        except (OSError, ValueError, zipfile.BadZipFile):
            return None
    return None


def read_user_data(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    image_size=None,
    resize_mode: str = DEFAULT_RESIZE_MODE,
    validation_size: int | None = None,
    retrain_on_all: bool = False,
    holdout: str = DEFAULT_HOLDOUT,
) -> tuple[dict[str, tf.data.Dataset], DatasetSpec]:
    """The raw splits of a dataset that is not built in, and the spec made from them.

    Args:
        name: ``folder:PATH``, ``npz:PATH`` or a TFDS dataset prepared in ``data_dir``.
        data_dir: the TFDS data dir (TFDS datasets only).
        image_size: ``(height, width)`` or one side: the images are resized to it; None: the
            most common size of the folder's images, the arrays' or the TFDS dataset's.
        resize_mode: how an image of another aspect ratio is resized: ``stretch``, ``crop``
            or ``pad`` (:data:`~fitnets_tf.data.shapes.RESIZE_MODES`).
        validation_size: examples held out of the training ones (None: 10%; 0: none). An
            ``.npz`` file's ``x_val`` / ``y_val`` are used instead when present.
        retrain_on_all: no validation split; its examples are trained on.
        holdout: how a folder's or ``.npz`` file's held-out examples are drawn
            (:data:`~fitnets_tf.data.holdout.HOLDOUT_METHODS`); a TFDS dataset holds out the
            last ones of ``train`` whatever it says.

    Returns:
        ``({"train", "validation" (unless none), "test": raw (image, label) examples},
        spec)``: images in ``[0, 255]`` (uint8, or float32), labels ints.

    Raises:
        ConfigError: a ``resize_mode`` that would do nothing (:func:`check_resize_mode`).
        DataError: the data cannot be used (the message names the file, folder or key).
        DatasetNotFoundError: a TFDS dataset that is not prepared.
    """
    size = as_height_width(image_size)
    check_resize_mode(name, size, resize_mode)
    held_out = dict(validation_size=validation_size, retrain_on_all=retrain_on_all)
    if name.startswith(FOLDER):
        arrays, class_names, formatting = read_folder(
            name.removeprefix(FOLDER), image_size=size, resize_mode=resize_mode, **held_out,
            holdout=holdout,
        )  # fmt: skip
        raw, spec = _from_arrays(name, arrays, len(class_names), class_names, holdout)
    elif name.startswith(NPZ):
        drawn = read_npz(name.removeprefix(NPZ), **held_out, holdout=holdout)
        raw, spec = _from_arrays(name, *drawn, holdout)
        formatting = {"size_from": "--image_size" if size else "the file's arrays"}
    else:
        raw, spec = read_prepared(name, data_dir, **held_out)
        formatting = {"size_from": "--image_size" if size else "the prepared dataset's images"}
    return at_size(raw, dataclasses.replace(spec, formatting=formatting), size, resize_mode)


def resizes(name: str, image_size: tuple[int, int] | None) -> bool:
    """Whether the dataset ``name`` has images resized, so that a ``resize_mode`` applies: to an
    ``image_size``, or a folder's to its images' most common size."""
    return image_size is not None or name.startswith(FOLDER)


def check_resize_mode(name: str, image_size: tuple[int, int] | None, resize_mode: str) -> None:
    """Refuses a ``resize_mode`` other than the default that would do nothing.

    Without ``image_size``, only a folder's images are resized (those of another size than
    its most common one, to that size); an ``.npz`` file's arrays and a prepared TFDS dataset are read
    at their size, so a ``resize_mode`` there would silently not apply. A TFDS dataset whose
    images vary in size needs ``image_size`` anyway (:func:`~fitnets_tf.data.shapes.at_size`
    refuses it without one): the same rule, the same fix. Checked before any data is read.

    Raises:
        ConfigError: naming the values received and the two fixes.
    """
    if resize_mode == DEFAULT_RESIZE_MODE or resizes(name, image_size):
        return
    raise ConfigError(
        f"`resize_mode` says how images are resized to `image_size`, and {name!r} is not an "
        "image folder: without `image_size` its images are read at their own size (only a "
        f"folder's images of another size than its most common one are resized), so resize_mode="
        f"{resize_mode!r} would do nothing. Pass --image_size=HEIGHT,WIDTH (image_size= in "
        "Python) to resize them, or drop --resize_mode. Received: "
        f"resize_mode={resize_mode!r}, image_size=None"
    )


def _from_arrays(name, arrays, num_classes, class_names, holdout) -> tuple[dict, DatasetSpec]:
    images = arrays["train"][0]
    validation = arrays.get("validation")
    spec = DatasetSpec(
        name, None, tuple(images.shape[1:]), num_classes,
        0 if validation is None else len(validation[1]), class_names=class_names,
        holdout=holdout,
    )  # fmt: skip
    raw = {key: tf.data.Dataset.from_tensor_slices(pair) for key, pair in arrays.items()}
    return raw, spec
