"""The user's own data as --dataset: image folders, .npz files, prepared TFDS datasets.

The image folders hold real Fashion-MNIST images written as PNG files here, so the test can
follow every pixel and label from the files through fitnets_tf.data.load. Bad data must be
refused with a DataError naming the file, folder or key, before any training.
"""

import dataclasses
import gzip
import json
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import train_cli

from fitnets_tf import config as config_lib
from fitnets_tf import data
from fitnets_tf.data import holdout, overview
from fitnets_tf.errors import ConfigError, DataError, DatasetNotFoundError
from fitnets_tf.export import labels
from fitnets_tf.run import data_record, layout

DEBIAN_DIR = pathlib.Path(data.DEBIAN_FASHION_MNIST_DIR)
pytestmark = pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason=f"Debian package dataset-fashion-mnist not installed ({DEBIAN_DIR} absent).",
)
# Fashion-MNIST's classes, in label order; sorted, "bag" (label 8) becomes class 0.
NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "boot"]  # fmt: skip


def _idx(name: str, offset: int, count: int, size: int) -> np.ndarray:
    with gzip.open(DEBIAN_DIR / name) as f:
        return np.frombuffer(f.read(offset + count * size), np.uint8, offset=offset)


@pytest.fixture(scope="module")
def fashion():
    """The first 300 Fashion-MNIST training images (uint8 28x28) and labels."""
    images = _idx("train-images-idx3-ubyte.gz", 16, 300, 784).reshape(300, 28, 28)
    return images, _idx("train-labels-idx1-ubyte.gz", 8, 300, 1).astype(np.int32)


def write_pngs(root: pathlib.Path, images, labels, start: int = 0) -> None:
    """``root/<class name>/<index>.png``, one PNG per image."""
    for i, (image, label) in enumerate(zip(images, labels, strict=True), start):
        folder = root / NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = image[..., np.newaxis] if image.ndim == 2 else image
        (folder / f"{i:04d}.png").write_bytes(tf.io.encode_png(pixels).numpy())


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fashion):
    """300 PNGs in one sub-folder per class."""
    root = tmp_path_factory.mktemp("folder")
    write_pngs(root, *fashion)
    return root


def _mixed(n: int) -> np.ndarray:
    """The order a split the data gives comes in: one permutation, seeded as the draws."""
    return np.random.default_rng(holdout.SPLIT_SEED).permutation(n)


def _examples(ds) -> tuple[np.ndarray, np.ndarray]:
    """A split's images back in raw pixels (the Preprocessor scaled them by 1/255), labels."""
    x, y = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.rint(np.concatenate(x) * 255).astype(np.uint8), np.concatenate(y)


def _sizes(d: data.Datasets) -> tuple:
    return d.num_train_examples, d.num_validation_examples, d.num_test_examples


# ---------------------------------------------------------------------------- image folders


def test_folder_loads_end_to_end_with_labels_from_sub_folders(folder, fashion):
    datasets = data.load(f"folder:{folder}", batch_size=32)
    assert datasets.input_shape == (28, 28, 1) and datasets.num_classes == 10
    assert datasets.spec.class_names == tuple(sorted(NAMES))
    assert datasets.preprocessor.mode == "scale" and not datasets.spec.flips
    # 10% of 300 for test, then 10% of the 270 left for validation.
    assert _sizes(datasets) == (243, 27, 30)
    # Every example is a file's pixels, under the label of its sub-folder.
    originals = {image.tobytes(): NAMES[label] for image, label in zip(*fashion, strict=True)}
    seen = []
    for split in (datasets.train, datasets.validation, datasets.test):
        images, labels = _examples(split)
        for image, label in zip(images, labels, strict=True):
            assert originals[image[..., 0].tobytes()] == datasets.spec.class_names[label]
            seen.append(image.tobytes())
    assert len(set(seen)) == len(set(originals)) == 300  # each image once, in one split


def test_folder_split_is_seeded_and_the_same_for_every_run_seed(folder):
    def splits(seed):
        datasets = data.load(f"folder:{folder}", batch_size=64, seed=seed)
        return [_examples(s) for s in (datasets.validation, datasets.test)], datasets

    (first, datasets), (again, _), (other_seed, other) = splits(0), splits(0), splits(1)
    for a, b, c in zip(first, again, other_seed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[0], c[0])  # --seed orders the training, not the split
        np.testing.assert_array_equal(a[1], c[1])
    # The held-out examples mix the classes (the files are in class order).
    assert len(set(first[1][1].tolist())) >= 8
    np.testing.assert_array_equal(datasets.train_examples[1], other.train_examples[1])


def test_folder_with_train_and_test_sub_folders_uses_them(tmp_path, fashion):
    images, labels = fashion
    write_pngs(tmp_path / "train", images[:200], labels[:200])
    write_pngs(tmp_path / "test", images[200:], labels[200:], start=200)
    datasets = data.load(f"folder:{tmp_path}", batch_size=50, validation_size=20)
    assert (datasets.num_train_examples, datasets.num_validation_examples) == (180, 20)
    # test/ is listed in Keras' order, by class name then file name, then mixed.
    order = np.array(sorted(range(200, 300), key=lambda i: (NAMES[labels[i]], i)))[_mixed(100)]
    test_images, test_labels = _examples(datasets.test)
    np.testing.assert_array_equal(test_images[..., 0], images[order])
    assert [datasets.spec.class_names[y] for y in test_labels] == [NAMES[labels[i]] for i in order]
    all_data = data.load(f"folder:{tmp_path}", retrain_on_all=True)
    assert all_data.validation is None and all_data.num_train_examples == 200


