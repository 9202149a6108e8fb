"""Tests of fitnets_tf.data and fitnets_tf.preprocessing (offline; the whole file runs in ~1 min).

The Fashion-MNIST tests read the real data from the Debian package `dataset-fashion-mnist`
(CI installs it); the other TFDS datasets go through `tfds.testing.mock_data`, which works
offline.
"""

import hashlib
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fitnets_tf import data, errors
from fitnets_tf.preprocessing import Preprocessor, fit_zca, global_contrast_normalize

DEBIAN_DIR = pathlib.Path(data.DEBIAN_FASHION_MNIST_DIR)
needs_debian = pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason=f"Debian package dataset-fashion-mnist not installed ({DEBIAN_DIR} absent); "
    "CI installs it.",
)


@pytest.fixture(scope="module")
def fashion_data_dir(tmp_path_factory):
    """A TFDS data_dir where Fashion-MNIST is prepared once from the Debian files (~10 s)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    data.ensure_prepared("fashion_mnist", data_dir)
    return data_dir


def _first_epoch(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


# ------------------------------------------------------------------------- Fashion-MNIST


@needs_debian
def test_fashion_mnist_prepared_from_debian_files_with_checksums(fashion_data_dir):
    builder = tfds.builder("fashion_mnist", data_dir=fashion_data_dir)
    assert builder.is_prepared()
    assert builder.info.splits["train"].num_examples == 60_000
    assert builder.info.splits["test"].num_examples == 10_000
    # The staged archives are byte-identical to upstream's: the registered checksums hold.
    manual_dir = fashion_data_dir / "downloads" / "manual"
    for info in builder.url_infos.values():
        digest = hashlib.sha256((manual_dir / info.filename).read_bytes()).hexdigest()
        assert digest == info.checksum


@needs_debian
def test_fashion_mnist_load_splits_and_batches(fashion_data_dir):
    datasets = data.load("fashion_mnist", data_dir=fashion_data_dir, batch_size=256)
    assert (datasets.num_train_examples, datasets.num_validation_examples) == (50_000, 10_000)
    assert datasets.num_test_examples == 10_000
    assert datasets.input_shape == (28, 28, 1) and datasets.num_classes == 10
    # TFDS's names, in label order: the run's summary.json and its exports carry them.
    assert datasets.spec.class_names[:3] == ("T-shirt/top", "Trouser", "Pullover")
    assert datasets.spec.class_names[-1] == "Ankle boot" and len(datasets.spec.class_names) == 10
    labels = np.concatenate([y for _, y in _first_epoch(datasets.test)])
    assert len(labels) == 10_000 and labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [1000] * 10
    x, _ = next(iter(datasets.train))
    assert x.shape == (256, 28, 28, 1) and x.dtype == tf.float32
    assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 1.0

    all_data = data.load("fashion_mnist", data_dir=fashion_data_dir, retrain_on_all=True)
    assert all_data.num_train_examples == 60_000 and all_data.validation is None


@needs_debian
def test_corrupt_debian_file_is_rejected(tmp_path):
    source = tmp_path / "debian"
    source.mkdir()
    for path in DEBIAN_DIR.iterdir():
        (source / path.name).symlink_to(path)
    corrupt = source / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(corrupt.read_bytes())
    content[-20] ^= 1
    corrupt.unlink()
    corrupt.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="checksum"):
        data.stage_fashion_mnist(tmp_path / "tfds", source)
    assert not (tmp_path / "tfds/downloads/manual/t10k-labels-idx1-ubyte.gz").exists()


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10"])
def test_missing_dataset_fails_fast_and_says_where_it_looked(tmp_path, name, network_attempts):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load(name, data_dir=tmp_path, fashion_mnist_dir=tmp_path / "no-debian")
    assert network_attempts == []  # no download tried, so none to wait for
    message = str(error.value)
    assert str(tmp_path / name) in message
    assert str(tmp_path / "downloads" / "manual") in message
    assert f"tfds build {name} --data_dir=" in message
    assert f"fitnets_tf.data.load({name!r}, data_dir={str(tmp_path)!r}, download=True) (the " \
        "command line never downloads)" in message
    if name == "fashion_mnist":
        assert str(tmp_path / "no-debian") in message
        assert "apt-get install dataset-fashion-mnist" in message
    assert not (tmp_path / name).exists()  # nothing half-prepared was left behind


# ----------------------------------------------------------------------- preprocessing


def test_gcn_matches_hand_computed_values():
    images = np.array([[0, 1, 2, 3], [5, 5, 5, 5]], np.uint8).reshape(2, 2, 2, 1)
    # Image 1: mean 1.5, centred [-1.5, -.5, .5, 1.5], L2 norm sqrt(5), times 55 / sqrt(5):
    # 1.5 * 55 / 2.2360680 = 36.895123, 0.5 * 55 / 2.2360680 = 12.298374.
    # Image 2 is constant: centred to zeros, divisor 0 < min_divisor is replaced by 1.
    expected = np.array([[-36.895123, -12.298374, 12.298374, 36.895123], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(global_contrast_normalize(images), expected, rtol=1e-6)
    layer_out = Preprocessor(mode="gcn")(images)
    np.testing.assert_allclose(np.reshape(layer_out, (2, 4)), expected, rtol=1e-5, atol=1e-5)


def test_zca_whitens_to_identity_covariance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6)) + 3.0
    mean, whitening = fit_zca(x, filter_bias=0.0)
    white = (x - mean) @ whitening
    np.testing.assert_allclose(white.T @ white / len(x), np.eye(6), atol=1e-3)
    np.testing.assert_allclose(whitening, whitening.T, atol=1e-5)  # ZCA, not PCA: symmetric
    # filter_bias shrinks the whitened variances below 1.
    _, biased = fit_zca(x, filter_bias=0.1)
    assert np.all(np.diag(((x - mean) @ biased).T @ ((x - mean) @ biased) / len(x)) < 1)


def test_preprocessor_validates_arguments():
    with pytest.raises(ValueError, match="Received: mode='zca'"):
        Preprocessor(mode="zca")
    with pytest.raises(ValueError, match="Received: gcn_scale=0"):
        Preprocessor(gcn_scale=0)


def test_preprocessor_round_trips_through_keras_file(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, (64, 4, 4, 3)).astype(np.uint8)
    layer = Preprocessor(mode="gcn_zca")
    layer.adapt(raw)
    clone = Preprocessor.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "preprocessor.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[-1], Preprocessor)
    expected = model.predict(raw.astype(np.float32), verbose=0)
    np.testing.assert_array_equal(loaded.predict(raw.astype(np.float32), verbose=0), expected)
    # What the pipeline feeds the network is what the exported layer computes.
    np.testing.assert_allclose(layer(raw), expected, atol=1e-5)
    # Whitening the training data gives roughly unit variance along the data's directions.
    assert 0.5 < float(np.std(expected)) < 1.5


# ImageNet's per-channel constants, as torchvision's Normalize takes them (of pixels / 255).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_standardize_is_torchvisions_normalize():
    raw = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    layer = Preprocessor(mode="standardize", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    # ToTensor() then Normalize(mean, std): (pixels / 255 - mean) / std, channel by channel.
    expected = (raw / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(layer(raw), expected, rtol=1e-5, atol=1e-5)
    # One value is every channel's (Fashion-MNIST's, on 1-channel images).
    gray = raw[..., :1]
    one = Preprocessor(mode="standardize", mean=0.2860, std=0.3530)
    np.testing.assert_allclose(one(gray), (gray / 255.0 - 0.2860) / 0.3530, rtol=1e-5, atol=1e-5)
    # A float pixel of 255 is a uint8 one (the pipelines convert some images to float32).
    np.testing.assert_allclose(layer(raw.astype(np.float32)), layer(raw))


def test_standardize_round_trips_through_keras_file(tmp_path):
    raw = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    layer = Preprocessor(mode="standardize", mean=IMAGENET_MEAN, std=(0.25,))
    clone = Preprocessor.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "preprocessor.keras")
    loaded = keras.saving.load_model(tmp_path / "preprocessor.keras", safe_mode=True)
    expected = (raw / 255.0 - np.array(IMAGENET_MEAN)) / 0.25
    np.testing.assert_allclose(loaded.predict(raw, verbose=0), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "standardize"},
         r"needs `mean` and `std`.*Received: mode='standardize', mean=None, std=None"),
        ({"mode": "standardize", "mean": 0.5}, r"needs `mean` and `std`"),
        ({"mode": "scale", "mean": 0.5, "std": 0.2},
         r"are the constants of mode=standardize, and this mode is 'scale'"),
        ({"mode": "standardize", "mean": 0.5, "std": 0.0},
         r"`std` must be positive and finite.*std=\(0.0,\)"),
        ({"mode": "standardize", "mean": 0.5, "std": -1}, r"`std` must be positive"),
        ({"mode": "standardize", "mean": float("nan"), "std": 1}, r"`mean` must be in \[0, 1\]"),
        # ImageNet's statistics of raw pixels (mmcv's, timm's): torchvision's times 255.
        ({"mode": "standardize", "mean": (123.675, 116.28, 103.53),
          "std": (58.395, 57.12, 57.375)},
         r"`mean` must be in \[0, 1\].*divide them and `std` by 255 \(123.675 is 0.485\)"),
        ({"mode": "standardize", "mean": (0.5, 0.5), "std": (0.2, 0.2, 0.2)},
         r"`mean` has 2 values and `std` 3"),
    ],
)  # fmt: skip
def test_preprocessor_refuses_bad_standardize_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocessor(**kwargs)


def test_standardize_values_are_one_or_one_per_channel():
    layer = Preprocessor(mode="standardize", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with pytest.raises(ValueError, match=r"`mean` has 3 values and the images 1 channel: give "
                       r"one value \(every channel's\) or 1"):  # fmt: skip
        layer(np.zeros((1, 8, 8, 1), np.uint8))


def test_load_standardizes_and_refuses_values_that_do_not_fit_before_reading():
    raw = data.load("synthetic", batch_size=64, limit=64, preprocessing="none")
    standardized = data.load("synthetic", batch_size=64, limit=64, preprocessing="standardize",
                             input_mean=0.5, input_std=0.25)  # fmt: skip
    assert standardized.preprocessor.mode == "standardize"
    x_raw, x_std = (np.concatenate([x for x, _ in d.validation]) for d in (raw, standardized))
    np.testing.assert_allclose(x_std, (x_raw / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    # Synthetic images have one channel: three values cannot be theirs.
    with pytest.raises(errors.ConfigError, match=r"--input_mean has 3 values and the images 1 "
                       r"channel.*--channels=3"):  # fmt: skip
        data.load("synthetic", preprocessing="standardize", input_mean=IMAGENET_MEAN,
                  input_std=IMAGENET_STD)  # fmt: skip
    with pytest.raises(errors.ConfigError, match=r"--preprocessing=standardize needs "
                       r"--input_mean and --input_std"):  # fmt: skip
        data.load("synthetic", preprocessing="standardize")
    with pytest.raises(errors.ConfigError, match=r"--input_mean and --input_std are the constants "
                       r"of --preprocessing=standardize.*is 'auto'"):  # fmt: skip
        data.load("cifar10", data_dir="/nonexistent", input_mean=0.5, input_std=0.25)


# ----------------------------------------------------------------- pipelines, synthetic


def test_split_arithmetic_follows_the_paper():
    assert data.split_names("cifar10") == ("train[:-10000]", "train[-10000:]", "test")
    assert data.split_names("cifar10", retrain_on_all=True) == ("train", None, "test")
    assert data.split_names("mnist", validation_size=0) == ("train", None, "test")
    assert data.split_names("svhn_cropped") == ("train[:-6000]+extra", "train[-6000:]", "test")
    with pytest.raises(ValueError, match="validation_size"):
        data.split_names("cifar10", validation_size=-1)
    with pytest.raises(ValueError, match="Received: name='imagenet'"):
        data.split_names("imagenet")


def test_synthetic_is_deterministic_and_learnable():
    images, labels = data.make_synthetic(200, seed=3)
    again, again_labels = data.make_synthetic(200, seed=3)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    assert images.dtype == np.uint8 and images.shape == (200, 28, 28, 1)
    assert np.bincount(labels).tolist() == [20] * 10
    assert not np.array_equal(images, data.make_synthetic(200, seed=4)[0])
    # A nearest-class-mean classifier fitted on one draw classifies another: the signal is real.
    test_images, test_labels = data.make_synthetic(100, seed=5)
    means = np.stack([images[labels == c].mean(0).ravel() for c in range(10)])
    distances = ((test_images.reshape(100, 1, -1) - means[None]) ** 2).sum(-1)
    assert np.mean(distances.argmin(1) == test_labels) > 0.9

    datasets = data.load("synthetic", batch_size=32)
    assert (datasets.num_train_examples, datasets.num_validation_examples) == (1024, 256)
    assert datasets.num_test_examples == 256
    assert int(datasets.train.cardinality()) == 32  # Keras knows the steps per epoch
    assert datasets.spec.class_names is None  # generated: its classes have no names
    assert data.load("synthetic", retrain_on_all=True).num_train_examples == 1280
    assert data.load("synthetic", limit=100).num_validation_examples == 100


def test_augmentation_keeps_shape_and_is_seeded():
    image = tf.reshape(tf.range(2 * 4 * 4 * 3, dtype=tf.float32), (8, 4, 3))
    out = data.augment_image(image, 7, crop_padding=2)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out, data.augment_image(image, 7, crop_padding=2))
    outs = [data.augment_image(image, s, crop_padding=2).numpy() for s in range(8)]
    assert len({o.tobytes() for o in outs}) > 1
    np.testing.assert_array_equal(data.augment_image(image, 7, crop_padding=0, flip=False), image)


def test_training_order_and_augmentation_follow_the_seed():
    def two_epochs(seed):
        train = data.load("synthetic", batch_size=256, seed=seed, augment=True, limit=512).train
        return _first_epoch(train), _first_epoch(train)

    first, second = two_epochs(0)
    first_again, second_again = two_epochs(0)
    for a, b in zip(first + second, first_again + second_again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(first[0][1], second[0][1])  # reshuffled every epoch
    other, _ = two_epochs(1)
    assert not np.array_equal(first[0][1], other[0][1])
    # Evaluation splits are neither shuffled nor augmented.
    test = data.load("synthetic", batch_size=256, seed=5, augment=True).test
    expected = data.make_synthetic(256, seed=1)[1]
    np.testing.assert_array_equal(next(iter(test))[1], expected)


@pytest.mark.parametrize("augment", [False, True])
def test_an_epoch_is_the_same_whatever_came_before(augment):
    # What exact resume needs: epoch e's batches depend on (seed, e) only, not on how many
    # epochs this process has iterated before.
    def epoch_of(datasets, e):
        datasets.epoch.assign(e)
        return _first_epoch(datasets.train)

    kwargs = dict(batch_size=128, seed=3, augment=augment, limit=384)
    resumed = epoch_of(data.load("synthetic", **kwargs), 2)
    uninterrupted = data.load("synthetic", **kwargs)
    for _ in range(2):
        _first_epoch(uninterrupted.train)  # epochs 0 and 1, counted by the pipeline itself
    assert int(uninterrupted.epoch.numpy()) == 2
    straight = _first_epoch(uninterrupted.train)
    for a, b in zip(resumed, straight, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(resumed[0][1], epoch_of(data.load("synthetic", **kwargs), 1)[0][1])


def test_epoch_callback_follows_keras_epochs():
    datasets = data.load("synthetic", batch_size=256, limit=256)
    callback = datasets.epoch_callback()
    callback.on_epoch_begin(7)
    assert int(datasets.epoch.numpy()) == 7


# ----------------------------------------------------- other datasets through tfds mocks


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("svhn_cropped", (32, 32, 3))])
def test_mocked_tfds_datasets(tmp_path, name, shape):
    # Under mock_data nothing is "prepared", and download_and_prepare is a no-op: download=True
    # lets the code path through without any network access.
    with tfds.testing.mock_data(num_examples=20):
        datasets = data.load(name, data_dir=tmp_path, batch_size=8, download=True, augment=True)
        x, y = next(iter(datasets.train))
    assert x.shape == (8, *shape) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert float(tf.reduce_max(x)) <= 1.0


def test_cifar_gcn_zca_is_fitted_once_and_cached(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    with tfds.testing.mock_data(num_examples=24):
        first = data.load("cifar10", data_dir=tmp_path, cache_dir=cache_dir, download=True)
        (cached,) = cache_dir.glob("cifar10_*.npz")

        def fail(*args, **kwargs):
            raise AssertionError("ZCA refitted instead of read from the cache")

        monkeypatch.setattr(Preprocessor, "adapt", fail)
        second = data.load("cifar10", data_dir=tmp_path, cache_dir=cache_dir, download=True)
        x, _ = next(iter(second.test))
    assert first.preprocessor.mode == "gcn_zca" and x.shape == (24, 32, 32, 3)
    for a, b in zip(first.preprocessor.weights, second.preprocessor.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert [p.name for p in cache_dir.iterdir()] == [cached.name]  # no temporary files left
    assert os.path.getsize(cached) > 3072 * 3072 * 4


def test_augment_image_and_flip_is_tf_images_flip_and_reports_it():
    image = tf.reshape(tf.range(2 * 5 * 1, dtype=tf.float32), (2, 5, 1))
    for seed in range(12):
        out, flipped = data.augment.augment_image_and_flip(image, seed, crop_padding=0)
        tf_flip = tf.image.stateless_random_flip_left_right(image, tf.constant([seed, 1], tf.int64))
        np.testing.assert_array_equal(out, tf_flip)
        assert bool(flipped) == (not np.array_equal(out, image))


def test_the_zca_cache_is_only_a_cache(tmp_path, monkeypatch):
    # A read-only (shared) data directory failed the run after the fit; a damaged cache file
    # failed every later run.
    from fitnets_tf.data import zca_cache

    rng = np.random.default_rng(0)
    raw = tf.data.Dataset.from_tensor_slices((rng.uniform(0, 255, (64, 4, 4, 3)).astype("float32"),
                                              np.zeros(64, "int64")))  # fmt: skip
    fitted = Preprocessor(mode="gcn_zca")

    def no_room(*_):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(zca_cache, "write_bytes", no_room)
    zca_cache.fit_zca_cached(fitted, raw, {"dataset": "toy"}, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    zca_cache.fit_zca_cached(Preprocessor(mode="gcn_zca"), raw, {"dataset": "toy"}, tmp_path)
    (cached,) = tmp_path.glob("toy_*.npz")
    cached.write_bytes(b"damaged")
    again = Preprocessor(mode="gcn_zca")
    zca_cache.fit_zca_cached(again, raw, {"dataset": "toy"}, tmp_path)
    np.testing.assert_allclose(again.zca_whitening.numpy(), fitted.zca_whitening.numpy())
