"""What data a run started on, recorded in ``data.json`` and checked whenever it resumes.

The configuration check (:mod:`fitnets_tf.run.resume`) compares flags, and ``--dataset=folder:
PATH`` names a folder, not its contents: images added or removed between two calls change the
held-out draw (so the test set) and the class list under stages already trained, and a changed
class count surfaced only as a teacher "built for another dataset". The record is the classes,
the image shape, the split sizes and the training labels' sha256 (pixels are not hashed), and
where the size came from and what a folder's images went through (``formatting``, not
compared); for a folder or an ``.npz`` file, also how its held-out examples were drawn and its
given splits ordered (``holdout``, see :mod:`~fitnets_tf.data.holdout`). Until the run's first stage starts,
other data replaces the record instead (:func:`check_same`): a start refused before it trained
(a teacher made for one channel, three-channel images) must not keep the fixed command out.

The draw is a property of the run, not an option: :func:`holdout_of` reads it from the record
before the data is loaded, so a run started before the draw was stratified (its record names
no ``holdout``) resumes, and is exported, with its own random draw; one that records
``stratified`` (before the splits a folder or file gives were mixed) with its given splits in
the data's order, as its training labels' sha256 has them; and a new run records
``stratified_mixed``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

from fitnets_tf.data import overview
from fitnets_tf.data.holdout import DEFAULT_HOLDOUT, LEGACY_HOLDOUT
from fitnets_tf.errors import DataError
from fitnets_tf.run import io

#: The record's summary of how the data was read (:func:`fitnets_tf.data.overview.fields`):
#: informative, not compared (a resume may read the same images at the size it recorded).
FORMATTING = "formatting"


def record(datasets) -> dict:
    """The fields of ``data.json`` for a :class:`~fitnets_tf.data.Datasets`."""
    spec = datasets.spec
    fields = {
        "dataset": spec.name,
        "input_shape": list(spec.input_shape),
        "class_names": list(spec.class_names) if spec.class_names else None,
        "examples": {
            "train": datasets.num_train_examples,
            "validation": datasets.num_validation_examples,
            "test": datasets.num_test_examples,
        },
    }
    if datasets.train_examples is not None:  # held in memory (load(cache=True))
        labels = np.asarray(datasets.train_examples[1], np.int32)
        fields["train_labels_sha256"] = hashlib.sha256(labels.tobytes()).hexdigest()
    if spec.holdout is not None:  # the user's folder or .npz file
        fields["holdout"] = spec.holdout
    fields[FORMATTING] = overview.fields(datasets)
    return fields


def recorded_holdout(fields: dict) -> str:
    """The ``holdout`` of a record (``data.json``, a search's ``stage1.json``); one that names
    none was written before the draw was stratified: ``"random"``."""
    return fields.get("holdout", LEGACY_HOLDOUT)


def holdout_of(path: str | os.PathLike, *, started: bool = False) -> str:
    """How the run whose ``data.json`` is ``path`` holds out a user's examples, to load its
    data with: the record's (:func:`recorded_holdout`); without a record, ``"stratified_mixed"`` for
    a new run and ``"random"`` for a run ``started`` before runs recorded their data.
    """
    try:
        before = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return LEGACY_HOLDOUT if started else DEFAULT_HOLDOUT
    return recorded_holdout(before)


def folder_size_of(path: str | os.PathLike, data) -> tuple[int, int] | None:
    """The image size recorded in ``path`` (a run's ``data.json``) for a folder read at its
    images' own size (``data``: the config's data section, without ``image_size``); None:
    another dataset, a size given, or no record."""
    if data.image_size is not None or not data.dataset.startswith("folder:"):
        return None
    return recorded_size(path)


def recorded_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """The ``(height, width)`` recorded in ``path`` (a run's ``data.json``); None: no record."""
    try:
        height, width, _ = json.loads(pathlib.Path(path).read_text())["input_shape"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(height), int(width)


def check_same(path: str | os.PathLike, datasets, *, bound: bool = True):
    """Returns ``datasets`` after recording it in ``path`` (a run's ``data.json``), or checking
    it against the record there.

    A run is ``bound`` to its data once a stage has started. Before, a record that differs is
    replaced: it is what a start refused before training left (``--channels=1`` added, as the
    refusal said), and no model has learned from that data.

    Raises:
        DataError: the data differs from the record of a ``bound`` run, naming the fields that
            differ.
    """
    path = pathlib.Path(path)
    now = record(datasets)
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):  # a new run, or one written before the record: start it now
        io.write_json(path, now)
        return datasets
    if "holdout" in now:
        before = {**before, "holdout": recorded_holdout(before)}
    differ = [k for k in now if k in before and before[k] != now[k] and k != FORMATTING]
    # Built-in datasets had no names recorded before they were read from TFDS: the same data,
    # now named. The record takes the names (exports read them from the summary).
    named = differ == ["class_names"] and before["class_names"] is None
    if differ and (named or not bound):
        io.write_json(path, now)
        return datasets
    if differ:
        shown = "; ".join(
            f"{key} differ"
            if key.endswith("sha256")
            else f"{key} {before[key]} then, {now[key]} now"
            for key in differ
        )
        fix = "Restore the data as it was"
        if "holdout" in differ:  # a caller that did not ask holdout_of (fitnets_tf's own do)
            fix = f"Load it with the run's own draw, holdout={before['holdout']!r} (holdout_of)"
        raise DataError(
            f"The data of {now['dataset']} is not what the run in {path.parent} started with "
            f"({shown}): its stages must all see the same data. {fix}, or start a new --workdir."
        )
    return datasets
