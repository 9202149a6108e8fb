"""tf.data pipelines for the paper's datasets (through TensorFlow Datasets, offline) and the user's.

:func:`load` returns train / validation / test ``tf.data.Dataset`` objects of
``(image, label)`` batches: ``image`` is the network's input, float32 NHWC already passed
through a :class:`~fitnets_tf.preprocessing.Preprocessor`; ``label`` is int32. The same
``Preprocessor`` object (raw pixels in ``[0, 255]`` in, float32 out) is returned so an exported
model can bake it in.

Besides the built-in names of :data:`DATASETS`, ``load`` takes the user's data (see
:mod:`~fitnets_tf.data.sources`): ``folder:PATH`` (one sub-folder of images per class),
``npz:PATH`` (NumPy arrays) or the name of any TFDS image classification dataset prepared in
``data_dir``. It is checked as it is read (:class:`~fitnets_tf.errors.DataError` names the bad
file, folder or key) and goes through the same preprocessing and pipelines.

Offline by design: nothing is downloaded unless ``download=True``. A dataset that is neither
prepared under ``data_dir`` nor present as source files in TFDS's manual dir
(``<data_dir>/downloads/manual``) raises :class:`DatasetNotFoundError` at once, instead of TFDS's
minutes of download retries. Fashion-MNIST is prepared from the Debian package
``dataset-fashion-mnist`` (see :func:`stage_fashion_mnist`) by the stock TFDS builder, with its
checksums verified.

Files written: the prepared TFDS datasets under ``data_dir`` (TFDS's layout), the restored
Fashion-MNIST archives in ``<data_dir>/downloads/manual/``, and the fitted ZCA constants in
``<cache_dir or data_dir/fitnets_tf_cache>/<dataset>_<hash>.npz``.

The modules, one concept each: :mod:`~fitnets_tf.data.specs` (the supported datasets and
their splits), :mod:`~fitnets_tf.data.locations` (where they live on disk),
:mod:`~fitnets_tf.data.fashion_mnist` (Debian's archives restored),
:mod:`~fitnets_tf.data.tfds_source` (TFDS, offline), :mod:`~fitnets_tf.data.synthetic`
(generated data), :mod:`~fitnets_tf.data.sources` (what a dataset name means; the user's
data through :mod:`~fitnets_tf.data.image_folder` (its images' size and channels from their
headers, :mod:`~fitnets_tf.data.image_headers`), :mod:`~fitnets_tf.data.npz_file`,
:mod:`~fitnets_tf.data.prepared_tfds`, held out by :mod:`~fitnets_tf.data.holdout`),
:mod:`~fitnets_tf.data.shapes` (image sizes), :mod:`~fitnets_tf.data.zca_cache` (fitted ZCA
constants),
:mod:`~fitnets_tf.data.augment` (crops and flips), :mod:`~fitnets_tf.data.pipelines`
(epoch-ordered batches); this module puts them together.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf

from fitnets_tf.data.augment import augment_image
from fitnets_tf.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR, stage_fashion_mnist
from fitnets_tf.data.holdout import (
    DEFAULT_HOLDOUT,
    HOLDOUT_METHODS,
    LEGACY_HOLDOUT,
    TEST_FRACTION,
    VALIDATION_FRACTION,
    check_holdout,
)
from fitnets_tf.data.locations import resolve_data_dir
from fitnets_tf.data.pipelines import (
    EpochSync,
    augmented_epoch_batches,
    count_examples,
    epoch_batches,
    eval_pipeline,
    train_pipeline,
)
from fitnets_tf.data.shapes import (
    CHANNELS,
    DEFAULT_RESIZE_MODE,
    RESIZE_MODES,
    as_height_width,
    aspect_options,
    check_input_shape,
    image_size_problem,
    with_channels,
)
from fitnets_tf.data.sources import dataset_problem, read_user_data
from fitnets_tf.data.specs import DATASETS, DatasetSpec, get_spec, held_out_size, split_names
from fitnets_tf.data.synthetic import make_synthetic, synthetic_splits
from fitnets_tf.data.tfds_source import ensure_prepared, read_splits
from fitnets_tf.data.zca_cache import default_cache_dir, fit_zca_cached
from fitnets_tf.errors import ConfigError, DatasetNotFoundError
from fitnets_tf.preprocessing import MODES, Preprocessor
from fitnets_tf.standardize import as_values, standardize_problems

__all__ = [
    "CHANNELS",
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DatasetNotFoundError",
    "DatasetSpec",
    "Datasets",
    "DEFAULT_HOLDOUT",
    "EpochSync",
    "HOLDOUT_METHODS",
    "LEGACY_HOLDOUT",
    "TEST_FRACTION",
    "VALIDATION_FRACTION",
    "augment_image",
    "built_in_shape",
    "check_input_shape",
    "dataset_problem",
    "ensure_prepared",
    "augmented_epoch_batches",
    "epoch_batches",
    "get_spec",
    "image_size_problem",
    "RESIZE_MODES",
    "load",
    "make_synthetic",
    "resolve_data_dir",
    "split_names",
    "stage_fashion_mnist",
]


@dataclasses.dataclass(frozen=True)
class Datasets:
    """What :func:`load` returns.

    Attributes:
        train: shuffled (and augmented if asked) batches of ``(float32 NHWC image, int32 label)``.
        validation: same without shuffling/augmentation; None when training on all the data.
        test: same as validation, on the test split.
        spec: the dataset's :class:`DatasetSpec` (the user's data: made as it was read).
        preprocessor: the fitted layer that produced the images from raw ``[0, 255]`` pixels.
        num_train_examples, num_validation_examples, num_test_examples: split sizes.
        epoch: the training pipeline's epoch counter; keep it in step with Keras' epochs by
            passing ``EpochSync(datasets.epoch)`` to ``fit`` (needed to resume exactly).
        train_examples: the preprocessed training split in memory, in split order, as
            ``(images, labels)`` (None when ``load(cache=False)``): with :func:`epoch_batches`
            it feeds other per-example values (cached teacher outputs) in the same order.
        seed, batch_size, augmenting: how ``train`` was made.
        augmentation: ``augment_image``'s keyword arguments when augmenting, else None.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    spec: DatasetSpec
    preprocessor: Preprocessor
    num_train_examples: int
    num_validation_examples: int | None
    num_test_examples: int
    epoch: tf.Variable | None = None
    train_examples: tuple[tf.Tensor, tf.Tensor] | None = None
    seed: int = 0
    batch_size: int = 128
    augmenting: bool = False
    augmentation: dict | None = None

    def epoch_callback(self) -> keras.callbacks.Callback:
        """The callback that keeps the training order a function of (seed, epoch)."""
        return EpochSync(self.epoch)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    seed: int = 0,
    augment: bool = False,
    crop_padding: int = 8,
    flip: bool | None = None,
    preprocessing: str = "auto",
    input_mean: float | tuple[float, ...] | None = None,
    input_std: float | tuple[float, ...] | None = None,
    validation_size: int | None = None,
    retrain_on_all: bool = False,
    limit: int | None = None,
    image_size: int | tuple[int, ...] | None = None,
    resize_mode: str = DEFAULT_RESIZE_MODE,
    channels: int | None = None,
    holdout: str = DEFAULT_HOLDOUT,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
    fashion_mnist_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
) -> Datasets:
    """Builds the train / validation / test pipelines of one dataset.

    Args:
        name: a key of :data:`DATASETS`; or the user's data: ``folder:PATH``, ``npz:PATH``,
            or a TFDS image classification dataset prepared in ``data_dir``.
        data_dir: TFDS data directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        batch_size: examples per batch (the paper: 128).
        seed: seeds the training order (reshuffled each epoch) and the augmentation; the same
            seed gives the same batches, epoch after epoch, run after run.
        augment: random crops of the zero-padded image and, where :attr:`DatasetSpec.flips`,
            horizontal flips; training split only.
        crop_padding: zero padding before the random crop (the paper's code: 8); 0 disables it.
        flip: whether ``augment`` flips images horizontally: None, where
            :attr:`DatasetSpec.flips` (the built-in datasets whose labels survive a mirror; not
            the user's data, which may hold digits or text); True or False overrides that.
        preprocessing: a :class:`Preprocessor` mode, or ``"auto"`` for the dataset's default
            (CIFAR: GCN + ZCA, the others and the user's data: scale to ``[0, 1]``).
        input_mean, input_std: ``preprocessing="standardize"`` only, which needs both:
            torchvision's ``Normalize(mean, std)`` constants, in its scale of pixels / 255,
            one value or one per channel (of the images as ``channels`` converts them).
        validation_size: held-out examples (None: the paper's 10K; SVHN 6K; the user's data:
            :data:`VALIDATION_FRACTION` of the training examples).
        retrain_on_all: train on all training data, no validation split (the paper's last step).
        limit: keep only the first ``limit`` examples of each split (smoke runs).
        image_size: the user's data only: ``(height, width)`` or one side, the images are
            resized to it (default: a folder's most common size, the arrays', TFDS's).
        resize_mode: the user's data only: how an image of another aspect ratio is resized,
            ``stretch`` (whole, distorted), ``crop`` (the centred box of the target's aspect
            ratio) or ``pad`` (whole, letterboxed in black); see :data:`RESIZE_MODES`. Without
            ``image_size``, a folder's only: an ``.npz`` file's or a TFDS dataset's images are
            not resized, and a mode other than the default is refused.
        channels: 1 or 3 converts the images to grayscale or RGB where they are not (for a
            model that takes the other); None keeps the data's.
        holdout: the user's folder or ``.npz`` file only: how the examples it does not split
            itself are held out, and the splits it gives ordered: ``stratified_mixed`` (per
            class, given splits mixed: new runs), ``stratified`` or ``random`` (runs recorded
            before; see :mod:`~fitnets_tf.data.holdout`). A run reads its own from
            its ``data.json`` (:func:`fitnets_tf.builders.run_holdout`). Ignored by the
            built-in and prepared TFDS datasets, which hold out their last examples.
        cache: keep the preprocessed examples in memory after the first epoch (CIFAR train:
            40K x 32 x 32 x 3 float32 = 0.5 GB); turn off for SVHN with ``extra``.
        cache_dir: where fitted ZCA constants are stored (default ``<data_dir>/fitnets_tf_cache``).
        download: let TFDS download a missing dataset (needs internet: offline, TFDS retries
            for minutes before failing).
        fashion_mnist_dir: the Debian Fashion-MNIST files used when it is not prepared.

    Returns:
        A :class:`Datasets`.

    Raises:
        ConfigError: an argument is out of range, ``resize_mode`` would do nothing, or
            ``input_mean``/``input_std`` do not fit ``preprocessing`` or the images' channels.
        DatasetNotFoundError: the dataset is not available offline (see :func:`ensure_prepared`).
        DataError: the user's data cannot be used; the message names the file, folder or key.
    """
    _check_arguments(batch_size, limit, preprocessing)
    standardized = dict(mode=preprocessing, mean=as_values(input_mean), std=as_values(input_std))
    _check_standardized(**standardized)  # the images' channels are checked once they are read
    aspect_options(resize_mode)  # bad values are refused before any data is read
    check_holdout(holdout)
    held_out = dict(validation_size=validation_size, retrain_on_all=retrain_on_all)
    if name in DATASETS:
        spec = get_spec(name)
        _check_built_in_size(spec, image_size, resize_mode)
        offline = dict(download=download, fashion_mnist_dir=fashion_mnist_dir)
        raw, zca_key, class_names = _built_in_splits(spec, data_dir, **held_out, **offline)
        spec = dataclasses.replace(spec, class_names=class_names)
        if cache_dir is None and spec.tfds_name is not None:
            cache_dir = default_cache_dir(data_dir)
    else:
        raw, spec = read_user_data(
            name, data_dir=data_dir, image_size=image_size, resize_mode=resize_mode,
            holdout=holdout, **held_out,
        )  # fmt: skip
        # The user's files carry no version to key a cache on: ZCA is fitted afresh.
        zca_key, cache_dir = dict(dataset=name), None
    converted, spec = with_channels(raw, spec, channels)
    if flip is not None:  # the user's word on whether a mirror keeps the label
        spec = dataclasses.replace(spec, flips=bool(flip))
    if converted is not raw:  # the whitening constants of other images
        raw, zca_key = converted, dict(zca_key, channels=channels)
    preprocessor = _unfitted_preprocessor(spec, **standardized)
    if limit is not None:
        raw = {key: ds.take(limit) for key, ds in raw.items()}
    if preprocessor.mode == "gcn_zca":
        fit_zca_cached(preprocessor, raw["train"], dict(zca_key, limit=limit), cache_dir)
    training = dict(seed=seed, augment=augment, crop_padding=crop_padding)
    return _datasets(raw, spec, preprocessor, batch_size=batch_size, cache=cache, **training)