@pytest.mark.parametrize("name", ["validation", "val"])
def test_folder_with_a_validation_sub_folder_uses_it(tmp_path, fashion, name):
    images, labels = fashion
    write_pngs(tmp_path / "train", images[:100], labels[:100])
    write_pngs(tmp_path / name, images[100:160], labels[100:160], start=100)
    write_pngs(tmp_path / "test", images[160:260], labels[160:260], start=160)
    datasets = data.load(f"folder:{tmp_path}", batch_size=10)
    assert _sizes(datasets) == (100, 60, 100)
    order = np.array(sorted(range(100, 160), key=lambda i: (NAMES[labels[i]], i)))[_mixed(60)]
    np.testing.assert_array_equal(_examples(datasets.validation)[0][..., 0], images[order])
    merged = data.load(f"folder:{tmp_path}", batch_size=10, retrain_on_all=True)
    assert merged.validation is None and merged.num_train_examples == 160


def test_folder_of_rgb_images_and_image_size(tmp_path, fashion):
    images, labels = fashion
    rgb = np.stack([images[:40], 255 - images[:40], images[:40] // 2], axis=-1)
    write_pngs(tmp_path, rgb, labels[:40])
    datasets = data.load(f"folder:{tmp_path}", batch_size=8)
    assert datasets.input_shape == (28, 28, 3)
    resized = data.load(f"folder:{tmp_path}", batch_size=8, image_size=14)
    assert resized.input_shape == (14, 14, 3)
    x, _ = next(iter(resized.test))
    assert x.shape[1:] == (14, 14, 3) and 0.0 <= float(tf.reduce_min(x)) <= 1.0


def test_channels_converts_a_folder_arrays_and_a_built_in_dataset(tmp_path, fashion):
    """A grayscale teacher on RGB files (or an RGB one on grayscale data) needs the images
    converted, not new files: --channels=1 by luma weights, --channels=3 gray repeated."""
    images, labels = fashion
    rgb = np.stack([images[:40], 255 - images[:40], images[:40] // 2], axis=-1)
    write_pngs(tmp_path / "rgb", rgb, labels[:40])
    gray = data.load(f"folder:{tmp_path / 'rgb'}", batch_size=8, channels=1, validation_size=0)
    assert gray.input_shape == (28, 28, 1)
    # The run's data line told the folder's own count alone, "0 grayscale->RGB".
    assert overview.line(gray).endswith(
        "; images 0 resized, 0 grayscale->RGB, 0 alpha dropped, all converted from 3 to 1 "
        "channels (--channels).")  # fmt: skip
    x, _ = _examples(gray.test)  # (in a shuffled order: compared as a set)
    luma = np.rint(tf.image.rgb_to_grayscale(rgb.astype("float32")).numpy()).astype(np.uint8)
    assert len(x) == 4 and {a.tobytes() for a in x} <= {a.tobytes() for a in luma}
    np.savez(tmp_path / "gray.npz", x_train=images[:30], y_train=labels[:30],
             x_test=images[30:40], y_test=labels[30:40])  # fmt: skip
    coloured = data.load(f"npz:{tmp_path / 'gray.npz'}", batch_size=10, channels=3)
    x, _ = _examples(coloured.test)
    assert coloured.input_shape == (28, 28, 3)
    np.testing.assert_array_equal(x, np.repeat(images[30:40][_mixed(10), ..., None], 3, axis=-1))
    assert data.load("synthetic", batch_size=8, limit=8, channels=3).input_shape[-1] == 3
    np.savez(tmp_path / "rgba.npz", x_train=np.zeros((20, 4, 4, 4), "uint8"),
             y_train=np.arange(20) % 2, x_test=np.zeros((4, 4, 4, 4), "uint8"),
             y_test=np.arange(4) % 2)  # fmt: skip
    with pytest.raises(DataError, match="have 4 channel.*cannot be converted to 1"):
        data.load(f"npz:{tmp_path / 'rgba.npz'}", channels=1)


def test_folder_default_size_is_its_images_most_common(tmp_path, fashion):
    images, labels = fashion
    write_pngs(tmp_path, images[:30], labels[:30])
    # The first image Keras lists (first class, first file) is larger: it was the size of all,
    # and a teacher for the 28x28 images refused "the data's are 32x32x1".
    first = sorted(tmp_path.iterdir())[0]
    big = tf.image.resize(images[0][..., None], (32, 32)).numpy().astype(np.uint8)
    (first / "0000_big.png").write_bytes(tf.io.encode_png(big).numpy())
    rgba = np.concatenate([np.repeat(images[1][..., None], 3, -1), images[1][..., None]], -1)
    (first / "0001_rgba.png").write_bytes(tf.io.encode_png(rgba).numpy())
    datasets = data.load(f"folder:{tmp_path}", batch_size=8)
    assert datasets.input_shape == (28, 28, 3)
    assert datasets.spec.formatting == {
        "size_from": "the most common size of the folder's images (31 of 32 are 28x28; 1 other "
                     "size(s))",
        "resized": 1, "grayscale_to_rgb": 31, "alpha_dropped": 1, "decoded_channels": 3,
    }  # fmt: skip
    given = data.load(f"folder:{tmp_path}", batch_size=8, image_size=32).spec.formatting
    assert given["size_from"] == "--image_size" and given["resized"] == 31


def _wide_image() -> np.ndarray:
    """8 high x 16 wide, gray: columns 0-3 at 10, 4-11 at 200, 12-15 at 90."""
    row = np.array([10] * 4 + [200] * 8 + [90] * 4, np.uint8)
    return np.tile(row, (8, 1))[..., np.newaxis]


# A wide image brought to 4x4 (bilinear): stretched, all three bands; cropped, the centred
# 8x8 box only; padded, letterboxed to 16x16 first, so the top and bottom rows are black.
RESIZED_WIDE = {
    "stretch": [[10, 200, 200, 90]] * 4,
    "crop": [[200] * 4] * 4,
    "pad": [[0] * 4, [10, 200, 200, 90], [10, 200, 200, 90], [0] * 4],
}


@pytest.mark.parametrize("mode", data.RESIZE_MODES)
def test_resize_mode_stretches_crops_or_pads_a_folder_and_arrays(tmp_path, mode):
    wide = _wide_image()
    for label in (0, 1):
        folder = tmp_path / "folder" / NAMES[label]
        folder.mkdir(parents=True)
        for i in range(10):
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(wide).numpy())
    arrays = {key: np.stack([wide[..., 0]] * 20) for key in ("x_train", "x_test")}
    np.savez(tmp_path / "data.npz", **arrays, y_train=[0, 1] * 10, y_test=[0, 1] * 10)
    for name in (f"folder:{tmp_path / 'folder'}", f"npz:{tmp_path / 'data.npz'}"):
        datasets = data.load(name, batch_size=4, image_size=4, resize_mode=mode)
        images, _ = _examples(datasets.test)
        assert datasets.input_shape == (4, 4, 1)
        np.testing.assert_array_equal(images[0, ..., 0], RESIZED_WIDE[mode], err_msg=name)


# The README's serving client, per --resize_mode: what a served image goes through.
CLIENT_RESIZE = {"stretch": {}, "crop": dict(crop_to_aspect_ratio=True),
                 "pad": dict(pad_to_aspect_ratio=True)}  # fmt: skip


@pytest.mark.parametrize("mode", data.RESIZE_MODES)
def test_resize_mode_gives_a_folder_the_arrays_and_a_client_the_same_pixels(tmp_path, mode):
    # Folders were resized by image_dataset_from_directory, which pads after resizing
    # (tf.image.resize_with_pad); keras.ops.image.resize pads first: 197 grey levels apart.
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    for part in ("train/a", "train/b", "test/a", "test/b"):
        (tmp_path / part).mkdir(parents=True)
        (tmp_path / part / "0.png").write_bytes(tf.io.encode_png(image).numpy())
    four = np.stack([image] * 4)
    np.savez(tmp_path / "data.npz", x_train=four[:2], y_train=[0, 1], x_test=four[2:],
             y_test=[0, 1])  # fmt: skip
    client = keras.ops.image.resize(image.astype("float32")[None], (6, 6), **CLIENT_RESIZE[mode])
    for name in (f"folder:{tmp_path}", f"npz:{tmp_path / 'data.npz'}"):
        raw, _ = data.read_user_data(name, image_size=6, resize_mode=mode, validation_size=0)
        trained = next(iter(raw["train"]))[0].numpy().astype(np.float32)
        assert trained.shape == (6, 6, 3)
        np.testing.assert_allclose(trained, keras.ops.convert_to_numpy(client)[0], atol=0.5,
                                   err_msg=name)  # fmt: skip


def test_resize_mode_is_checked_before_any_data_is_read(tmp_path):
    with pytest.raises(ConfigError, match=r"resize_mode takes one of stretch, crop, pad, got 'fit'"):
        data.load(f"folder:{tmp_path / 'absent'}", resize_mode="fit")
    with pytest.raises(ConfigError, match=r"`resize_mode` applies to the user's data only"):
        data.load("synthetic", resize_mode="crop")


def test_resize_mode_without_image_size_is_refused_where_it_would_do_nothing(tmp_path):
    # Arrays and TFDS datasets are read at their own size: the mode alone would silently not
    # apply. Refused before reading (these files do not even exist), naming both fixes.
    for name in (f"npz:{tmp_path / 'absent.npz'}", "beans"):
        with pytest.raises(ConfigError, match=r"would do nothing\. Pass --image_size=HEIGHT,"
                           r"WIDTH .* or drop --resize_mode\. Received: resize_mode='pad', "
                           r"image_size=None$"):  # fmt: skip
            data.load(name, data_dir=tmp_path, resize_mode="pad")
    np.savez(tmp_path / "data.npz", **_good_arrays())
    resized = data.load(f"npz:{tmp_path / 'data.npz'}", image_size=4, resize_mode="pad")
    assert resized.input_shape == (4, 4, 1)
    # A folder's images of another size than its first are resized by it: it applies. The
    # first is trouser's (sorted before tshirt), 8x16; tshirt's are 7x16.
    for label in (0, 1):
        (tmp_path / "images" / NAMES[label]).mkdir(parents=True)
        for i in range(10):
            png = tf.io.encode_png(_wide_image()[: 7 + label]).numpy()  # 7 or 8 x 16
            (tmp_path / "images" / NAMES[label] / f"{i}.png").write_bytes(png)
    folder = data.load(f"folder:{tmp_path / 'images'}", batch_size=4, resize_mode="pad")
    assert folder.input_shape == (8, 16, 1)


# ------------------------------------------------------------------------------ .npz files


def test_npz_loads_with_a_channel_axis_and_held_out_validation(tmp_path, fashion):
    images, labels = fashion
    path = tmp_path / "data.npz"
    np.savez(path, x_train=images[:200], y_train=labels[:200], x_test=images[200:250],
             y_test=labels[200:250])  # fmt: skip
    datasets = data.load(f"npz:{path}", batch_size=25)
    assert datasets.input_shape == (28, 28, 1) and datasets.num_classes == 10
    assert _sizes(datasets) == (180, 20, 50)
    test_images, test_labels = _examples(datasets.test)
    np.testing.assert_array_equal(test_images[..., 0], images[200:250][_mixed(50)])
    np.testing.assert_array_equal(test_labels, labels[200:250][_mixed(50)])
    assert data.load(f"npz:{path}", image_size=(14, 20)).input_shape == (14, 20, 1)


def test_npz_with_its_own_validation_arrays_and_float_pixels(tmp_path, fashion):
    images, labels = fashion
    path = tmp_path / "data.npz"
    x = images.astype(np.float64)[..., np.newaxis]
    np.savez(path, x_train=x[:100], y_train=labels[:100].astype(float), x_val=x[100:130],
             y_val=labels[100:130], x_test=x[130:150], y_test=labels[130:150])  # fmt: skip
    datasets = data.load(f"npz:{path}", batch_size=10)
    assert (datasets.num_train_examples, datasets.num_validation_examples) == (100, 30)
    val_images, val_labels = _examples(datasets.validation)
    np.testing.assert_array_equal(val_images[..., 0], images[100:130][_mixed(30)])
    np.testing.assert_array_equal(val_labels, labels[100:130][_mixed(30)])
    merged = data.load(f"npz:{path}", batch_size=10, retrain_on_all=True)
    assert merged.validation is None and merged.num_train_examples == 130


def test_npz_class_names_are_read_in_label_order(tmp_path):
    np.savez(tmp_path / "data.npz", **_good_arrays(), class_names=np.array(["a", "b", "c", "d"]))
    assert data.load(f"npz:{tmp_path / 'data.npz'}").spec.class_names == ("a", "b", "c", "d")


# ------------------------------------------------------------------- prepared TFDS datasets


class FitnetsTestImages(tfds.core.GeneratorBasedBuilder):
    """A tiny image classification dataset, prepared offline by the test (registers its name)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=NAMES),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 100), "test": self._generate_examples(100, 140)}

    def _generate_examples(self, start, stop):
        images = _idx("train-images-idx3-ubyte.gz", 16, stop, 784).reshape(stop, 28, 28, 1)
        labels = _idx("train-labels-idx1-ubyte.gz", 8, stop, 1)
        for i in range(start, stop):
            yield i, {"image": images[i], "label": int(labels[i])}


def test_prepared_tfds_dataset_holds_out_the_end_of_train(tmp_path):
    builder = FitnetsTestImages(data_dir=tmp_path)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    assert data.dataset_problem("fitnets_test_images") is None
    datasets = data.load("fitnets_test_images", data_dir=tmp_path, batch_size=16)
    assert datasets.input_shape == (28, 28, 1) and datasets.num_classes == 10
    assert datasets.spec.class_names == tuple(NAMES)
    assert (datasets.num_train_examples, datasets.num_validation_examples) == (90, 10)
    # Validation: the last 10 of train in TFDS's file order (as the paper's datasets).
    in_order = builder.as_dataset(split="train", shuffle_files=False, batch_size=-1)
    images, labels = _examples(datasets.validation)
    np.testing.assert_array_equal(images, in_order["image"][-10:].numpy())
    np.testing.assert_array_equal(labels, in_order["label"][-10:].numpy())
    assert datasets.num_test_examples == 40


@pytest.mark.parametrize("damage", ["missing test file", "truncated train file"])
def test_prepared_tfds_dataset_with_missing_or_cut_files_is_refused_at_once(tmp_path, damage):
    # A half-copied dataset: TFDS counts it as prepared (dataset_info.json is there), and the
    # missing test file used to fail only at the evaluation after all the training.
    builder = FitnetsTestImages(data_dir=tmp_path)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    split = "test" if damage.startswith("missing") else "train"
    (shard,) = pathlib.Path(builder.data_path).glob(f"*-{split}.tfrecord-*")
    if split == "test":
        shard.unlink()
        expected = f"test: missing {shard.name}"
    else:
        shard.write_bytes(shard.read_bytes()[:500])
        expected = "train: 500 bytes, less than the"
    with pytest.raises(DatasetNotFoundError, match="is incomplete") as error:
        data.load("fitnets_test_images", data_dir=tmp_path)
    assert expected in str(error.value) and "copy the whole folder" in str(error.value)


class FitnetsTrainOnlyImages(FitnetsTestImages):
    """The same images, without a test split."""

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 100)}


def test_prepared_tfds_dataset_without_test_split_is_refused(tmp_path):
    FitnetsTrainOnlyImages(data_dir=tmp_path).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    with pytest.raises(DataError, match="has the splits train, and a run needs 'train' and 'test'"):
        data.load("fitnets_train_only_images", data_dir=tmp_path)


def test_unprepared_tfds_dataset_fails_fast_saying_where_it_looked(tmp_path, network_attempts):
    with pytest.raises(DatasetNotFoundError) as error:
        data.load("beans", data_dir=tmp_path)
    assert network_attempts == []  # no download tried, so none to wait for
    message = str(error.value)
    assert str(tmp_path / "beans") in message and "tfds build beans --data_dir=" in message
    assert "fashion_mnist" in message and "folder:PATH" in message and "\n" not in message
    assert not list(tmp_path.iterdir())  # nothing downloaded or half-prepared


def test_config_accepts_the_sources_and_refuses_the_rest(folder, tmp_path):
    valid = config_lib.ExperimentConfig().with_values
    for name in ("mnist", f"folder:{folder}", "beans", "cifar10_corrupted/fog_1"):
        valid(dataset=name).validate()
    for name, message in [
        ("imagenet", "unknown dataset 'imagenet' .*fashion_mnist.*folder:PATH"),
        (f"folder:{tmp_path / 'nope'}", "dataset folder .*nope' does not exist"),
        (f"npz:{folder}", "dataset file .* does not exist"),
    ]:
        with pytest.raises(ConfigError, match=message):
            valid(dataset=name).validate()
    assert valid(image_size=(28,)).data.image_size == (28, 28)
    with pytest.raises(ConfigError, match="image_size takes one or two positive sizes"):
        valid(image_size=(28, 0)).validate()
    with pytest.raises(ConfigError, match="image_size.*the user's data only"):
        data.load("mnist", image_size=(32, 32))


def _sub_folders(root: pathlib.Path, *names: str) -> str:
    for name in names:
        (root / name).mkdir(parents=True)
    return f"folder:{root}"


def test_early_stopping_is_refused_on_user_data_without_a_validation_split(tmp_path):
    # It watches val_accuracy: with none, Keras' EarlyStopping only warned, every epoch.
    np.savez(tmp_path / "plain.npz", **_good_arrays())
    np.savez(tmp_path / "own.npz", **_good_arrays(), x_val=np.zeros((2, 4, 4)), y_val=[0, 1])
    without = [_sub_folders(tmp_path / "flat", "cat", "dog"),
               _sub_folders(tmp_path / "split", "train/cat", "test/cat"),
               f"npz:{tmp_path / 'plain.npz'}"]  # fmt: skip
    with_own = [_sub_folders(tmp_path / "own", "train/cat", "test/cat", "val/cat"),
                f"npz:{tmp_path / 'own.npz'}"]  # fmt: skip
    config = config_lib.ExperimentConfig().with_values(early_stopping_patience=3)
    for name in without:
        refused = config.with_values(dataset=name, validation_size=0)
        with pytest.raises(ConfigError, match="early_stopping_patience watches the validation"):
            refused.validate()
        config.with_values(dataset=name).validate()  # 10% held out
    for name in with_own:
        config.with_values(dataset=name, validation_size=0).validate()


# --------------------------------------------------------------------------------- bad data


def _png_folder(root: pathlib.Path, fashion, count: int = 20) -> pathlib.Path:
    write_pngs(root, fashion[0][:count], fashion[1][:count])
    return root


def _corrupt_image(root, fashion):
    # The last file of the last class: every file is checked, not just the first.
    bad = sorted(sorted(_png_folder(root, fashion).iterdir())[-1].iterdir())[-1]
    bad.write_text("not an image")
    return bad


def _truncated_image(root, fashion):
    bad = _png_folder(root, fashion) / "tshirt" / "9999.png"
    bad.write_bytes(tf.io.encode_png(fashion[0][0][..., None]).numpy()[:60])
    return bad


def _empty_class_folder(root, fashion):
    (_png_folder(root, fashion) / "zebra").mkdir()
    (root / "zebra" / "notes.txt").write_text("no images here")
    return root / "zebra"


def _no_class_folders(root, fashion):
    root.mkdir()
    (root / "a.png").write_bytes(tf.io.encode_png(fashion[0][0][..., None]).numpy())
    return root


def _classes_differ(root, fashion):
    write_pngs(root / "train", fashion[0][:20], fashion[1][:20])
    write_pngs(root / "test", fashion[0][20:22], [0, 0])
    return "tshirt"


def _single_class(root, fashion):
    write_pngs(root, fashion[0][:20], [0] * 20)
    return root


def _train_without_test(root, fashion):
    write_pngs(root / "train", fashion[0][:20], fashion[1][:20])
    return root


def _class_drawn_whole(root, fashion):
    # Ten classes of one image: the test image leaves nine for ten classes. The draw per class
    # keeps one of each as long as it can, and the first in its order ("bag") goes.
    write_pngs(root, fashion[0][:10], range(10))
    return root / "bag"


def _macos_metadata(root, fashion):
    bad = _png_folder(root, fashion) / "tshirt" / "._0000.png"
    bad.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    return bad


FOLDER_CASES = {
    "corrupt image": (_corrupt_image, "Cannot decode the image file"),
    "macOS metadata file": (
        _macos_metadata,
        r"macOS metadata.*find .*images -name '\._\*' -delete",
    ),
    "a single class": (_single_class, "single class folder, 'tshirt'.*two or more"),
    "train/ without test/": (
        _train_without_test,
        "'train' looks like a split.*both train/ and test/",
    ),
    "a class drawn whole into test": (
        _class_drawn_whole,
        r"no training example left: .* drawn per class.*\(0 in validation, 1 in test\)",
    ),
    "truncated image": (_truncated_image, "Cannot decode the image file"),
    "class folder without images": (_empty_class_folder, "holds no image"),
    "no class folders": (_no_class_folders, "has no sub-folder"),
    "train and test classes differ": (_classes_differ, "must hold the same class folders"),
}


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_bad_folder_is_refused_naming_the_file(tmp_path, fashion, case):
    make, message = FOLDER_CASES[case]
    named = make(tmp_path / "images", fashion)
    with pytest.raises(DataError, match=message) as error:
        data.load(f"folder:{tmp_path / 'images'}")
    assert str(named) in str(error.value)


def test_missing_folder_or_file_is_refused(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}.*does not exist"):
        data.load(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.npz'}.*does not exist"):
        data.load(f"npz:{tmp_path / 'nope.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="Cannot read .*junk.npz as an .npz archive"):
        data.load(f"npz:{tmp_path / 'junk.npz'}")


def _good_arrays():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    y = np.arange(40, dtype=np.int64) % 4
    return dict(x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])


NPZ_CASES = {  # case: (arrays replacing the good ones, None: removed), expected message
    "missing keys": (dict(x_test=None, y_test=None), "has no x_test, y_test"),
    "half a validation pair": (dict(x_val=np.zeros((2, 8, 8), np.uint8)), "has no y_val"),
    "negative label": (dict(y_test=-np.ones(10, int)), "y_test holds the negative label -1"),
    "non-integer label": (dict(y_train=np.full(30, 1.5)), "y_train holds 1.5, not a class"),
    "label out of range": (dict(y_test=np.full(10, 4)), "y_test holds the label 4, out of"),
    "a stray label": (dict(y_train=np.r_[7, np.arange(1, 30) % 4]),
                      r"up to 7 \(so 8 classes\), but 4, 5, 6 never occur.*at index 0"),
    "one-hot labels": (dict(y_train=np.eye(4)[np.arange(30) % 4]), r"y_train has shape \(30, 4\)"),
    "lengths differ": (dict(y_train=np.zeros(29, int)), "x_train has 30 images but y_train has 29"),
    "wrong rank": (dict(x_train=np.zeros((30, 64), np.uint8)), r"x_train has shape \(30, 64\)"),
    "image shapes differ": (dict(x_test=np.zeros((10, 9, 9), np.uint8)), "x_test holds images of"),
    "pixels out of range": (dict(x_test=np.full((10, 8, 8), 300.0)), "x_test holds values outside"),
    "already scaled": (dict(x_train=np.full((30, 8, 8), 0.5)), r"x_train holds values in \[0, 1\]"),
    "channels first": (dict(x_train=np.zeros((30, 3, 8, 8), np.uint8)),
                       r"x_train has shape \(30, 3, 8, 8\): channels first.*np.transpose"),
    "NaN pixels": (dict(x_test=np.where(np.arange(640).reshape(10, 8, 8) == 300, np.nan, 9.0)),
                   "x_test holds NaN or infinite values \\(the first in image 4\\)"),
    "class names as labels": (dict(y_train=np.array(["cat", "dog"] * 15)),
                              "y_train holds 'cat', not a class index.*np.unique"),
    "a single class": (dict(y_train=np.zeros(30, int), y_test=np.zeros(10, int)),
                       "only the label 0, and a classifier needs two classes"),
    "class names of another count": (dict(class_names=np.array(["a", "b"])),
                                     r"class_names is a <U1 array of shape \(2,\): give the 4"),
    "empty test split": (dict(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, int)),
                         "x_test and y_test are empty"),
}  # fmt: skip


@pytest.mark.parametrize("case", NPZ_CASES)
def test_bad_npz_is_refused_naming_the_key(tmp_path, case):
    change, message = NPZ_CASES[case]
    arrays = {k: v for k, v in {**_good_arrays(), **change}.items() if v is not None}
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(DataError, match=message):
        data.load(f"npz:{tmp_path / 'data.npz'}")


def test_images_a_model_cannot_take_are_refused():
    data.check_input_shape((None, 28, 28, 1), (28, 28, 1), "teacher")
    data.check_input_shape((None, None, None, 3), (64, 48, 3), "teacher")
    with pytest.raises(DataError, match=r"teacher takes images of shape 28x28x1 but the data's "
                       r"are 14x14x1: resize the images \(--image_size=28,28\)"):  # fmt: skip
        data.check_input_shape((None, 28, 28, 1), (14, 14, 1), "teacher")
    with pytest.raises(DataError, match="give images with 1 channel"):
        data.check_input_shape((28, 28, 1), (28, 28, 3), "student")
    # Both changes to the images are needed, not either: the alternative is another model.
    with pytest.raises(DataError, match=r"resize the images \(--image_size=32,32\) and give "
                       r"images with 3 channel\(s\) \(--channels=3\), or use a student made for "
                       r"28x28x1 images"):
        data.check_input_shape((None, 32, 32, 3), (28, 28, 1), "student")


def test_images_of_varying_size_need_image_size():
    spec = data.DatasetSpec("photos", "photos", (None, None, 3), 2, 0)
    raw = {"train": tf.data.Dataset.from_tensors((tf.zeros((5, 7, 3)), 0))}
    with pytest.raises(DataError, match="vary in size.*--image_size"):
        data.shapes.at_size(raw, spec, None)
    resized, spec = data.shapes.at_size(raw, spec, (4, 4))
    assert spec.input_shape == (4, 4, 3)
    assert next(iter(resized["train"]))[0].shape == (4, 4, 3)


def test_a_run_refuses_data_that_changed_since_it_started(tmp_path, fashion):
    # --dataset=folder:PATH names a folder, not its contents: a resumed run re-reads it.
    images = _png_folder(tmp_path / "images", fashion, count=40)
    run = tmp_path / "run"
    run.mkdir()
    record = layout.RunLayout(run).data
    data_record.check_same(record, data.load(f"folder:{images}"))
    data_record.check_same(record, data.load(f"folder:{images}"))  # the same: resumes
    sorted((images / "tshirt").iterdir())[0].unlink()
    with pytest.raises(DataError, match=r"not what the run in .*run started with \(examples "):
        data_record.check_same(record, data.load(f"folder:{images}"))
    write_pngs(images, fashion[0][:2], [0, 0], start=900)
    (images / "zebra").mkdir()
    (images / "zebra" / "z.png").write_bytes(tf.io.encode_png(fashion[0][0][..., None]).numpy())
    with pytest.raises(DataError, match=r"class_names \[.*\] then, \[.*'zebra'\] now"):
        data_record.check_same(record, data.load(f"folder:{images}"))


def test_a_run_recorded_without_class_names_resumes_with_them(tmp_path):
    # Built-in datasets were recorded with no names before their TFDS names were read: a run
    # started then resumes, and its record takes the names.
    record = tmp_path / "data.json"
    synthetic = data.load("synthetic")
    named = dataclasses.replace(synthetic, spec=dataclasses.replace(
        synthetic.spec, class_names=tuple("abcdefghij")))  # fmt: skip
    data_record.check_same(record, synthetic)
    data_record.check_same(record, named)
    assert json.loads(record.read_text())["class_names"] == list("abcdefghij")
    with pytest.raises(DataError, match=r"class_names \['a', .*\] then, None now"):
        data_record.check_same(record, synthetic)  # names lost are still a change


# ------------------------------------------------------------------------------------ CLI


def _cli_corrupt_folder(tmp_path, fashion):
    bad = _corrupt_image(tmp_path / "images", fashion)
    return [f"--dataset=folder:{tmp_path / 'images'}"], f"Cannot decode the image file {bad}"


def _cli_empty_class(tmp_path, fashion):
    _empty_class_folder(tmp_path / "images", fashion)
    return [f"--dataset=folder:{tmp_path / 'images'}"], "zebra holds no image"


def _cli_missing_folder(tmp_path, fashion):
    return [f"--dataset=folder:{tmp_path / 'nope'}"], "dataset folder .*nope' does not exist"


def _cli_npz_missing_key(tmp_path, fashion):
    arrays = _good_arrays()
    del arrays["y_test"]
    np.savez(tmp_path / "data.npz", **arrays)
    return [f"--dataset=npz:{tmp_path / 'data.npz'}"], "has no y_test"


def _cli_bad_image_size(tmp_path, fashion):
    return ["--image_size=28,x"], "--image_size takes int values"


def _cli_resize_mode_alone(tmp_path, fashion):
    np.savez(tmp_path / "data.npz", **_good_arrays())
    args = [f"--dataset=npz:{tmp_path / 'data.npz'}", "--resize_mode=crop"]
    return args, "resize_mode='crop' would do nothing.*or drop --resize_mode"


def _cli_standardize_without_its_values(tmp_path, fashion):
    return ["--preprocessing=standardize", "--input_mean=0.2860"], (
        "--preprocessing=standardize needs --input_mean and --input_std: the mean and std of "
        "torchvision's Normalize")


def _cli_standardize_values_alone(tmp_path, fashion):
    return ["--input_mean=0.2860", "--input_std=0.3530"], (
        "--input_mean and --input_std are the constants of --preprocessing=standardize.*add "
        "--preprocessing=standardize, or drop them")


def _cli_standardize_channels_of_a_folder(tmp_path, fashion):
    # A folder's channels are known once it is read: still before any model is built.
    images = _png_folder(tmp_path / "images", fashion)
    return [f"--dataset=folder:{images}", "--preprocessing=standardize",
            "--input_mean=0.485,0.456,0.406", "--input_std=0.229,0.224,0.225"], (
        r"--input_mean has 3 values and the images 1 channel: give one value \(every "
        r"channel's\) or 1, or convert the images with --channels=3")  # fmt: skip


CLI_CASES = [_cli_corrupt_folder, _cli_empty_class, _cli_missing_folder, _cli_npz_missing_key,
             _cli_bad_image_size, _cli_resize_mode_alone, _cli_standardize_without_its_values,
             _cli_standardize_values_alone, _cli_standardize_channels_of_a_folder]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda f: f.__name__.removeprefix("_cli_"))
def test_cli_refuses_bad_data_before_training(tmp_path, fashion, case):
    args, message = case(tmp_path, fashion)
    workdir = tmp_path / "run"
    proc = train_cli("--flagfile=configs/smoke.flags", f"--workdir={workdir}", *args, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    error = proc.stderr[proc.stderr.index("fitnets_tf.train: error:") :].strip()
    assert "\n\n" not in error  # one paragraph
    assert re.search(message, error), error
    assert not list(workdir.rglob("checkpoints"))  # nothing trained


def test_cli_trains_on_a_png_folder(tmp_path, folder):
    workdir = tmp_path / "run"
    proc = train_cli("--flagfile=configs/smoke.flags", f"--workdir={workdir}",
                  f"--dataset=folder:{folder}", "--image_size=28", "--resize_mode=crop",
                  "--mode=fitnet",
                  "--teacher_epochs=1", "--hints_epochs=1", "--kd_epochs=1",
                  "--nomeasure_latency", timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["dataset"] == f"folder:{folder}"
    # Which class each output index is, for whoever serves the model, also inside its SavedModel.
    assert summary["class_names"] == sorted(NAMES)
    saved_model = layout.RunLayout(workdir).student_saved_model
    assert labels.read(saved_model, "saved_model") == sorted(NAMES)
    assert [row["name"] for row in summary["models"]] == ["teacher", "fitnet"]
    flags = (workdir / "flags.txt").read_text()
    assert f"--dataset=folder:{folder}" in flags and "--image_size=28,28" in flags
    assert "--resize_mode=crop" in flags
    preprocessor = keras.saving.load_model(workdir / "preprocessor.keras")
    assert preprocessor.input_shape == (None, 28, 28, 1)


def test_a_folder_read_in_one_channel_takes_bmp_files(tmp_path, fashion):
    # TensorFlow's BMP decoder cannot give one channel: an 8-bit grayscale BMP among grayscale
    # PNGs (and, with --channels=1, a colour one, by luma weights) must still be read.
    from PIL import Image

    images, labels = fashion
    write_pngs(tmp_path, images[:20], labels[:20])
    Image.fromarray(images[20]).save(tmp_path / NAMES[0] / "gray.bmp")

    def pixels(**kwargs) -> set:
        datasets = data.load(f"folder:{tmp_path}", batch_size=32, validation_size=0, **kwargs)
        assert datasets.input_shape == (28, 28, 1)
        x = np.concatenate([_examples(datasets.train)[0], _examples(datasets.test)[0]])
        return {a.tobytes() for a in x}

    assert images[20][..., None].tobytes() in pixels()  # the grayscale BMP's own pixels
    rgb = np.stack([images[21], 255 - images[21], images[21] // 2], axis=-1)
    Image.fromarray(rgb).save(tmp_path / NAMES[0] / "rgb.bmp")
    seen = pixels(channels=1)
    luma = np.rint(tf.image.rgb_to_grayscale(rgb.astype("float32")).numpy()).astype(np.uint8)
    assert len(seen) == 22 and luma.tobytes() in seen


def test_a_started_folder_run_keeps_its_recorded_size(tmp_path, fashion):
    # A run started when a folder's first image decided its size (32x32 here) resumes at that
    # size, not at its images' most common one, which its teacher may not take.
    from fitnets_tf import builders

    images, labels = fashion
    write_pngs(tmp_path / "images", images[:30], labels[:30])
    config = config_lib.ExperimentConfig().with_values(dataset=f"folder:{tmp_path / 'images'}",
                                                       batch_size=8)  # fmt: skip
    record = tmp_path / "data.json"
    new = builders.load_run_data(config, record)
    assert new.input_shape == (28, 28, 1)
    assert new.spec.formatting["size_from"] == "the folder's images, all 28x28"
    fields = json.loads(record.read_text())
    record.write_text(json.dumps({**fields, "input_shape": [32, 32, 1]}))
    assert data_record.folder_size_of(record, config.data) == (32, 32)
    resumed = builders.load_run_data(config, record, started=True)
    assert resumed.input_shape == (32, 32, 1) and resumed.spec.formatting["resized"] == 30
    assert resumed.spec.formatting["size_from"] == "the size the run started with (its data.json)"
    assert data_record.folder_size_of(record, config.with_values(image_size=14).data) is None
