"""Image sizes: the ``image_size`` option, a source resized to it, and images that fit a model."""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from fitnets_tf.data import overview
from fitnets_tf.data.specs import DatasetSpec
from fitnets_tf.errors import ConfigError, DataError

#: How an image of another aspect ratio is brought to ``image_size``: ``stretch`` resizes it
#: whole (distorting shapes), ``crop`` resizes its largest centred box of the target's aspect
#: ratio (cutting the margins), ``pad`` resizes it whole into the target and fills the rest
#: with black (letterboxing): :func:`resize_images`, as ``keras.ops.image.resize`` does them.
RESIZE_MODES = ("stretch", "crop", "pad")
#: What every data reader, and ``--resize_mode``, does unless told otherwise.
DEFAULT_RESIZE_MODE = RESIZE_MODES[0]
#: What ``channels`` converts the images to: grayscale, RGB.
CHANNELS = (1, 3)


def resize_mode_problem(resize_mode) -> str | None:
    """What is wrong with a ``resize_mode`` value, one sentence, or None when it is valid."""
    if resize_mode in RESIZE_MODES:
        return None
    return f"resize_mode takes one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}"


def aspect_options(resize_mode: str) -> dict[str, bool]:
    """``resize_mode`` as Keras' resizing arguments (``image_dataset_from_directory``,
    ``keras.ops.image.resize``).

    Raises:
        ConfigError: see :func:`resize_mode_problem`.
    """
    problem = resize_mode_problem(resize_mode)
    if problem:
        raise ConfigError(f"`{problem}`. Received: resize_mode={resize_mode!r}")
    return {
        "crop_to_aspect_ratio": resize_mode == "crop",
        "pad_to_aspect_ratio": resize_mode == "pad",
    }


def resize_images(images, size: tuple[int, int], resize_mode: str = DEFAULT_RESIZE_MODE):
    """``images`` (one ``HWC`` or a batch ``NHWC``) resized (bilinear) to ``size`` by
    ``resize_mode``, as float32 in their own range.

    The one resize of every source, and the call the README gives serving clients
    (``keras.ops.image.resize``): a folder's images are not resized by
    ``image_dataset_from_directory``, whose ``pad`` resizes then pads
    (``tf.image.resize_with_pad``) where this pads then resizes, up to 200 grey levels apart.

    Raises:
        ConfigError: see :func:`resize_mode_problem`.
    """
    options = aspect_options(resize_mode)
    # Keras pads only float images in a graph (its uint8 fill fails to trace).
    return keras.ops.image.resize(tf.cast(images, tf.float32), size, **options)


def image_size_problem(image_size) -> str | None:
    """What is wrong with an ``image_size`` value, one sentence, or None when it is valid.

    Valid: a positive int (a square) or a tuple of one or two positive ints (height, width).
    """
    sizes = (image_size,) if isinstance(image_size, int) else image_size
    if (
        isinstance(sizes, (tuple, list))
        and len(sizes) in (1, 2)
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
    ):
        return None
    return f"image_size takes one or two positive sizes (height,width), got {image_size!r}"


def as_height_width(image_size) -> tuple[int, int] | None:
    """``image_size`` as ``(height, width)``: one size means a square; None stays None.

    Raises:
        ConfigError: see :func:`image_size_problem`.
    """
    if image_size is None:
        return None
    problem = image_size_problem(image_size)
    if problem:
        raise ConfigError(f"`{problem}`. Received: image_size={image_size!r}")
    sizes = (image_size,) if isinstance(image_size, int) else tuple(image_size)
    return (sizes[0], sizes[-1])


def at_size(
    raw: dict[str, tf.data.Dataset],
    spec: DatasetSpec,
    size: tuple[int, int] | None,
    resize_mode: str = DEFAULT_RESIZE_MODE,
) -> tuple[dict[str, tf.data.Dataset], DatasetSpec]:
    """``raw`` and ``spec`` with every image resized (bilinear) to ``size``, when it differs,
    by ``resize_mode`` (:data:`RESIZE_MODES`).

    Resized pixels are float32, still in ``[0, 255]``: the Preprocessor takes either.

    Raises:
        DataError: the images vary in size (a TFDS dataset of photos) and no ``size`` is given.
    """
    height, width, channels = spec.input_shape
    if size is None:
        if height is None or width is None:
            raise DataError(
                f"The images of dataset {spec.name!r} vary in size (its shape is "
                f"{spec.input_shape}), and a network needs one: pass --image_size=HEIGHT,WIDTH "
                "(image_size= in Python) to resize them all."
            )
        return raw, spec
    if (height, width) == size:
        return raw, spec
    aspect_options(resize_mode)  # refused before any map is traced

    def resize(x, y):
        return resize_images(x, size, resize_mode), y

    resized = {key: ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE) for key, ds in raw.items()}
    return resized, dataclasses.replace(spec, input_shape=(*size, channels))