def _check_arguments(batch_size, limit, preprocessing) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"`limit` must be None or a positive int. Received: limit={limit!r}")
    if preprocessing != "auto" and preprocessing not in MODES:
        raise ConfigError(
            f"`preprocessing` must be 'auto' or one of {MODES}. Received: {preprocessing!r}"
        )


def _check_standardized(mode: str, mean, std, channels: int | None = None) -> None:
    if problems := standardize_problems(mode, mean, std, channels, flags=True):
        raise ConfigError("; ".join(problems) + ".")


def built_in_shape(name: str, image_size=None, resize_mode: str = DEFAULT_RESIZE_MODE,
                   channels: int | None = None) -> tuple[tuple[int, int, int], int]:  # fmt: skip
    """The built-in dataset ``name``'s images' ``(H, W, C)`` and class count, as :func:`load`
    gives them with these arguments (``channels`` converts), no data read; the arguments it
    refuses are refused here too."""
    spec = get_spec(name)
    _check_built_in_size(spec, image_size, resize_mode)
    height, width, own = spec.input_shape
    return (height, width, channels or own), spec.num_classes


def _check_built_in_size(spec: DatasetSpec, image_size, resize_mode: str) -> None:
    size = as_height_width(image_size)
    height, width, _ = spec.input_shape
    if size is not None and size != spec.input_shape[:2]:
        raise ConfigError(
            f"`image_size` resizes the user's data only; {spec.name!r} is {height}x{width}. "
            f"Received: image_size={image_size!r}"
        )
    if resize_mode != DEFAULT_RESIZE_MODE:
        raise ConfigError(
            f"`resize_mode` applies to the user's data only; {spec.name!r}'s images are all "
            f"{height}x{width} and are not resized. Received: resize_mode={resize_mode!r}"
        )


