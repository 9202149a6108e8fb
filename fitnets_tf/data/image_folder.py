"""A user's images in a folder, one sub-folder per class (``--dataset=folder:PATH``).

Listed and decoded as ``keras.utils.image_dataset_from_directory`` lists and decodes them, and
resized by :func:`~fitnets_tf.data.shapes.resize_images`, as every other source and the README's
serving client (Keras' own ``pad`` differs from ``keras.ops.image.resize``'s). Layouts:

* ``PATH/<class>/<images>``: the test and validation images are held out of them
  (:mod:`~fitnets_tf.data.holdout`);
* ``PATH/train/<class>/...`` and ``PATH/test/<class>/...``: those splits, the same class
  folders in both; the validation images are ``PATH/validation/`` (or ``PATH/val/``) when there
  is one, else held out of ``train/``. Other sub-folders of ``PATH`` are then ignored.

A classifier needs two classes or more, and each class some training images after the
held-out draw: both are checked as the folder is read.

The classes are the sub-folder names, sorted; a label is its class's index. As for Keras, the
images are the files ending in one of :data:`IMAGE_SUFFIXES` (any case, any depth below the
class folder); other files are ignored.

Every image's size and channels are read first, from its header where it has one that says
them (:mod:`~fitnets_tf.data.image_headers`: PNG, JPEG; the others are decoded for them), and
decide the format (:mod:`~fitnets_tf.data.folder_format`): one channel when every image is
grayscale (with or without alpha), else RGB (alpha dropped); and, without ``image_size``, the
most common size among the images (the others are resized to it, bilinear, by
``resize_mode``: see :data:`~fitnets_tf.data.shapes.RESIZE_MODES`). Then each image is decoded
once, to those channels, and held in memory as uint8. The files that cannot be decoded are
named then, all in one message, rather than failing an epoch.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from fitnets_tf import native_logs
from fitnets_tf.data.folder_format import FolderFormat
from fitnets_tf.data.holdout import DEFAULT_HOLDOUT, Arrays, user_splits
from fitnets_tf.data.image_headers import stored_shape
from fitnets_tf.data.shapes import DEFAULT_RESIZE_MODE, aspect_options, resize_images
from fitnets_tf.errors import DataError

#: The files ``keras.utils.image_dataset_from_directory`` reads as images, and so do we.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
#: The names a validation folder beside ``train/`` and ``test/`` may have, in preference order.
VALIDATION_FOLDERS = ("validation", "val")
#: How many undecodable files a folder's error names with their reasons (the rest are counted).
FAILURES_NAMED = 10
#: What to do about a folder's undecodable files (``{them}``: "this one" or "them").
FOLDER_FIX = (
    f"Every file ending in {', '.join(IMAGE_SUFFIXES)} under the class folders is read as an "
    "image: replace or delete {them}, then re-run."
)


def read_folder(
    root: str | os.PathLike,
    *,
    image_size: tuple[int, int] | None = None,
    resize_mode: str = DEFAULT_RESIZE_MODE,
    validation_size: int | None = None,
    retrain_on_all: bool = False,
    holdout: str = DEFAULT_HOLDOUT,
) -> tuple[dict[str, Arrays], tuple[str, ...], dict]:
    """The ``train`` / ``validation`` / ``test`` arrays of an image folder, its class names,
    and what reading it decided (:meth:`~fitnets_tf.data.folder_format.FolderFormat.summary`).

    The splits the folder does not give are held out as ``holdout`` says
    (:data:`~fitnets_tf.data.holdout.HOLDOUT_METHODS`).

    Returns:
        ``({split: (uint8 images NHWC, int32 labels)}, class names, summary)``; no
        ``validation`` with ``retrain_on_all`` or ``validation_size=0``.

    Raises:
        DataError: the folder is missing, has no class folders or only one, a class folder has
            no image, ``train/`` and ``test/`` (and ``validation/``) have different classes, an
            image cannot be decoded, or a class has no training image left.
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"The image folder {str(root)!r} does not exist or is not a folder: give "
            "--dataset=folder:PATH with PATH a folder holding one sub-folder of images per class."
        )
    parts = {"train": root / "train", "test": root / "test"}
    if all(folder.is_dir() for folder in parts.values()):
        found = [root / name for name in VALIDATION_FOLDERS if (root / name).is_dir()]
        parts.update({"validation": found[0]} if found else {})
    else:
        parts = {"train": root}
    aspect_options(resize_mode)  # a bad mode is refused before any image is decoded
    files = {part: class_files(folder) for part, folder in parts.items()}
    class_names = tuple(files["train"])
    _check_classes(parts, files, class_names)
    paths = [path for per_class in files.values() for found in per_class.values() for path in found]
    found = stored_format(paths, root)
    size = tuple(image_size or found.common_size())
    channels = 1 if found.grayscale else 3
    arrays = _read_splits(files, size, channels, resize_mode, root)
    splits = user_splits(
        arrays["train"], arrays.get("test"), arrays.get("validation"),
        validation_size=validation_size, retrain_on_all=retrain_on_all, holdout=holdout,
        class_names=[str(parts["train"] / name) for name in class_names],
    )  # fmt: skip
    return splits, class_names, found.summary(size, given=image_size is not None)


