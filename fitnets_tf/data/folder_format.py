"""The format a user's image folder is read in, decided from its images: size and channels.

The size and channels of every image of a folder are read before any pixel (:func:`~fitnets_tf.
data.image_folder.stored_format`: from a PNG or JPEG file's header, else by decoding the file);
the counts of images of each size and each channel count decide:

* the size, without ``image_size``: the most common one among the images (ties: the size met
  first, in the order the folder is listed). The first file alone decided before, so one
  larger image sorting first (``big_48.png`` among 154 images of 32x32) resized all the others
  to it. A teacher's fixed input size does not decide it: the data is read before any model
  is (the student, a run's record and an export all take the data's size), and a teacher made
  for another size is refused with the fix, ``--image_size``;
* the channels: one when every image is grayscale (with or without alpha), else RGB (gray
  images repeated to three channels, alpha dropped).

:meth:`FolderFormat.summary` says what was decided and how many images it changed, for the
run's data summary and ``data.json``.
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass
class FolderFormat:
    """The sizes and channel counts of a folder's images, as they decode.

    Attributes:
        sizes: ``{(height, width): images}``, in the order first met.
        channels: ``{channels as stored: images}`` (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA).
    """

    sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    channels: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def add(self, shape) -> None:
        """Counts one image that decodes to ``shape`` ``(H, W, C)``."""
        self.sizes[tuple(int(s) for s in shape[:2])] += 1
        self.channels[int(shape[-1])] += 1

    @property
    def grayscale(self) -> bool:
        """Whether every image is grayscale (with or without alpha)."""
        return all(c <= 2 for c in self.channels)

    @property
    def images(self) -> int:
        return sum(self.sizes.values())

    def common_size(self) -> tuple[int, int]:
        """The most common size; among equally common ones, the first met."""
        most = max(self.sizes.values())
        return next(size for size, count in self.sizes.items() if count == most)

    def size_from(self) -> str:
        """Where :meth:`common_size` came from, in words."""
        size = self.common_size()
        count = self.sizes[size]
        if len(self.sizes) == 1:
            return f"the folder's images, all {size[0]}x{size[1]}"
        return (f"the most common size of the folder's images ({count} of {self.images} are "
                f"{size[0]}x{size[1]}; {len(self.sizes) - 1} other size(s))")  # fmt: skip

    def summary(self, size: tuple[int, int], given: bool) -> dict:
        """What reading the folder at ``size`` (``given``: ``--image_size``'s; else
        :meth:`common_size`) did: where the size came from, how many images were resized,
        converted from grayscale to RGB, or had their alpha channel dropped, and the channels
        every image was decoded to (``decoded_channels``: a served image file is decoded the
        same way, then converted as ``--channels`` converted the folder's,
        :func:`fitnets_tf.export.read_images`)."""
        converted = 0 if self.grayscale else self.channels[1] + self.channels[2]
        alpha = self.channels[2] + self.channels[4]  # gray + alpha is read as gray, or RGB
        return {
            "size_from": "--image_size" if given else self.size_from(),
            "resized": self.images - self.sizes[tuple(size)],
            "grayscale_to_rgb": converted,
            "alpha_dropped": alpha,
            "decoded_channels": 1 if self.grayscale else 3,
        }
