"""Any TFDS image-classification dataset already prepared in ``data_dir`` (``--dataset=NAME``).

For datasets other than the built-in ones: ``tfds build beans --data_dir=DIR`` on a machine with
internet, then ``--data_dir=DIR`` (or a copy of ``DIR/beans`` in the data dir) here. Nothing is
ever downloaded: a dataset not prepared fails at once, saying where it looked.

The dataset needs an ``image`` and a ``label`` (class label) feature, a ``train`` and a ``test``
split. As for the paper's datasets, the validation examples are the last ones of ``train``
(``validation_size``, default :data:`~fitnets_tf.data.holdout.VALIDATION_FRACTION` of it), not
a stratified draw as for a folder or an ``.npz`` file (:mod:`~fitnets_tf.data.holdout`): TFDS
shuffles the examples when it prepares a dataset (by a hash of each example's key), so its last
examples are already a random sample rather than a block of one class; they are a slice TFDS
streams from its files (``train[-N:]``), where a draw per class would read every label first and
filter the whole split by index; and every run on such a dataset keeps its validation examples
without a method to record. (A builder that sets ``disable_shuffling`` keeps its own order: its
last examples are whatever it wrote last.)
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from fitnets_tf.data.holdout import VALIDATION_FRACTION, held_out_count
from fitnets_tf.data.locations import resolve_data_dir
from fitnets_tf.data.specs import DATASETS, DatasetSpec
from fitnets_tf.data.tfds_source import check_complete
from fitnets_tf.errors import DataError, DatasetNotFoundError


def is_tfds_name(name: str) -> bool:
    """Whether TFDS knows ``name`` (``NAME``, ``NAME/CONFIG``, ``NAME:VERSION``); no file read."""
    base = name.split(":")[0].split("/")[0]
    try:
        tfds.builder_cls(base)
    except (tfds.core.DatasetNotFoundError, ValueError):
        return False
    return True


def read_prepared(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    validation_size: int | None = None,
    retrain_on_all: bool = False,
) -> tuple[dict[str, tf.data.Dataset], DatasetSpec]:
    """The raw ``train`` / ``validation`` / ``test`` splits of a prepared TFDS dataset.

    Returns:
        ``({split: (image, label) examples in file order}, spec)``; no ``validation`` with
        ``retrain_on_all`` or ``validation_size=0``. The spec's input shape has None where the
        images vary in size.

    Raises:
        DatasetNotFoundError: not prepared in ``data_dir``, within a second.
        DataError: not an image classification dataset with ``train`` and ``test`` splits.
    """
    builder = prepared_builder(name, data_dir)
    features, splits = dict(builder.info.features.items()), builder.info.splits
    image, label = features.get("image"), features.get("label")
    classifies = isinstance(image, tfds.features.Image) and isinstance(
        label, tfds.features.ClassLabel
    )
    if not classifies:
        raise DataError(
            f"TFDS dataset {name!r} is not an image classification dataset: it needs an 'image' "
            f"(Image) and a 'label' (ClassLabel) feature; its features are "
            f"{', '.join(features)}. Export its images "
            "to a folder (--dataset=folder:PATH) or an .npz file (--dataset=npz:PATH)."
        )
    if "train" not in splits or "test" not in splits:
        raise DataError(
            f"TFDS dataset {name!r} has the splits {', '.join(splits)}, and a run needs 'train' "
            "and 'test'. Export its images to a folder with train/ and test/ sub-folders "
            "(--dataset=folder:PATH) or to an .npz file (--dataset=npz:PATH)."
        )
    pool = splits["train"].num_examples
    count = 0
    if not retrain_on_all:
        count = held_out_count(pool, validation_size, VALIDATION_FRACTION, "validation")
    names = {"train": f"train[:-{count}]", "validation": f"train[-{count}:]", "test": "test"}
    if count == 0:
        names = {"train": "train", "test": "test"}
    raw = {
        key: builder.as_dataset(split=split, shuffle_files=False).map(
            lambda example: (example["image"], example["label"])
        )
        for key, split in names.items()
    }
    spec = DatasetSpec(
        name, builder.name, tuple(image.shape), label.num_classes, count,
        class_names=tuple(label.names),
    )  # fmt: skip
    return raw, spec


def prepared_builder(
    name: str, data_dir: str | os.PathLike | None = None
) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``name`` when it is prepared in ``data_dir``; never downloads.

    Raises:
        DatasetNotFoundError: saying where it looked and how to prepare it; or that its files
            are incomplete (:func:`~fitnets_tf.data.tfds_source.check_complete`).
    """
    data_dir = resolve_data_dir(data_dir)
    base = name.split(":")[0].split("/")[0]
    builder, missing = None, f"no folder {data_dir / base}"
    if (data_dir / base).is_dir():
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except ValueError as e:  # TFDS's DatasetNotFoundError, or a config it does not know
            missing = str(e).strip().splitlines()[0]
        else:
            missing = f"no {builder.data_path / 'dataset_info.json'}"
    if builder is not None and builder.is_prepared():
        check_complete(builder, name)
        return builder
    raise DatasetNotFoundError(
        f"Dataset {name!r} is neither built in ({', '.join(DATASETS)}) nor prepared in "
        f"{data_dir} ({missing}), and nothing is downloaded. To use it, run `tfds build {base} "
        f"--data_dir=DIR` on a machine with internet and pass --data_dir=DIR (or copy DIR/{base} "
        f"into {data_dir}); or give your images as --dataset=folder:PATH or --dataset=npz:PATH."
    )