def with_channels(
    raw: dict[str, tf.data.Dataset], spec: DatasetSpec, channels: int | None
) -> tuple[dict[str, tf.data.Dataset], DatasetSpec]:
    """``raw`` and ``spec`` with every image converted to ``channels``, when the data's differ:
    1, grayscale (``tf.image.rgb_to_grayscale``'s luma weights), or 3, RGB (the gray value
    repeated). None: the data's own.

    Converted pixels are float32, still in ``[0, 255]``: the Preprocessor takes either.

    Raises:
        DataError: a conversion other than between 1 and 3 channels.
    """
    have = spec.input_shape[-1]
    if channels is None or channels == have:
        return raw, spec
    if {have, channels} != set(CHANNELS):
        raise DataError(
            f"The images of dataset {spec.name!r} have {have} channel(s), which cannot be "
            f"converted to {channels}: only grayscale (1) and RGB (3) convert to each other."
        )

    def to_channels(x, y):
        return convert_channels(x, channels), y

    converted = {key: ds.map(to_channels, num_parallel_calls=tf.data.AUTOTUNE)
                 for key, ds in raw.items()}  # fmt: skip
    # Recorded beside a folder's own counts (its grayscale images made RGB to match the rest),
    # which say nothing of this conversion of every image.
    formatting = {**(spec.formatting or {}), overview.CHANNELS_CONVERTED: f"{have}->{channels}"}
    return converted, dataclasses.replace(spec, input_shape=(*spec.input_shape[:2], channels),
                                          formatting=formatting)  # fmt: skip


def convert_channels(images, channels: int):
    """``images`` (grayscale or RGB, ``HWC`` or ``NHWC``) as float32 of ``channels``: 1,
    ``tf.image.rgb_to_grayscale``'s luma weights, or 3, the gray value repeated. The one
    conversion of :func:`with_channels` and of a served image
    (:func:`fitnets_tf.export.read_images`)."""
    convert = tf.image.grayscale_to_rgb if channels == 3 else tf.image.rgb_to_grayscale
    return convert(tf.cast(images, tf.float32))


def check_input_shape(model_input_shape, data_input_shape, role: str) -> None:
    """Refuses images that a model cannot take, before any training.

    Args:
        model_input_shape: the model's input shape, with or without the batch axis (Keras'
            ``model.input_shape`` has it); None entries take any size.
        data_input_shape: the images' ``(H, W, C)`` (``Datasets.input_shape``).
        role: how the message names the model (``"teacher"``).

    Raises:
        DataError: naming both shapes and what to change.
    """
    data_shape = tuple(data_input_shape)
    model_shape = tuple(model_input_shape)[-len(data_shape) :]
    if len(model_shape) == len(data_shape) and all(
        m is None or m == d for m, d in zip(model_shape, data_shape, strict=True)
    ):
        return
    height, width, channels = model_shape if len(model_shape) == 3 else (None, None, None)
    changes = []  # to the images: all of them are needed
    if height is not None and width is not None and (height, width) != data_shape[:2]:
        changes.append(f"resize the images (--image_size={height},{width})")
    if channels is not None and channels != data_shape[-1]:
        how = f" (--channels={channels})" if channels in CHANNELS else ""
        changes.append(f"give images with {channels} channel(s){how}")
    fixes = [" and ".join(changes)] if changes else []
    fixes.append(f"use a {role} made for {_shape(data_shape)} images")
    raise DataError(
        f"The {role} takes images of shape {_shape(model_shape)} but the data's are "
        f"{_shape(data_shape)}: {', or '.join(fixes)}."
    )


def _shape(shape) -> str:
    return "x".join("?" if s is None else str(s) for s in shape)
