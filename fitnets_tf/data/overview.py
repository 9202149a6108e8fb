"""What a run decided for its data, in one summary: printed when it starts, kept in data.json.

The user's folder or file is read with choices the user did not spell out: the classes (the
sub-folders, sorted), the held-out splits, the image size (``--image_size``, or the data's: a
folder's most common size, see :mod:`~fitnets_tf.data.folder_format`) and the conversions a
folder's images went through (resized, grayscale to RGB, alpha dropped). A folder's counts come
from the pass that reads it; no file is read again to count them.
"""

from __future__ import annotations

#: Class names a summary line shows before "...".
NAMES_SHOWN = 5
#: A folder's counts, and how the summary line names them.
COUNTS = {"resized": "resized", "grayscale_to_rgb": "grayscale->RGB",
          "alpha_dropped": "alpha dropped"}  # fmt: skip
#: The field of a ``--channels`` conversion of every image ("1->3"), beside a folder's counts.
CHANNELS_CONVERTED = "channels_converted"


def size_from(spec) -> str:
    """Where the images' size came from, in words."""
    return (spec.formatting or {}).get("size_from") or "the dataset's own size"


def fields(datasets) -> dict:
    """The summary's fields beyond those data.json records anyway (classes, shape, splits):
    ``{"size_from": ..., and a folder's "resized", "grayscale_to_rgb", "alpha_dropped"}``."""
    return {"size_from": size_from(datasets.spec), **(datasets.spec.formatting or {})}


def line(datasets) -> str:
    """The summary as one line of the run's log."""
    spec = datasets.spec
    names = list(spec.class_names or ())
    shown = ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")
    classes = f"{spec.num_classes} classes" + (f" ({shown})" if names else "")
    validation = datasets.num_validation_examples or "no"
    splits = (f"{datasets.num_train_examples} train, {validation} validation, "
              f"{datasets.num_test_examples} test")  # fmt: skip
    shape = "x".join(str(s) for s in spec.input_shape)
    text = f"data: {classes}; {splits} images of {shape} (size: {size_from(spec)})"
    counts = {label: (spec.formatting or {}).get(key) for key, label in COUNTS.items()}
    known = [f"{n} {label}" for label, n in counts.items() if n is not None]
    if converted := (spec.formatting or {}).get(CHANNELS_CONVERTED):
        have, channels = converted.split("->")
        known.append(f"all converted from {have} to {channels} channels (--channels)")
    return text + (f"; images {', '.join(known)}" if known else "") + "."