def _built_in_splits(
    spec: DatasetSpec, data_dir, *, validation_size, retrain_on_all, download, fashion_mnist_dir
) -> tuple[dict[str, tf.data.Dataset], dict, tuple[str, ...] | None]:
    """The raw splits of a built-in dataset, what fitted ZCA constants on it depend on, and its
    class names (TFDS's, as prepared: CIFAR's come from its files; None for generated data)."""
    split_strings = split_names(spec.name, validation_size, retrain_on_all)
    names = dict(zip(("train", "validation", "test"), split_strings, strict=True))
    if spec.tfds_name is None:
        size = held_out_size(spec, validation_size, retrain_on_all)
        raw, version, class_names = synthetic_splits(spec, size), "generated", None
    else:
        builder = ensure_prepared(
            spec.name, data_dir, download=download, fashion_mnist_dir=fashion_mnist_dir
        )
        raw, version = read_splits(builder, names), str(builder.version)
        class_names = tuple(builder.info.features["label"].names)
    # Everything the fitted constants depend on; a change means a new cache file.
    return raw, dict(dataset=spec.name, version=version, split=names["train"]), class_names


def _unfitted_preprocessor(spec: DatasetSpec, mode: str, mean, std) -> Preprocessor:
    """The built :class:`Preprocessor` of ``mode`` ("auto": the dataset's own mode)."""
    _check_standardized(mode, mean, std, channels=spec.input_shape[-1])
    mode = spec.preprocessing if mode == "auto" else mode
    preprocessor = Preprocessor(mode=mode, mean=mean, std=std)
    preprocessor.build((None, *spec.input_shape))
    return preprocessor


