"""What reading an image folder costs, and what its format pass cost when it decoded every image.

``python -m bench.folder_read`` (about a minute) writes ``results/folder_read.json``; the
README's folder section quotes it. A folder's size and channels are decided before its pixels
are read (``fitnets_tf.data.folder_format``). That first pass decoded every image, so each was
decoded twice; it now reads PNG and JPEG headers (``image_folder.stored_format``). Timed, in
alternated rounds, on folders of generated images (half JPEG, half PNG, RGB, ten classes) built
in a temporary directory:

- ``headers``: the first pass as it is, ``stored_format``;
- ``decoding``: the first pass as it was, ``image_format`` (every file decoded, one by one);
- ``read_folder``: the whole read as it is (listing, first pass, the pixels decoded and
  resized by a parallel ``tf.data`` map). As it was (``read_folder_before``, per round), it
  took ``decoding - headers`` more: the rest of the read has not changed.
"""

from __future__ import annotations

import pathlib
import tempfile

import numpy as np
import tensorflow as tf

from bench import standalone, timing
from bench.run import machine
from fitnets_tf.data import image_folder

RESULTS = pathlib.Path(__file__).parent / "results" / "folder_read.json"
FOLDERS = {"4000_at_32x32": (4000, 32), "2000_at_128x128": (2000, 128)}  # images, side


def write_folder(root: pathlib.Path, images: int, side: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth content, as photos are, so that JPEG files have their usual size.
        coarse = rng.integers(0, 256, (side // 4, side // 4, 3), np.uint8)
        pixels = tf.cast(tf.image.resize(coarse, (side, side)), tf.uint8)
        encoded = tf.io.encode_jpeg(pixels, quality=90) if i % 2 else tf.io.encode_png(pixels)
        (folder / f"{i:05d}.{'jpg' if i % 2 else 'png'}").write_bytes(encoded.numpy())


def folder_cost(root: pathlib.Path, repeats: int) -> dict:
    paths = image_folder.image_files(root)
    candidates = {
        "headers": lambda: image_folder.stored_format(paths, root),
        "decoding": lambda: image_folder.image_format(paths, root),
        "read_folder": lambda: image_folder.read_folder(root, validation_size=0),
    }
    times = timing.interleaved(candidates, repeats=repeats)
    # The read as it was, round by round: the first pass decoding instead of reading headers.
    times["read_folder_before"] = [
        read + decoding - headers
        for read, decoding, headers in zip(
            times["read_folder"], times["decoding"], times["headers"], strict=True
        )
    ]
    return {
        "images": len(paths),
        "ms": timing.summary(times),
        "decoding_over_headers": timing.ratio(times, "decoding", "headers"),
        "read_folder_before_over_now": timing.ratio(times, "read_folder_before", "read_folder"),
    }


def main(argv=None) -> None:
    args = standalone.arguments(__doc__.splitlines()[0], argv)
    result = {"machine": machine(), "tensorflow": tf.__version__, "folders": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (images, side) in FOLDERS.items():
            write_folder(pathlib.Path(scratch, name), images, side)
            result["folders"][name] = folder_cost(pathlib.Path(scratch, name), args.repeats)
    standalone.write(RESULTS, result, shown=("folders",))


if __name__ == "__main__":
    main()
