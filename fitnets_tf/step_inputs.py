"""What the Distiller's steps take: images, or images with the teacher's outputs precomputed.

A batch's inputs are the images, or ``{"images": x, "teacher_logits": t, "teacher_hint": h}``
(either cached key may be missing), which :mod:`fitnets_tf.teacher_cache` makes so that a
phase skips the teacher's forward pass.
"""

from __future__ import annotations

IMAGES, CACHED_LOGITS, CACHED_HINT = "images", "teacher_logits", "teacher_hint"


def images_of(x):
    """The images of a batch's inputs: ``x`` itself (or its one element, as a one-input Keras
    model takes ``[x]``), or its ``"images"``."""
    if isinstance(x, (list, tuple)) and len(x) == 1:
        return x[0]
    if not isinstance(x, dict):
        return x
    if IMAGES not in x:
        raise ValueError(
            f"The Distiller's inputs are images, or a dict with {IMAGES!r} (and optionally "
            f"{CACHED_LOGITS!r}, {CACHED_HINT!r}); received a dict with keys {sorted(x)}. For "
            "a dataset of dicts (TFDS's), map it first: "
            "ds.map(lambda e: (e['image'], e['label']))."
        )
    return x[IMAGES]