def _check_classes(parts: dict[str, pathlib.Path], files: dict, class_names: tuple) -> None:
    """Every split folder lists the training classes, and there are two or more."""
    for part, folder in parts.items():
        if tuple(files[part]) != class_names:
            raise DataError(
                f"{parts['train']} and {folder} must hold the same class folders; train/ has "
                f"{list(class_names)}, {folder.name}/ has {list(files[part])}. Add or rename "
                "folders so that both list the same classes."
            )
    if len(class_names) < 2:
        # A lone "train" (or "test") class is most often a train/ folder without its test/.
        split_like = class_names[0].lower() in ("train", "test", *VALIDATION_FOLDERS)
        hint = (
            f" {class_names[0]!r} looks like a split, not a class: to give your own splits, put "
            f"both train/ and test/ in {parts['train']}, each with one sub-folder per class."
            if split_like
            else ""
        )
        raise DataError(
            f"{parts['train']} has a single class folder, {class_names[0]!r}, and a classifier "
            f"needs two or more: put the images of each class in its own sub-folder.{hint}"
        )


def class_files(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """``{class name: its image files}``, classes and files sorted as Keras lists them.

    Raises:
        DataError: ``folder`` has no class sub-folder, or one of them holds no image.
    """
    # Keras skips hidden folders (.ipynb_checkpoints, .DS_Store's siblings) too.
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{folder} has no sub-folder: put the images of each class in a sub-folder named "
            f"after the class ({folder}/<class>/<image>.png)."
        )
    files = {}
    for name in classes:
        files[name] = image_files(folder / name)
        if not files[name]:
            raise DataError(
                f"The class folder {folder / name} holds no image (files ending in "
                f"{', '.join(IMAGE_SUFFIXES)}): add its images or remove the folder."
            )
    return files


