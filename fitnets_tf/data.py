"""tf.data pipelines for the paper's datasets, through TensorFlow Datasets (TFDS), offline.

:func:`load` returns train / validation / test ``tf.data.Dataset`` objects of
``(image, label)`` batches: ``image`` is the network's input, float32 NHWC already passed
through a :class:`~fitnets_tf.preprocessing.Preprocessor`; ``label`` is int32. The same
``Preprocessor`` object (raw pixels in ``[0, 255]`` in, float32 out) is returned so an exported
model can bake it in.

Offline by design: nothing is downloaded unless ``download=True``. A dataset that is neither
prepared under ``data_dir`` nor present as source files in TFDS's manual dir
(``<data_dir>/downloads/manual``) raises :class:`DatasetNotFoundError` at once, instead of TFDS's
minutes of download retries. Fashion-MNIST is prepared from the Debian package
``dataset-fashion-mnist`` (see :func:`stage_fashion_mnist`) by the stock TFDS builder, with its
checksums verified.

Files written: the prepared TFDS datasets under ``data_dir`` (TFDS's layout), the restored
Fashion-MNIST archives in ``<data_dir>/downloads/manual/``, and the fitted ZCA constants in
``<cache_dir or data_dir/fitnets_tf_cache>/<dataset>_<hash>.npz``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import struct
import tempfile

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fitnets_tf.preprocessing import Preprocessor

#: Where the Debian package ``dataset-fashion-mnist`` installs the original IDX gz files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Debian's .gz files hold upstream's deflate stream and trailer byte for byte, under a bare
# 10-byte header (FLG = 0, mtime 2020-06-05). Upstream's header, found by matching the sha256
# that TFDS registers (url_checksums/fashion_mnist.txt): FLG = FNAME, these mtimes, XFL = 0,
# OS = 3 (Unix), then the file name without ".gz" and a NUL (23 bytes more than Debian's).
_FASHION_MNIST_MTIMES = {"train": 1504176606, "t10k": 1504176627}  # 2017-08-31 10:50 UTC


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipelines need to know about one supported dataset.

    Attributes:
        name: key in :data:`DATASETS`.
        tfds_name: TFDS builder name; None for the generated ``synthetic`` data.
        input_shape: image shape ``(H, W, C)``.
        num_classes: number of labels.
        validation_size: examples held out from the end of the first training split, as the
            paper (CIFAR 40K/10K) and its code (MNIST 50K/10K) did.
        train_splits: TFDS splits that form the training data (SVHN adds ``extra``).
        flips: whether horizontal flips preserve the label.
        preprocessing: the :class:`Preprocessor` mode used for ``preprocessing="auto"``.
    """

    name: str
    tfds_name: str | None
    input_shape: tuple[int, int, int]
    num_classes: int
    validation_size: int
    train_splits: tuple[str, ...] = ("train",)
    flips: bool = False
    preprocessing: str = "scale"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", "mnist", (28, 28, 1), 10, 10_000),
        DatasetSpec("fashion_mnist", "fashion_mnist", (28, 28, 1), 10, 10_000, flips=True),
        DatasetSpec("cifar10", "cifar10", (32, 32, 3), 10, 10_000, flips=True,
                    preprocessing="gcn_zca"),
        DatasetSpec("cifar100", "cifar100", (32, 32, 3), 100, 10_000, flips=True,
                    preprocessing="gcn_zca"),
        # Goodfellow et al.'s SVHN protocol (followed by the paper) trains on train + extra and
        # validates on 6,000 examples; they drew them class-balanced from both splits, here
        # they are simply the last 6,000 of `train`. Their local contrast normalisation is not
        # implemented: "auto" scales to [0, 1].
        DatasetSpec("svhn_cropped", "svhn_cropped", (32, 32, 3), 10, 6_000,
                    train_splits=("train", "extra")),
        # Generated, deterministic: 1,280 train(+validation) and 256 test examples.
        DatasetSpec("synthetic", None, (28, 28, 1), 10, 256),
    )
}  # fmt: skip

_SYNTHETIC_SIZES = {"train": 1_280, "test": 256}


