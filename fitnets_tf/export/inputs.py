"""A serving client's input: image files read as the run's training read its images.

A model's input must be the pixels training saw, and another image library gives other ones:
PIL's bilinear resize antialiases a shrunk image, the training pipeline's
(``keras.ops.image.resize``) does not, and PIL's grayscale conversion weighs the channels
otherwise than libpng's. :func:`read_images` reads a file with the training
pipeline's own function (:func:`~fitnets_tf.data.image_folder.read_image`: decoded to the
channels the run's folder was decoded to, resized by its ``--resize_mode`` to its size,
rounded to whole grey levels), converts its channels as ``--channels`` converted the run's
images (:func:`~fitnets_tf.data.shapes.convert_channels`), and, unless the model has the
preprocessing baked in, normalises it with the run's own ``preprocessor.keras``.

Everything comes from what the run recorded: the size and channels from its ``data.json``
(``input_shape``; a folder's ``decoded_channels`` under ``formatting``), the resize mode from
its ``flags.txt``. A folder run's images are matched bit for bit; a built-in, ``.npz`` or TFDS
run's images were not read from files, so a file is read as a folder of them would have been.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.data.image_folder import decode_failure, read_image
from fitnets_tf.data.shapes import DEFAULT_RESIZE_MODE, convert_channels
from fitnets_tf.errors import DataError, ExportError
from fitnets_tf.export.serving import load_keras, run_of
from fitnets_tf.run.layout import RunLayout


def read_images(
    workdir: str | os.PathLike,
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    include_preprocessing: bool = False,
) -> np.ndarray:
    """Image files as the batch the run's exported student takes.

    Args:
        workdir: the run directory (or a mode's, ``RUN/kd``) the model was exported from.
        paths: one image file or several (BMP, GIF: its first frame, JPEG or PNG), of any size
            and channels (grayscale, RGB; alpha is dropped).
        include_preprocessing: as at the export: True for a ``_raw`` model (the batch is raw
            pixels in [0, 255]); False for one taking the normalised tensor (the run's
            ``preprocessor.keras`` is applied).

    Returns:
        float32 ``(N, H, W, C)``: the run's size and channels, one image per path, in order.

    Raises:
        DataError: a file is missing or cannot be decoded.
        ExportError: the run records no image shape, or its ``preprocessor.keras`` is needed
            and missing or damaged.
    """
    files = run_of(pathlib.Path(workdir).expanduser())
    height, width, channels, decoded = _recorded_shape(files)
    resize_mode = files.recorded_flags().get("resize_mode") or DEFAULT_RESIZE_MODE
    batch = []
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
        path = pathlib.Path(path).expanduser()
        if not path.is_file():
            raise DataError(f"The image file {path} does not exist: give the path of a file.")
        try:
            pixels = read_image(str(path), (height, width), decoded, resize_mode)
        except tf.errors.OpError as e:
            raise DataError(
                f"Cannot decode the image file {path} ({decode_failure(e)}): give a BMP, GIF, "
                "JPEG or PNG file."
            ) from None
        # Converted one image at a time, as the training pipeline converted them.
        batch.append(tf.cast(pixels, tf.float32) if decoded == channels
                     else convert_channels(pixels, channels))  # fmt: skip
    images = tf.stack(batch)
    if not include_preprocessing:
        images = _preprocessor(files)(images)
    return np.asarray(keras.ops.convert_to_numpy(images), np.float32)


def _recorded_shape(files: RunLayout) -> tuple[int, int, int, int]:
    """``(height, width, channels, channels decoded)`` of the run's images, from ``data.json``.

    ``channels decoded``: a folder's, recorded as it was read; a run recorded before that read a
    folder in the channels it trained on unless ``--channels`` converted them, and a conversion
    to RGB decodes to RGB alike (the gray value repeated either way).
    """
    try:
        record = json.loads(files.data.read_text())
        height, width, channels = (int(side) for side in record["input_shape"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ExportError(
            f"{files.data} does not exist or records no input_shape, so the size and channels "
            "the run trained on are unknown: read images from a run directory written by "
            "fitnets_tf.train."
        ) from None
    decoded = (record.get("formatting") or {}).get("decoded_channels")
    if decoded is None:
        converted = files.recorded_flags().get("channels") and record["dataset"].startswith(
            "folder:"
        )
        if converted and channels == 1:
            raise ExportError(
                f"The run in {files.root} converted its folder's images to grayscale "
                "(--channels=1), and its data.json, written before runs recorded it, does not "
                "say whether they were decoded as RGB or grayscale: read each file with "
                "fitnets_tf.data.image_folder.read_image(path, (height, width), C), C the "
                "folder's channels (1 when all its images are grayscale, else 3), then "
                "fitnets_tf.data.shapes.convert_channels(pixels, 1)."
            )
        decoded = channels
    return height, width, channels, int(decoded)


def _preprocessor(files: RunLayout) -> keras.Model:
    if not files.preprocessor.is_file():
        raise ExportError(
            f"The model takes the normalised tensor, and the run's fitted normalisation "
            f"({files.preprocessor}) is missing: restore it, or export with "
            "--include_preprocessing and read the images with include_preprocessing=True."
        )
    return load_keras(files.preprocessor, "preprocessor")
