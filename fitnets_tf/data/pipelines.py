"""Epoch-ordered ``tf.data`` pipelines: each epoch's batches are a function of (seed, epoch).

Each new iterator of a training pipeline (Keras makes one per epoch) reads an ``epoch``
variable, draws that epoch's permutation of the whole split and then increments it.
:class:`EpochSync` sets it to Keras' epoch index at every epoch start, so an interrupted run
resumed at epoch ``e`` sees exactly the batches an uninterrupted run saw at epoch ``e``;
:func:`epoch_batches` lets other per-example values (cached teacher outputs) follow the same
order.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fitnets_tf.data.augment import augment_image, augment_image_and_flip


def count_examples(ds: tf.data.Dataset) -> int:
    """The number of examples of ``ds``."""
    cardinality = int(ds.cardinality())
    if cardinality >= 0:
        return cardinality
    # Only for generator-backed datasets (tfds.testing.mock_data); TFDS splits know their size.
    return int(ds.reduce(np.int64(0), lambda count, _: count + 1))


def _epoch_seed(seed: int, epoch, salt: int):
    """A stateless-op seed (shape [2]) that depends only on (seed, epoch, salt)."""
    return tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + salt, tf.cast(epoch, tf.int64)])


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
    """Batches of ``(features, labels)`` in the order :func:`~fitnets_tf.data.load`'s training
    pipeline uses.

    ``features`` is a tensor or a dict of tensors whose first axis is the example, in the order
    of :attr:`~fitnets_tf.data.Datasets.train_examples`. Each epoch draws the permutation of
    ``(seed, epoch)``, the one ``load``'s (non-augmented) ``train`` draws; with the same
    ``epoch`` variable and :class:`EpochSync`, precomputed per-example values (teacher outputs)
    follow the same batches and survive a resume.
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


def _preprocessed(raw, num_examples, preprocessor) -> tf.data.Dataset:
    # Preprocess in large batches: ZCA is one (batch, D) x (D, D) matmul, far faster than per image.
    ds = raw.batch(1024).map(
        lambda x, y: (preprocessor(x), tf.cast(y, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.unbatch().apply(tf.data.experimental.assert_cardinality(num_examples))


def eval_pipeline(raw, num_examples, *, preprocessor, batch_size, cache) -> tf.data.Dataset:
    """Validation and test: preprocessed, in order, batched."""
    ds = _preprocessed(raw, num_examples, preprocessor)
    if cache:
        ds = ds.cache()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_pipeline(
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

    Returns:
        ``(batches, epoch variable, (images, labels) in memory or None)``.
    """
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    ds = _preprocessed(raw, num_examples, preprocessor)
    augmentation = (
        dict(crop_padding=crop_padding, flip=flips) if augment and (crop_padding or flips) else None
    )
    if not cache:
        return _streamed(ds, num_examples, seed, batch_size, augmentation), epoch, None
    images, labels = (np.concatenate(a) for a in zip(*tfds.as_numpy(ds.batch(4096)), strict=True))
    images, labels = tf.constant(images), tf.constant(labels)
    if augmentation is None:
        batches = epoch_batches(images, labels, epoch=epoch, seed=seed, batch_size=batch_size)
    else:
        batches = augmented_epoch_batches(images, labels, epoch=epoch, seed=seed,
                                          batch_size=batch_size, augmentation=augmentation)  # fmt: skip
    return batches, epoch, (images, labels)


def _streamed(ds, num_examples, seed, batch_size, augmentation) -> tf.data.Dataset:
    """Without the split in memory: a seeded shuffle buffer and per-iteration random seeds."""
    ds = ds.shuffle(max(num_examples, 1), seed=seed, reshuffle_each_iteration=True)
    if augmentation is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda example, s: (augment_image(example[0], s, **augmentation), example[1]),
            tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def augmented_epoch_batches(images, labels, *, epoch: tf.Variable, seed: int, batch_size: int,
                            augmentation: dict, by_flip: dict | None = None,
                            image_key: str = "images"):  # fmt: skip
    """The augmented training batches of :func:`~fitnets_tf.data.load`, optionally with values
    that follow each example's flip.

    ``by_flip`` maps a name to ``(values, mirrored_values)``, per-example tensors in split order
    (teacher logits of each image and of its mirror image); each batch then is
    ``({image_key: images, name: the values of the way each image was flipped}, labels)``.
    Without it, ``(images, labels)``. Same images, order and crops either way.
    """
    num_examples = int(labels.shape[0])

    def one_epoch(_):
        current, order = _epoch_order(epoch, seed, num_examples)
        indices = tf.data.Dataset.from_tensor_slices(order)
        example_seed = _epoch_seed(seed, current, 1)

        def augmented(i):
            # One seed per (seed, epoch, example): the same crop and flip after a resume.
            s = tf.random.stateless_uniform([], tf.stack([example_seed[0], example_seed[1] * num_examples + i]),
                                            minval=0, maxval=2**62, dtype=tf.int64)  # fmt: skip
            image, flipped = augment_image_and_flip(tf.gather(images, i), s, **augmentation)
            if not by_flip:
                return image, tf.gather(labels, i)
            chosen = {name: tf.where(flipped, tf.gather(mirrored, i), tf.gather(values, i))
                      for name, (values, mirrored) in by_flip.items()}  # fmt: skip
            return {image_key: image, **chosen}, tf.gather(labels, i)

        return indices.map(augmented, tf.data.AUTOTUNE).batch(batch_size)

    ds = tf.data.Dataset.range(1).flat_map(one_epoch)
    batches = -(-num_examples // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(tf.data.AUTOTUNE)