class DatasetNotFoundError(ValueError):
    """A dataset is neither prepared nor available offline; the message says where we looked."""


@dataclasses.dataclass(frozen=True)
class Datasets:
    """What :func:`load` returns.

    Attributes:
        train: shuffled (and augmented if asked) batches of ``(float32 NHWC image, int32 label)``.
        validation: same without shuffling/augmentation; None when training on all the data.
        test: same as validation, on the test split.
        spec: the dataset's :class:`DatasetSpec`.
        preprocessor: the fitted layer that produced the images from raw ``[0, 255]`` pixels.
        num_train_examples, num_validation_examples, num_test_examples: split sizes.
        epoch: the training pipeline's epoch counter; keep it in step with Keras' epochs by
            passing ``EpochSync(datasets.epoch)`` to ``fit`` (needed to resume exactly).
        train_examples: the preprocessed training split in memory, in split order, as
            ``(images, labels)`` (None when ``load(cache=False)``): with :func:`epoch_batches`
            it feeds other per-example values (cached teacher outputs) in the same order.
        seed, batch_size, augmenting: how ``train`` was made.
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

    def epoch_callback(self) -> keras.callbacks.Callback:
        """The callback that keeps the training order a function of (seed, epoch)."""
        return EpochSync(self.epoch)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (TFDS's order)."""
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return pathlib.Path(data_dir).expanduser()


def split_names(
    name: str, validation_size: int | None = None, retrain_on_all: bool = False
) -> tuple[str, str | None, str]:
    """TFDS split strings ``(train, validation, test)`` for the paper's protocol.

    The validation examples are the last ``validation_size`` of the first training split
    (``None`` = the paper's size); with ``retrain_on_all`` (or a size of 0) there is no
    validation split and all training data is used, as in the paper's final runs.
    """
    spec = _spec(name)
    size = _validation_size(spec, validation_size, retrain_on_all)
    if size == 0:
        return "+".join(spec.train_splits), None, "test"
    first, *rest = spec.train_splits
    return "+".join([f"{first}[:-{size}]", *rest]), f"{first}[-{size}:]", "test"


