"""How ``Distiller.fit`` was given its training data, so that a fix reads as the user's code.

A fix that maps a ``tf.data.Dataset`` of ``(x, y)`` pairs does not fit the code of a user who
called ``d.fit(x_train, y_train, ...)``, gave ``(x, y, sample_weight)`` triples, a Python
generator or a ``keras.utils.PyDataset``, or the ``{"images": ..., "teacher_logits": ...}``
inputs :mod:`fitnets_tf.teacher_cache` makes. :func:`fitnets_tf.fit_checks.checked_fit`
knows which (what ``fit`` got as ``x``): it makes one :class:`FitInputs`, which the teacher's
checks (:mod:`fitnets_tf.fed_teacher`) complete from the first batch and word their fixes by.
"""

from __future__ import annotations

import dataclasses
import re
import types

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf.step_inputs import CACHED_LOGITS, IMAGES


def array_examples(x) -> int | None:
    """The number of examples of array inputs (a dict or list of them too), else None."""
    first = keras.tree.flatten(x)[0] if isinstance(x, (dict, list, tuple)) and x else x
    if isinstance(first, (np.ndarray, tf.Tensor)) or (
        hasattr(first, "shape") and hasattr(first, "__len__")
    ):
        return int(first.shape[0])
    return None


@dataclasses.dataclass(frozen=True)
class FitInputs:
    """The form of ``fit``'s training data.

    ``kind``: ``"dataset"`` (a ``tf.data.Dataset``), ``"arrays"`` (``fit(x, y, ...)``, which
    batches them), ``"generator"`` (a Python generator), ``"pydataset"`` (a
    ``keras.utils.PyDataset``, whose ``__getitem__`` gives each batch), ``"batches"`` (any
    other source of batches Keras takes, a PyTorch ``DataLoader``). ``weighted``: its
    elements are ``(x, y, sample_weight)`` (None: not known before a batch is seen);
    ``keyed``: ``x`` is a dict holding the images under ``"images"``; ``cached``: and the
    teacher's logits under ``"teacher_logits"``; ``one_hot``: the labels are one-hot (or
    soft) rows, whose columns a relabelling moves; ``label_dtype``: the class ids' dtype
    (``keras.datasets``' are uint8, which ``tf.gather`` does not take as indices);
    ``class_weighted``: ``fit`` was given a ``class_weight``, keyed by label.
    """

    kind: str = "dataset"
    weighted: bool | None = False
    keyed: bool = False
    cached: bool = False
    one_hot: bool = False
    label_dtype: str = "int64"
    class_weighted: bool = False

    @classmethod
    def of(cls, arguments: dict) -> FitInputs:
        """The form of ``fit``'s ``arguments`` (as ``keras.Model.fit`` takes them)."""
        x, classes = arguments.get("x"), arguments.get("class_weight") is not None
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec if isinstance(x.element_spec, tuple) else (x.element_spec,)
            return cls("dataset", len(spec) == 3, *_keys(spec[0]), class_weighted=classes)
        if array_examples(x) is not None:
            return cls("arrays", arguments.get("sample_weight") is not None, *_keys(x),
                       class_weighted=classes)  # fmt: skip
        kind = ("pydataset" if isinstance(x, keras.utils.PyDataset) else
                "generator" if isinstance(x, types.GeneratorType) else "batches")  # fmt: skip
        # Keras adds weights of its own to a batch for class_weight: not the user's.
        return cls(kind, None if not classes else False, class_weighted=classes)

    def seen(self, batch, one_hot: bool) -> FitInputs:
        """This form completed by ``batch``, the first ``fit`` reads (Keras unpacks it), and
        whether its labels are ``one_hot``: a generator's structure is known there alone."""
        x, y, weights = keras.utils.unpack_x_y_sample_weight(batch)
        weighted = weights is not None if self.weighted is None else self.weighted
        keyed, cached = (self.keyed, self.cached) if self.kind in ("dataset", "arrays") else (
            _keys(x))  # fmt: skip
        dtype = keras.backend.standardize_dtype(y.dtype) if hasattr(y, "dtype") else "int64"
        return dataclasses.replace(self, weighted=weighted, keyed=keyed, cached=cached,
                                   one_hot=one_hot, label_dtype=dtype)  # fmt: skip

    @property
    def by_cache(self) -> str:
        """Words after "the teacher" telling that its cached logits are what is judged."""
        return f", by its cached logits (fit's {CACHED_LOGITS!r})," if self.cached else ""

    def _batch(self, x: str, y: str) -> str:
        """A batch of images ``x`` and labels ``y`` (Python), the weights kept."""
        w = ", w" if self.weighted else ""
        if self.kind == "dataset":
            return f"dataset.map(lambda x, y{w}: ({x}, {y}{w}))"
        if self.kind == "generator":
            return f"yield ({x}, {y}{w}) for each batch from the generator"
        if self.kind == "pydataset":
            return f"return ({x}, {y}{w}) from the PyDataset's __getitem__"
        return f"give fit each batch as ({x}, {y}{w})"

    def images_fix(self, expression: str) -> str:
        """How to give ``fit`` the images as ``expression`` (Python, of a batch's images
        ``x``), in the form it was given."""
        if self.keyed:
            expression = re.sub(r"\bx\b", f"x[{IMAGES!r}]", expression)
            expression = f"{{**x, {IMAGES!r}: {expression}}}"
        if self.kind == "arrays":
            return f"d.fit({expression}, y, ...)"
        return self._batch(expression, "y")

    def labels_fix(self, order: list[int]) -> str:
        """How to relabel ``fit``'s labels in the teacher's order (``order[k]``: the teacher's
        class of label ``k``), in the form it was given; one-hot labels: their columns; and
        ``class_weight``'s keys, labels too, else each class is weighted as another."""
        # One-hot, the teacher's class j is the column of the label the map sends to j.
        columns = np.argsort(order).tolist()
        gather = "tf.gather" if self.kind == "dataset" else "np.take"
        relabel = (f"{gather}(y, {columns}, axis=-1)" if self.one_hot
                   else f"{gather}({order}, {self._class_ids()})")  # fmt: skip
        keys = (f"class_weight = {{{order}[k]: w for k, w in class_weight.items()}}"
                if self.class_weighted else "")  # fmt: skip
        if self.kind == "arrays":
            return f"y = {relabel}{' and ' if keys else ''}{keys} before d.fit(x, y, ...)"
        return self._batch("x", relabel) + (f", and {keys} before fit" if keys else "")

    def _class_ids(self) -> str:
        """The labels ``y`` as indices the said gather takes: tf.gather int16 to int64 alone
        (uint8 labels raise a TypeError), np.take integers (float labels raise one)."""
        if self.kind == "dataset":
            return "y" if self.label_dtype in ("int16", "int32", "int64") else "tf.cast(y, 'int64')"
        return "y" if "int" in self.label_dtype else "np.asarray(y, 'int64')"


def _keys(x) -> tuple[bool, bool]:
    """Whether inputs ``x`` (or their spec) are a dict, and hold cached logits."""
    return isinstance(x, dict), isinstance(x, dict) and CACHED_LOGITS in x
