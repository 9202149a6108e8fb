"""What a run decided for its data, in one summary: printed when it starts, kept in data.json.

The user's folder or file is read with choices the user did not spell out: the classes (the
sub-folders, sorted), the held-out splits, the image size (``--image_size``, or the data's: a
folder's most common size, see :mod:`~fitnets_tf.data.folder_format`) and the conversions a
folder's images went through (resized, grayscale to RGB, alpha dropped). A folder's counts come
from the pass that reads it; no file is read again to count them.
"""

from __future__ import annotations


def size_from(spec) -> str:
    """Where the images' size came from, in words."""
    return (spec.formatting or {}).get("size_from") or "the dataset's own size"
