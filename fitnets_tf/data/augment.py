"""The paper's data augmentation: random crops of the zero-padded image and horizontal flips."""

from __future__ import annotations

import tensorflow as tf


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
