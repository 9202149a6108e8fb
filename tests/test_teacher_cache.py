import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data, tiny_dataset

from fitnets_tf import data, models, teacher_cache
from fitnets_tf.distiller import Distiller


def _kd_distiller(teacher, student):
    distiller = Distiller(teacher, student, temperature=3.0, kd_lambda=4.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), phase="kd")
    return distiller


@pytest.mark.parametrize("on_disk", [False, True])
def test_cached_kd_losses_equal_live_ones(teacher, student, tmp_path, on_disk):
    path = tmp_path / "cache" if on_disk else None
    cached = teacher_cache.cache_teacher_logits(
        teacher, tiny_dataset(batch_size=8), augmenting=False, path=path
    )
    distiller = _kd_distiller(teacher, student)
    live = distiller.evaluate(tiny_dataset(batch_size=8), return_dict=True, verbose=0)
    from_cache = distiller.evaluate(cached.batch(8), return_dict=True, verbose=0)
    for name in ("loss", "ce_loss", "kd_loss"):
        np.testing.assert_allclose(from_cache[name], live[name], rtol=1e-5)


def test_cache_pairs_each_image_with_its_own_logits(teacher):
    x, y = tiny_data()
    # A source shuffled differently on each pass: images must still carry their own logits.
    source = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(32, seed=1).batch(8)
    cached = teacher_cache.cache_teacher_logits(teacher, source, augmenting=False)
    batches = teacher_cache.training_batches(cached, batch_size=8, seed=0)
    for inputs, _ in batches:
        expected = teacher(inputs["images"], training=False)
        np.testing.assert_allclose(inputs["teacher_logits"], expected, rtol=1e-5, atol=1e-6)


def test_training_batches_reshuffle_each_epoch_reproducibly(teacher):
    cached = teacher_cache.cache_teacher_logits(teacher, tiny_dataset(), augmenting=False)

    def two_epochs():
        batches = teacher_cache.training_batches(cached, batch_size=32, seed=3)
        return [next(iter(batches))[1].numpy() for _ in range(2)]

    first, second = two_epochs()
    assert sorted(first) == sorted(tiny_data()[1])
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(two_epochs()[0], first)


def test_refuses_augmented_input(teacher):
    with pytest.raises(ValueError, match="random crop/flip.*stale targets.*--augment"):
        teacher_cache.cache_teacher_logits(teacher, tiny_dataset(), augmenting=True)


def test_disk_cache_is_streamed_from_path(teacher, tmp_path):
    path = tmp_path / "logits"
    cached = teacher_cache.cache_teacher_logits(
        teacher, tiny_dataset(), augmenting=False, path=path
    )
    assert path.is_dir() and any(path.iterdir())
    assert int(cached.cardinality()) == 32
    batches = teacher_cache.training_batches(cached, batch_size=8, shuffle_buffer=16)
    assert sum(int(tf.shape(y)[0]) for _, y in batches) == 32


# -- cache_datasets: the experiment runner's cache, in data.load's (seed, epoch) order ----------


def _synthetic(augment=False, **kwargs):
    return data.load("synthetic", batch_size=64, seed=5, limit=192, validation_size=64,
                     augment=augment, **kwargs)  # fmt: skip


def _mnist_teacher():
    return models.build("mnist_teacher", (28, 28, 1), 10, seed=0, kernel_initializer="he_uniform")


