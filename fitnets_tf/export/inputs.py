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

Files are read as a folder's images are: a folder given stands for its image files, listed as
a class folder's (:func:`~fitnets_tf.data.image_folder.image_files`: any depth, files of other
suffixes such as ``.DS_Store`` left out), and every file that is missing, then every file that
cannot be decoded, is named in one message (:func:`~fitnets_tf.data.image_folder.decoded_each`,
without the JPEG decoder's own lines on such a file, which name none).

Everything comes from what the run recorded: the size and channels from its ``data.json``
(``input_shape``; a folder's ``decoded_channels`` under ``formatting``), the resize mode from
its ``flags.txt``. A folder run's images are matched bit for bit; a built-in, ``.npz`` or TFDS
run's images were not read from files, so a file is read as a folder of them would have been.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.data.image_folder import (
    IMAGE_SUFFIXES,
    decoded_each,
    image_files,
    named_lines,
    read_image,
    undecodable,
)
from fitnets_tf.data.shapes import DEFAULT_RESIZE_MODE, convert_channels
from fitnets_tf.errors import DataError, ExportError
from fitnets_tf.export.serving import load_keras, run_of
from fitnets_tf.run.layout import RunLayout

#: What to do about files that cannot be decoded (``{them}``: "this one" or "them").
SERVED_FIX = "Only BMP, GIF, JPEG and PNG files are read: convert or leave out {them}."


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
            and channels (grayscale, RGB; alpha is dropped); a folder stands for its image
            files at any depth, in the order :func:`~fitnets_tf.data.image_folder.image_files`
            lists them.
        include_preprocessing: as at the export: True for a ``_raw`` model (the batch is raw
            pixels in [0, 255]); False for one taking the normalised tensor (the run's
            ``preprocessor.keras`` is applied).

    Returns:
        float32 ``(N, H, W, C)``: the run's size and channels, one image per file, in order.

    Raises:
        DataError: no file is given, a folder holds no image, files are missing (all named,
            before any is decoded) or cannot be decoded (all named).
        ExportError: the run records no image shape, or its ``preprocessor.keras`` is needed
            and missing or damaged.
    """
    files = run_of(pathlib.Path(workdir).expanduser())
    height, width, channels, decoded = _recorded_shape(files)
    resize_mode = files.recorded_flags().get("resize_mode") or DEFAULT_RESIZE_MODE
    paths = _image_paths(paths)
    preprocessor = None if include_preprocessing else _preprocessor(files)
    read = functools.partial(_pixels, size=(height, width), channels=decoded, mode=resize_mode)
    pixels, failures = decoded_each(paths, read)
    if failures:
        raise DataError(undecodable(failures, len(paths), None, SERVED_FIX))
    # Converted one image at a time, as the training pipeline converted them.
    images = tf.stack([tf.cast(image, tf.float32) if decoded == channels
                       else convert_channels(image, channels) for image in pixels])  # fmt: skip
    if preprocessor is not None:
        images = preprocessor(images)
    return np.asarray(keras.ops.convert_to_numpy(images), np.float32)


def _pixels(path: pathlib.Path, size, channels: int, mode: str) -> tf.Tensor:
    return read_image(str(path), size, channels, mode)


def _image_paths(paths) -> list[pathlib.Path]:
    """The files ``paths`` names, a folder's image files in its place; the missing refused."""
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found, missing = [], []
    for path in (pathlib.Path(p).expanduser() for p in given):
        if path.is_dir():
            listed = image_files(path)
            if not listed:
                raise DataError(
                    f"The folder {path} holds no image (files ending in "
                    f"{', '.join(IMAGE_SUFFIXES)}, at any depth): give image files, or a folder "
                    "holding some."
                )
            found += listed
        elif path.is_file():
            found.append(path)
        else:
            missing.append(path)
    if len(missing) == 1:
        raise DataError(f"The image file {missing[0]} does not exist: give the path of a file.")
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(given)} paths given do not exist:"
            + named_lines([str(path) for path in missing])
            + "\nGive the paths of image files, or of folders of them."
        )
    if not found:
        raise DataError("No image file given: give the paths of image files, or of a folder.")
    return found


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
