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
    return augment_image_and_flip(image, seed, crop_padding=crop_padding, flip=flip)[0]


def augment_image_and_flip(
    image: tf.Tensor, seed: tf.Tensor, *, crop_padding: int = 8, flip: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`augment_image`, and whether it flipped the image (a bool scalar).

    A teacher's outputs cached for the image and for its mirror image follow the flip with it.
    """
    seed = tf.cast(seed, tf.int64)
    if crop_padding:
        pad = [[crop_padding, crop_padding], [crop_padding, crop_padding], [0, 0]]
        crop_seed = tf.stack([seed, tf.constant(0, tf.int64)])
        image = tf.image.stateless_random_crop(tf.pad(image, pad), tf.shape(image), crop_seed)
    flipped = tf.constant(False)
    if flip:
        # tf.image.stateless_random_flip_left_right's own draw and rule, made here so that the
        # caller learns the outcome (a test pins the two to the same images).
        draw = tf.random.stateless_uniform([], tf.stack([seed, tf.constant(1, tf.int64)]))
        flipped = draw < 0.5
        image = tf.cond(flipped, lambda: tf.reverse(image, [1]), lambda: image)
    return image, flipped