def make_synthetic(
    num_examples: int,
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic generated images: a fixed blocky pattern per class plus uniform noise.

    The class patterns do not depend on ``seed`` (it only draws the examples), so splits drawn
    with different seeds share them and a small net learns them in an epoch or two.

    Returns:
        ``(images, labels)``: uint8 ``(N, H, W, C)`` in ``[0, 255]`` and int32 ``(N,)``.
    """
    height, width, channels = input_shape
    patterns = np.random.default_rng(12345).uniform(0, 255, (num_classes, 7, 7, channels))
    # Upsample 7x7 blocks (ceil, then crop) so the signal is spatially coherent, like objects.
    patterns = patterns.repeat(-(-height // 7), axis=1).repeat(-(-width // 7), axis=2)
    patterns = patterns[:, :height, :width]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)
    noise = rng.uniform(0, 255, (num_examples, *input_shape))
    images = 0.5 * patterns[labels] + 0.5 * noise
    return images.round().astype(np.uint8), labels


def stage_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
) -> pathlib.Path:
    """Writes upstream-identical Fashion-MNIST archives into TFDS's manual dir.

    Rebuilds each Debian ``.gz`` with upstream's gzip header, checks the result against the
    sha256 TFDS registers for the upstream URL, and writes it atomically (temporary file, then
    rename) to ``<data_dir>/downloads/manual/``, where the stock ``fashion_mnist`` builder picks
    it up instead of downloading (and verifies the checksum again).

    Returns:
        The manual dir.

    Raises:
        DatasetNotFoundError: a source file is missing.
        ValueError: a rebuilt file does not match the registered checksum.
    """
    source_dir, data_dir = pathlib.Path(source_dir), resolve_data_dir(data_dir)
    manual_dir = data_dir / "downloads" / "manual"
    url_infos = tfds.builder("fashion_mnist", data_dir=data_dir).url_infos
    for url, info in url_infos.items():
        target = manual_dir / info.filename
        if target.exists():
            continue
        source = source_dir / info.filename
        if not source.exists():
            raise DatasetNotFoundError(f"Fashion-MNIST source file not found: {source}")
        data = _with_upstream_header(source.read_bytes(), info.filename)
        if hashlib.sha256(data).hexdigest() != info.checksum or len(data) != info.size:
            raise ValueError(
                f"{source} does not match the checksum TFDS registers for {url} once its gzip "
                f"header is restored (expected sha256 {info.checksum}, {info.size} bytes); the "
                "file is corrupt or not the original Fashion-MNIST."
            )
        _atomic_write(target, data)
    return manual_dir


def ensure_prepared(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    fashion_mnist_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
) -> tfds.core.DatasetBuilder:
    """Returns the TFDS builder of ``name``, preparing it from local files when needed.

    Order: a dataset already prepared under ``data_dir``; else the source files in
    ``<data_dir>/downloads/manual`` (for Fashion-MNIST, first staged there from
    ``fashion_mnist_dir``); else, only with ``download=True``, TFDS's download. Checksums are
    verified by TFDS in every case.

    Raises:
        DatasetNotFoundError: within seconds, listing where it looked and how to fix it.
    """
    spec = _spec(name)
    if spec.tfds_name is None:
        raise ValueError(f"{name!r} is generated, not a TFDS dataset.")
    data_dir = resolve_data_dir(data_dir)
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    manual_dir = data_dir / "downloads" / "manual"
    filenames = [info.filename for info in builder.url_infos.values()]
    debian = pathlib.Path(fashion_mnist_dir)
    if name == "fashion_mnist" and all((debian / f).exists() for f in filenames):
        stage_fashion_mnist(data_dir, debian)
    missing = [f for f in filenames if not (manual_dir / f).exists()]
    if missing and not download:
        raise DatasetNotFoundError(_not_found_message(builder, spec, data_dir, missing, debian))
    # With every file in manual_dir, TFDS reads them and never touches the network.
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    builder.download_and_prepare(download_config=config)
    return builder


def augment_image(
    image: tf.Tensor, seed: tf.Tensor, *, crop_padding: int = 8, flip: bool = True
) -> tf.Tensor:
    """Random crop of the zero-padded image and optional horizontal flip (the paper's code).

    Stateless ops keyed by ``seed`` (int scalar), so a given seed always gives the same result.
    Applied after preprocessing, so the padding is zero in the network's input space, as in the
    original pylearn2 pipeline.
    """
    seed = tf.cast(seed, tf.int64)
    if crop_padding:
        pad = [[crop_padding, crop_padding], [crop_padding, crop_padding], [0, 0]]
        crop_seed = tf.stack([seed, tf.constant(0, tf.int64)])
        image = tf.image.stateless_random_crop(tf.pad(image, pad), tf.shape(image), crop_seed)
    if flip:
        flip_seed = tf.stack([seed, tf.constant(1, tf.int64)])
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    seed: int = 0,
    augment: bool = False,
    crop_padding: int = 8,
    preprocessing: str = "auto",
    validation_size: int | None = None,
    retrain_on_all: bool = False,
    limit: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
    fashion_mnist_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
) -> Datasets:
    """Builds the train / validation / test pipelines of one dataset.

    Args:
        name: a key of :data:`DATASETS`.
        data_dir: TFDS data directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        batch_size: examples per batch (the paper: 128).
        seed: seeds the training order (reshuffled each epoch) and the augmentation; the same
            seed gives the same batches, epoch after epoch, run after run.
        augment: random crops of the zero-padded image and, where :attr:`DatasetSpec.flips`,
            horizontal flips; training split only.
        crop_padding: zero padding before the random crop (the paper's code: 8); 0 disables it.
        preprocessing: a :class:`Preprocessor` mode, or ``"auto"`` for the dataset's default
            (CIFAR: GCN + ZCA, the others: scale to ``[0, 1]``).
        validation_size: held-out examples (None: the paper's 10K; SVHN 6K).
        retrain_on_all: train on all training data, no validation split (the paper's last step).
        limit: keep only the first ``limit`` examples of each split (smoke runs).
        cache: keep the preprocessed examples in memory after the first epoch (CIFAR train:
            40K x 32 x 32 x 3 float32 = 0.5 GB); turn off for SVHN with ``extra``.
        cache_dir: where fitted ZCA constants are stored (default ``<data_dir>/fitnets_tf_cache``).
        download: let TFDS download a missing dataset (needs internet: offline, TFDS retries
            for minutes before failing).
        fashion_mnist_dir: the Debian Fashion-MNIST files used when it is not prepared.

    Returns:
        A :class:`Datasets`.
    """
    spec = _spec(name)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be None or a positive int. Received: limit={limit!r}")
    mode = spec.preprocessing if preprocessing == "auto" else preprocessing
    preprocessor = Preprocessor(mode=mode)
    preprocessor.build((None, *spec.input_shape))
    train_split, validation_split, test_split = split_names(name, validation_size, retrain_on_all)
    if spec.tfds_name is None:
        size = _validation_size(spec, validation_size, retrain_on_all)
        raw, version = _synthetic_splits(spec, size), "generated"
    else:
        builder = ensure_prepared(
            name, data_dir, download=download, fashion_mnist_dir=fashion_mnist_dir
        )
        splits = {"train": train_split, "validation": validation_split, "test": test_split}
        raw = {
            key: builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
            for key, split in splits.items()
            if split is not None
        }
        version = str(builder.version)
    if limit is not None:
        raw = {key: ds.take(limit) for key, ds in raw.items()}
    if mode == "gcn_zca":
        if cache_dir is None and spec.tfds_name is not None:
            cache_dir = resolve_data_dir(data_dir) / "fitnets_tf_cache"
        # Everything the fitted constants depend on; a change means a new cache file.
        key = dict(dataset=name, version=version, split=train_split, limit=limit)
        _fit_zca_cached(preprocessor, raw["train"], key, cache_dir)
    sizes = {key: _count(ds) for key, ds in raw.items()}
    pipeline = dict(preprocessor=preprocessor, batch_size=batch_size, cache=cache)
    train, epoch, train_examples = _train_pipeline(
        raw["train"], sizes["train"], **pipeline, seed=seed, augment=augment,
        crop_padding=crop_padding, flips=spec.flips,
    )  # fmt: skip
    validation = raw.get("validation")
    if validation is not None:
        validation = _pipeline(validation, sizes["validation"], **pipeline)
    return Datasets(
        train=train,
        validation=validation,
        test=_pipeline(raw["test"], sizes["test"], **pipeline),
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
    )


# ---------------------------------------------------------------------------------- helpers


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {sorted(DATASETS)}. Received: name={name!r}")
    return DATASETS[name]


def _with_upstream_header(data: bytes, filename: str) -> bytes:
    """Replaces the gzip header (RFC 1952) of ``data`` by upstream Fashion-MNIST's."""
    if data[:3] != b"\x1f\x8b\x08":
        raise ValueError(f"{filename} is not a gzip file.")
    flags, offset = data[3], 10
    if flags & 4:  # FEXTRA: 2-byte length, then the field
        offset += 2 + struct.unpack("<H", data[offset : offset + 2])[0]
    for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            offset = data.index(b"\0", offset) + 1
    if flags & 2:  # FHCRC
        offset += 2
    mtime = _FASHION_MNIST_MTIMES[filename.split("-")[0]]
    stem = filename.removesuffix(".gz").encode()
    header = b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + stem + b"\0"
    return header + data[offset:]


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    # A crash or a concurrent run never leaves a half-written file under the final name.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _not_found_message(builder, spec, data_dir, missing, debian) -> str:
    manual_dir = data_dir / "downloads" / "manual"
    urls = {info.filename: url for url, info in builder.url_infos.items()}
    lines = [
        f"Dataset {spec.name!r} (TFDS {builder.name} {builder.version}) is not available "
        "offline, and nothing is downloaded unless download=True. Looked for:",
        f"  - a prepared dataset in {builder.data_path} (dataset_info.json): not found",
        f"  - source files in TFDS's manual dir {manual_dir}: missing {', '.join(missing)}",
    ]
    if spec.name == "fashion_mnist":
        lines.append(f"  - the Debian package dataset-fashion-mnist's files in {debian}: not found")
    lines += [
        "To fix it, one of:",
        f"  - on a machine with internet: `tfds build {builder.name} --data_dir=DIR`, then copy "
        f"DIR/{builder.name} to {data_dir}/ (or pass --data_dir / data_dir= pointing at DIR);",
        f"  - download {', '.join(urls[f] for f in missing)} into {manual_dir}/ "
        "(TFDS verifies their checksums);",
        "  - call with download=True on a machine with internet.",
    ]
    if spec.name == "fashion_mnist":
        lines.append(
            "  - `apt-get install dataset-fashion-mnist` (or pass fashion_mnist_dir= to its files)."
        )
    return "\n".join(lines)


def _validation_size(spec: DatasetSpec, validation_size, retrain_on_all: bool) -> int:
    size = spec.validation_size if validation_size is None else validation_size
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"`validation_size` must be an int >= 0. Received: {validation_size!r}")
    return 0 if retrain_on_all else size


def _synthetic_splits(spec: DatasetSpec, validation_size: int) -> dict[str, tf.data.Dataset]:
    shape, classes = spec.input_shape, spec.num_classes
    pool = make_synthetic(_SYNTHETIC_SIZES["train"], input_shape=shape, num_classes=classes)
    test = make_synthetic(_SYNTHETIC_SIZES["test"], input_shape=shape, num_classes=classes, seed=1)
    splits = {"train": pool, "test": test}
    if validation_size:
        # Same arithmetic as the TFDS split strings "train[:-N]" / "train[-N:]".
        splits["train"] = tuple(a[:-validation_size] for a in pool)
        splits["validation"] = tuple(a[-validation_size:] for a in pool)
    return {key: tf.data.Dataset.from_tensor_slices(arrays) for key, arrays in splits.items()}


def _fit_zca_cached(preprocessor, raw_train, key: dict, cache_dir) -> None:
    """Loads the ZCA constants for ``key`` from ``cache_dir`` or fits and stores them."""
    config = preprocessor.get_config()
    params = {k: config[k] for k in ("mode", "gcn_scale", "filter_bias", "min_divisor")}
    key_json = json.dumps({**key, **params}, sort_keys=True)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(key_json.encode()).hexdigest()[:16]
        path = pathlib.Path(cache_dir).expanduser() / f"{key['dataset']}_{digest}.npz"
        if path.exists():
            with np.load(path) as cached:
                if str(cached["key"]) == key_json:  # guards against a changed format
                    preprocessor.set_zca(cached["mean"], cached["whitening"])
                    return
    images = np.concatenate([x for x, _ in tfds.as_numpy(raw_train.batch(4096))])
    preprocessor.adapt(images)
    if path is not None:
        with tempfile.TemporaryFile() as f:
            mean, whitening = (
                w.numpy() for w in (preprocessor.zca_mean, preprocessor.zca_whitening)
            )
            np.savez(f, key=key_json, mean=mean, whitening=whitening)
            f.seek(0)
            _atomic_write(path, f.read())


def _count(ds: tf.data.Dataset) -> int:
    cardinality = int(ds.cardinality())
    if cardinality >= 0:
        return cardinality
    # Only for generator-backed datasets (tfds.testing.mock_data); TFDS splits know their size.
    return int(ds.reduce(np.int64(0), lambda count, _: count + 1))


def _epoch_seed(seed: int, epoch, salt: int):
    """A stateless-op seed (shape [2]) that depends only on (seed, epoch, salt)."""
    return tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + salt, tf.cast(epoch, tf.int64)])


def _pipeline(raw, num_examples, *, preprocessor, batch_size, cache) -> tf.data.Dataset:
    """Validation and test: preprocessed, in order, batched."""
    ds = _preprocessed(raw, num_examples, preprocessor)
    if cache:
        ds = ds.cache()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _preprocessed(raw, num_examples, preprocessor) -> tf.data.Dataset:
    # Preprocess in large batches: ZCA is one (batch, D) x (D, D) matmul, far faster than per image.
    ds = raw.batch(1024).map(
        lambda x, y: (preprocessor(x), tf.cast(y, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.unbatch().apply(tf.data.experimental.assert_cardinality(num_examples))


def _train_pipeline(
    raw, num_examples, *, preprocessor, batch_size, cache, seed, augment, crop_padding, flips
) -> tuple[tf.data.Dataset, tf.Variable, tuple | None]:
    """Training batches whose order and augmentation are a function of (seed, epoch) alone.

    Each new iterator (Keras makes one per epoch) reads the ``epoch`` variable, draws that
    epoch's permutation of the whole split (a uniform shuffle, like pylearn2's) and then
    increments it. :class:`EpochSync` sets it to Keras' epoch index at every epoch start, so an
    interrupted run resumed at epoch ``e`` sees exactly the batches an uninterrupted run saw
    at epoch ``e``. This needs the preprocessed split in memory (``cache=True``); without it the
    split is streamed through a seeded shuffle buffer, reproducible from the start of a run but
    not from the middle.
    """
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    ds = _preprocessed(raw, num_examples, preprocessor)
    augmenting = augment and (crop_padding or flips)
    if not cache:
        ds = ds.shuffle(max(num_examples, 1), seed=seed, reshuffle_each_iteration=True)
        if augmenting:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip(ds, seeds).map(
                lambda example, s: (
                    augment_image(example[0], s, crop_padding=crop_padding, flip=flips),
                    example[1],
                ),
                tf.data.AUTOTUNE,
            )
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), epoch, None

    images, labels = (np.concatenate(a) for a in zip(*tfds.as_numpy(ds.batch(4096)), strict=True))
    images, labels = tf.constant(images), tf.constant(labels)
    if not augmenting:
        batches = epoch_batches(images, labels, epoch=epoch, seed=seed, batch_size=batch_size)
        return batches, epoch, (images, labels)

    def one_epoch(_):
        current, order = _epoch_order(epoch, seed, num_examples)
        indices = tf.data.Dataset.from_tensor_slices(order)
        example_seed = _epoch_seed(seed, current, 1)

        def augmented(i):
            # One seed per (seed, epoch, example): the same crop and flip after a resume.
            s = tf.random.stateless_uniform([], tf.stack([example_seed[0], example_seed[1] * num_examples + i]),
                                            minval=0, maxval=2**62, dtype=tf.int64)  # fmt: skip
            return augment_image(
                tf.gather(images, i), s, crop_padding=crop_padding, flip=flips
            ), tf.gather(labels, i)

        return indices.map(augmented, tf.data.AUTOTUNE).batch(batch_size)

    ds = tf.data.Dataset.range(1).flat_map(one_epoch)
    batches = -(-num_examples // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(tf.data.AUTOTUNE), epoch, (images, labels)


def _epoch_order(epoch: tf.Variable, seed: int, num_examples: int):
    """Reads and advances ``epoch``; returns it and that epoch's permutation of the split."""
    current = epoch.read_value()
    with tf.control_dependencies([current]):
        step = epoch.assign_add(1)
    with tf.control_dependencies([step]):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=_epoch_seed(seed, current, 0)
        )
    return current, order


def epoch_batches(features, labels, *, epoch: tf.Variable, seed: int, batch_size: int):
    """Batches of ``(features, labels)`` in the order :func:`load`'s training pipeline uses.

    ``features`` is a tensor or a dict of tensors whose first axis is the example, in the order
    of :attr:`Datasets.train_examples`. Each epoch draws the permutation of ``(seed, epoch)``,
    the one :func:`load`'s (non-augmented) ``train`` draws; with the same ``epoch`` variable and
    :class:`EpochSync`, precomputed per-example values (teacher outputs) follow the same batches
    and survive a resume.
    """
    num_examples = int(labels.shape[0])

    def one_epoch(_):
        _, order = _epoch_order(epoch, seed, num_examples)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(
            lambda i: (tf.nest.map_structure(lambda t: tf.gather(t, i), features),
                       tf.gather(labels, i))
        )  # fmt: skip

    ds = tf.data.Dataset.range(1).flat_map(one_epoch)
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-num_examples // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)


class EpochSync(keras.callbacks.Callback):
    """Sets the training pipeline's epoch to Keras' epoch index, so order survives a resume."""

    def __init__(self, epoch: tf.Variable):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)
