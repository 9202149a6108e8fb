"""Generated, deterministic data (the ``synthetic`` dataset): smoke runs and tests, no download."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fitnets_tf.data.specs import DatasetSpec

#: Examples generated for the ``synthetic`` dataset's train(+validation) pool and test split.
SYNTHETIC_SIZES = {"train": 1_280, "test": 256}


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


def synthetic_splits(spec: DatasetSpec, validation_size: int) -> dict[str, tf.data.Dataset]:
    """Raw ``train`` / ``validation`` (if ``validation_size``) / ``test`` splits of ``spec``."""
    shape, classes = spec.input_shape, spec.num_classes
    pool = make_synthetic(SYNTHETIC_SIZES["train"], input_shape=shape, num_classes=classes)
    test = make_synthetic(SYNTHETIC_SIZES["test"], input_shape=shape, num_classes=classes, seed=1)
    splits = {"train": pool, "test": test}
    if validation_size:
        # Same arithmetic as the TFDS split strings "train[:-N]" / "train[-N:]".
        splits["train"] = tuple(a[:-validation_size] for a in pool)
        splits["validation"] = tuple(a[-validation_size:] for a in pool)
    return {key: tf.data.Dataset.from_tensor_slices(arrays) for key, arrays in splits.items()}