def test_cached_batches_are_the_pipelines_batches_with_the_teachers_outputs():
    datasets = _synthetic()
    teacher = _mnist_teacher()
    hint = models.hint_layer_name("mnist_teacher")
    train, validation = teacher_cache.cache_datasets(teacher, datasets, hint_layer=hint)
    tap = keras.Model(teacher.inputs, teacher.get_layer(hint).output)
    for epoch in (0, 3):  # what EpochSync sets at each epoch start, as on a resume
        datasets.epoch.assign(epoch)
        plain = list(datasets.train)
        datasets.epoch.assign(epoch)
        cached = list(train)
        assert len(cached) == len(plain) == 3  # 192 examples
        for (x, y), (inputs, labels) in zip(plain, cached, strict=True):
            np.testing.assert_array_equal(inputs["images"], x)
            np.testing.assert_array_equal(labels, y)
            np.testing.assert_allclose(inputs["teacher_logits"], teacher(x, training=False),
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
            np.testing.assert_allclose(inputs["teacher_hint"], tap(x, training=False),
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
    val_labels = np.concatenate([y for _, y in validation])
    np.testing.assert_array_equal(val_labels, np.concatenate([y for _, y in datasets.validation]))


def test_cached_hint_gives_the_live_hint_loss(teacher, student):
    x, y = tiny_data()
    distiller = Distiller(teacher, student, hint_layer="conv2", guided_layer="conv2")
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), phase="hints")
    live = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    outputs = teacher_cache.outputs_function(teacher, "conv2")(x)
    cached = {"images": x, "teacher_hint": outputs["teacher_hint"].numpy()}
    from_cache = distiller.evaluate(cached, y, batch_size=8, return_dict=True, verbose=0)
    np.testing.assert_allclose(from_cache["hint_loss"], live["hint_loss"], rtol=1e-5)
    assert live["hint_loss"] > 0


def test_cache_datasets_refuses_hints_under_augmentation_and_streamed_data():
    teacher = _mnist_teacher()
    hint = models.hint_layer_name("mnist_teacher")
    with pytest.raises(ValueError, match="Hints cannot be cached under augmentation"):
        teacher_cache.cache_datasets(teacher, _synthetic(augment=True), hint_layer=hint)
    with pytest.raises(ValueError, match="needs the training split in memory.*cache=True"):
        teacher_cache.cache_datasets(teacher, _synthetic(cache=False))


def test_hint_bytes():
    teacher = _mnist_teacher()
    # The MNIST teacher's hint is 4x4x48 float32 per example.
    assert teacher_cache.hint_bytes(teacher, "pool2", 10) == 4 * 4 * 48 * 4 * 10


def test_augmented_cache_gives_each_crop_the_logits_of_its_uncropped_image():
    datasets = _synthetic(augment=True, crop_padding=2)  # synthetic: crops, no flips
    teacher = _mnist_teacher()
    train, _ = teacher_cache.cache_datasets(teacher, datasets)
    images, _ = datasets.train_examples
    uncropped = teacher(images, training=False).numpy()
    datasets.epoch.assign(2)
    plain = list(datasets.train)
    datasets.epoch.assign(2)
    for (x, y), (inputs, labels) in zip(plain, train, strict=True):
        np.testing.assert_array_equal(inputs["images"], x)  # the same crops
        np.testing.assert_array_equal(labels, y)
        # Each row is the logits of one uncropped training image (not of the crop).
        distance = np.abs(inputs["teacher_logits"].numpy()[:, None] - uncropped[None]).max(-1)
        assert (distance.min(axis=1) < 1e-4).all()
        assert not np.allclose(inputs["teacher_logits"], teacher(x, training=False), atol=1e-3)


def test_values_follow_each_images_flip():
    # Image i: its left half is i + 1, its right half 0, so a flipped one is told by its right.
    n = 64
    images = np.zeros((n, 4, 4, 1), np.float32)
    images[:, :, :2] = (np.arange(n, dtype=np.float32) + 1)[:, None, None, None]
    values = np.arange(n, dtype=np.float32)
    epoch = tf.Variable(0, dtype=tf.int64)
    batches = data.augmented_epoch_batches(
        tf.constant(images), tf.range(n), epoch=epoch, seed=1, batch_size=16,
        augmentation=dict(crop_padding=0, flip=True), by_flip={"v": (values, -values - 1)},
    )  # fmt: skip
    flips = 0
    for inputs, labels in batches:
        flipped = inputs["images"].numpy()[:, 0, 3, 0] > 0
        expected = np.where(flipped, -labels.numpy() - 1, labels.numpy())
        np.testing.assert_array_equal(inputs["v"], expected)
        flips += flipped.sum()
    assert 16 < flips < 48  # both ways occur