def image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The image files under ``folder``, at any depth, as Keras lists a class folder's: the
    folders in path order, each one's files sorted; files not ending in one of
    :data:`IMAGE_SUFFIXES` (``.DS_Store``, ``Thumbs.db``, notes) left out."""
    walk = sorted(os.walk(folder), key=lambda entry: entry[0])
    return [
        pathlib.Path(root, file)
        for root, _, names in walk
        for file in sorted(names)
        if file.lower().endswith(IMAGE_SUFFIXES)
    ]


def stored_format(paths: list[pathlib.Path], root: pathlib.Path | None = None) -> FolderFormat:
    """The sizes and channel counts of the images ``paths``, from their headers
    (:func:`~fitnets_tf.data.image_headers.stored_shape`); a file whose header says nothing
    (BMP, GIF, damaged) is decoded for them.

    Raises:
        DataError: as :func:`image_format`, when a file decoded here cannot be.
    """
    shapes = [_header_shape(path) for path in paths]
    undecided = [path for path, shape in zip(paths, shapes, strict=True) if shape is None]
    decoded, failures = decoded_each(undecided, _decoded_shape)
    if failures:  # named with any file a header hid, every file decoded to find them
        return image_format(paths, root)
    decoded = iter(decoded)
    found = FolderFormat()
    for shape in shapes:
        found.add(shape if shape is not None else next(decoded))
    return found


def _header_shape(path: pathlib.Path):
    try:
        return stored_shape(path)
    except OSError:  # unreadable: the decoder's attempt names why
        return None


def image_format(paths: list[pathlib.Path], root: pathlib.Path | None = None) -> FolderFormat:
    """The sizes and channel counts of the images ``paths``, decoding every file.

    Raises:
        DataError: naming every file that cannot be read or decoded (the first
            :data:`FAILURES_NAMED` of them, with the decoder's reason), once all are decoded.
    """
    shapes, failures = decoded_each(paths, _decoded_shape)
    if failures:
        raise DataError(undecodable(failures, len(paths), root, FOLDER_FIX))
    found = FolderFormat()
    for shape in shapes:
        found.add(shape)
    return found


def _decoded_shape(path: pathlib.Path) -> tf.TensorShape:
    return tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False).shape


def decoded_each(paths: list, decode: Callable) -> tuple[list, list[tuple[pathlib.Path, str]]]:
    """``decode(path)`` of each of ``paths``, carrying on past a file that cannot be decoded,
    and without the decoder's own stderr lines on such a file (they name no file:
    :func:`fitnets_tf.native_logs.failing_calls_quiet`).

    Returns:
        ``(results, failures)``: the results of the files decoded, in order, and ``(path,
        reason)`` of the others, for :func:`undecodable`.
    """
    results, failures = [], []
    with native_logs.failing_calls_quiet() as quiet:
        for path in paths:
            try:
                results.append(quiet(decode, path))
            except tf.errors.OpError as e:  # not an image, truncated, unreadable
                # Carried on: a user with several bad files fixes them all in one re-run.
                failures.append((path, decode_failure(e)))
    return results, failures


def undecodable(failures: list[tuple[pathlib.Path, str]], total: int, root, fix: str) -> str:
    """The message naming the files that cannot be decoded (``(path, reason)``, of ``total``
    read, under the folder ``root`` or None), the first :data:`FAILURES_NAMED` with their
    reasons, and ``fix`` (``{them}``: what to replace)."""
    # Keras reads hidden files too: macOS leaves a "._NAME" beside each copied image.
    apple = (
        f" {'It is' if len(failures) == 1 else 'The ._* files are'} macOS metadata: delete "
        f"them all with `find {root or failures[0][0].parent} -name '._*' -delete`."
        if any(path.name.startswith("._") for path, _ in failures)
        else ""
    )
    if len(failures) == 1:
        (path, reason), *_ = failures
        fix = fix.format(them="this one")
        return f"Cannot decode the image file {path} ({reason}). {fix}{apple}"
    return (
        f"Cannot decode {len(failures)} of the {total} image files"
        + (f" under {root}:" if root else ":")
        + named_lines([f"{path} ({reason})" for path, reason in failures])
        + f"\n{fix.format(them='them')}{apple}"
    )


def named_lines(names: list[str]) -> str:
    """``names`` a line each, indented, the first :data:`FAILURES_NAMED` (the rest counted)."""
    more = len(names) - FAILURES_NAMED
    return "".join(f"\n  {name}" for name in names[:FAILURES_NAMED]) + (
        f"\n  ... and {more} more." if more > 0 else ""
    )


def decode_failure(error: tf.errors.OpError) -> str:
    """Why TensorFlow could not read or decode an image file: the op's own words, without TF's
    ``{{function_node ...}}`` and ``[Op:...]`` frame."""
    return re.sub(r"\{\{.*?\}\}|\[Op:.*", "", error.message or type(error).__name__).strip()


def _read_splits(files: dict, size, channels: int, resize_mode: str, root) -> dict[str, Arrays]:
    """Each split's images (``files``: ``{split: {class: files}}``), each file decoded once.

    A file whose header is whole and its pixels not (cut short) fails here, in a ``tf.data``
    map that stops at the first: every file is then decoded one by one (:func:`image_format`)
    to name them all, and what the decoder printed here is dropped (it names no file).
    """
    try:
        with native_logs.failing_calls_quiet() as quiet:
            return quiet(lambda: {part: _read(found, size, channels, resize_mode)
                                  for part, found in files.items()})  # fmt: skip
    except tf.errors.OpError as error:
        failed = error
    image_format([path for found in files.values() for per_class in found.values()
                  for path in per_class], root)  # fmt: skip
    raise failed  # every file decodes alone: not one file's error


def _read(files: dict[str, list[pathlib.Path]], size, channels: int, resize_mode: str) -> Arrays:
    """One split's images (``{class: files}``, in that order) as uint8 arrays, and their labels."""
    paths = [str(path) for found in files.values() for path in found]
    counts = [len(found) for found in files.values()]
    labels = np.repeat(np.arange(len(files), dtype=np.int32), counts)

    def load(path):
        return read_image(path, size, channels, resize_mode)

    ds = tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    images = np.concatenate(list(ds.batch(256).as_numpy_iterator()))  # map keeps the order
    return images, labels


def read_image(path, size: tuple[int, int], channels: int, resize_mode: str = DEFAULT_RESIZE_MODE):
    """One image file as a folder's images are read, to a uint8 ``(H, W, channels)`` tensor.

    Decoded as Keras decodes them (its ``channels``, an animation's first frame), then resized
    by :func:`~fitnets_tf.data.shapes.resize_images` even when already at ``size``, where the
    bilinear resize gives back the same pixels, and rounded back to whole grey levels: the
    folder's images are held as uint8. The one definition of both a folder's images and a
    served image file (:func:`fitnets_tf.export.read_images`), so the two are the same pixels.

    Args:
        path: the file, a string or a scalar string tensor (inside a ``tf.data`` map).
        size: ``(height, width)``.
        channels: 1 or 3.
        resize_mode: see :data:`~fitnets_tf.data.shapes.RESIZE_MODES`.
    """
    resized = resize_images(_decoded(tf.io.read_file(path), channels), size, resize_mode)
    # tf.round rounds half to even, as np.rint, which rounded the folder's images before.
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _decoded(encoded, channels: int):
    """``tf.io.decode_image`` with ``channels``, for a BMP file too: TensorFlow's BMP decoder
    refuses a request for 1 channel, which a grayscale folder makes. A BMP there decoded to one
    channel as stored (the folder is read in one channel only when every image is), so it is
    read as stored; PNG's and JPEG's decoders take the request."""
    if channels != 1:
        return tf.io.decode_image(encoded, channels=channels, expand_animations=False)

    def bmp():
        return tf.ensure_shape(tf.io.decode_bmp(encoded), (None, None, 1))

    def other():
        return tf.io.decode_image(encoded, channels=1, expand_animations=False)

    return tf.cond(tf.strings.substr(encoded, 0, 2) == "BM", bmp, other)