def _datasets(
    raw, spec, preprocessor, *, batch_size, cache, seed, augment, crop_padding
) -> Datasets:
    """The batched pipelines of the raw splits, with their sizes."""
    sizes = {key: count_examples(ds) for key, ds in raw.items()}
    pipeline = dict(preprocessor=preprocessor, batch_size=batch_size, cache=cache)
    train, epoch, train_examples = train_pipeline(
        raw["train"], sizes["train"], **pipeline, seed=seed, augment=augment,
        crop_padding=crop_padding, flips=spec.flips,
    )  # fmt: skip
    validation = raw.get("validation")
    if validation is not None:
        validation = eval_pipeline(validation, sizes["validation"], **pipeline)
    return Datasets(
        train=train,
        validation=validation,
        test=eval_pipeline(raw["test"], sizes["test"], **pipeline),
        spec=spec,
        preprocessor=preprocessor,
        num_train_examples=sizes["train"],
        num_validation_examples=sizes.get("validation"),
        num_test_examples=sizes["test"],
        epoch=epoch,
        train_examples=train_examples,
        seed=seed,
        batch_size=batch_size,
        augmenting=bool(augment and (crop_padding or spec.flips)),
        augmentation=dict(crop_padding=crop_padding, flip=spec.flips) if augment else None,
    )
