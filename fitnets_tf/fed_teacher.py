"""``Distiller.fit``'s check of its teacher on the first labelled images it is given.

The command line checks a user's teacher on the validation images before it teaches
(:func:`fitnets_tf.evaluation.check_teacher`): its class order, its accuracy against chance,
its input scaling. A Python user calls ``fit`` with their own data, so ``fit`` makes the same
checks, in the same order and with the same tests, on its first images (up to the scaling
check's :data:`~fitnets_tf.teacher_scaling.MAX_IMAGES`), and says each fix in Python terms.
How the images are fed is read from their values alone: in [0, 1], pixels / 255; above 1,
raw pixels; with negative values, standardised, by constants ``fit`` is not given, so the
pixels are recovered from the values' range per channel (a few hundred images reach black
and white: torchvision's ``Normalize(0.2860, 0.3530)`` of Fashion-MNIST spans -0.81 to 2.02).
Each fix is said in the form ``fit`` was given its data (:mod:`fitnets_tf.fit_inputs`).

Given the teacher's cached logits (``{"images": x, "teacher_logits": t}``,
:mod:`fitnets_tf.teacher_cache`), what teaches in that ``fit`` is the cache, not the teacher:
the cached logits are judged (class order, accuracy against chance, a top-two gap as far off
as logits 255 times off give) and the teacher is not called, so how the images were scaled
for it when they were cached cannot be checked.
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from fitnets_tf import class_order, evaluation, logit_scale, teacher_scaling
from fitnets_tf.errors import ConfigError
from fitnets_tf.fit_inputs import FitInputs
from fitnets_tf.models.logits import check_batched
from fitnets_tf.notes import note
from fitnets_tf.step_inputs import CACHED_LOGITS, images_of
from fitnets_tf.teacher_scaling import as_python

SKIP = "Distiller(..., check_teacher=False) skips this check."
_BATCH = 64  # images the teacher is given at once
# Said once per Distiller: the check waits for a fit given labels.
UNLABELLED = (
    "Distiller.fit checks the teacher on images with labels (its class order, its accuracy, "
    "the scaling it was trained on), and this hint stage's images come without labels: it "
    "trains unchecked, and the check waits for the next fit given labels. To check the teacher "
    "before stage 1, give fit (images, labels) here too: the hint stage does not train on the "
    "labels. " + SKIP
)
# The fewest distinct labelled images any check can refuse a teacher on: another scaling
# winning every differing answer, or a teacher of 2 classes wrong on every image (chance then
# 1/2 at most), is refused from 14 on (0.5^14 = 6.1e-5 < 1e-4); renaming classes needs more
# (tests/test_fit_checks.py). Fewer: fit says the teacher was not checked.
FEWEST_REFUSABLE = math.ceil(math.log(max(teacher_scaling.P_VALUE, class_order.PERMUTED_P_VALUE))
                             / math.log(0.5))  # fmt: skip
# The notes said once per Distiller (its key's): a hint stage's every fit would say it again.
_TOLD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tell_once(distiller, key: str, message: str) -> None:
    told = _TOLD.setdefault(distiller, set())
    if key not in told:
        told.add(key)
        note(message)


def _too_few(count: int, inputs: FitInputs) -> str:
    """The note of a check that no image count this small could refuse on."""
    generator = (", the first batch alone of a Python generator: yield batches of "
                 f"{FEWEST_REFUSABLE} or more" if inputs.kind == "generator" else "")  # fmt: skip
    return (f"Distiller.fit did not check the teacher: the first batches it read hold {count} "
            f"distinct labelled images, and its checks (the teacher's class order, its accuracy, "
            f"the scaling it was trained on) refuse none on fewer than {FEWEST_REFUSABLE}. It "
            f"checks at the next fit given {FEWEST_REFUSABLE} or more (up to "
            f"{teacher_scaling.MAX_IMAGES} are read{generator}). {SKIP}")  # fmt: skip


def _normalize_hint(inputs: FitInputs) -> str:
    return (" A PyTorch teacher trained behind torchvision's Normalize(mean, std) and exported "
            f"without it is fed what it knows with {inputs.images_fix('(x - MEAN) / STD')} "
            "(its Normalize's values, x as pixels / 255).")  # fmt: skip


def _labels(y) -> np.ndarray:
    labels = np.asarray(ops.convert_to_numpy(y))
    if labels.ndim == 2 and labels.shape[-1] > 1:  # one-hot or soft targets
        return np.argmax(labels, axis=-1)
    return labels.reshape(-1).astype("int64")


class _Seen(NamedTuple):
    """The distinct labelled images ``fit``'s first batches hold (:func:`_images_and_labels`)."""

    images: np.ndarray
    labels: np.ndarray  # class ids
    one_hot: bool  # the labels were given one-hot
    logits: np.ndarray | None  # the teacher's, cached with the images (None: not given)


def _images_and_labels(batches, teacher) -> _Seen | None:
    """The distinct images and labels (class ids) of ``batches`` (``fit``'s, as Keras unpacks
    them), in the order first given, up to :data:`~fitnets_tf.teacher_scaling.MAX_IMAGES`, with
    the teacher's logits cached beside them; None when they have no labels.

    Each (image, label) counts once: copies are no evidence, and a repeated dataset of 8 images
    read as 512 had the same 8 answers pass the tests' thresholds (refused as another class
    order "for 128 of 128 images"). Fewer than :data:`FEWEST_REFUSABLE` distinct images refuse
    nothing: a renaming of classes must make 10 more right, another scaling win 14 and lose
    none, a teacher be wrong on 14 of 2 classes (23 of 3) to be far below chance
    (:mod:`fitnets_tf.class_order`).
    """
    xs, ys, logits, one_hot, seen = [], [], [], False, set()
    for batch in batches:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        if y is None:
            return None
        images = np.asarray(ops.convert_to_numpy(images_of(x)), "float32")
        check_batched(images, teacher)  # as the step would, before the teacher sees it
        labels = _labels(y)
        new = teacher_scaling.first_copies(images, labels, seen)
        xs.append(images if new.all() else images[new])  # no copy of a batch without copies
        ys.append(labels[new])
        cached = x.get(CACHED_LOGITS) if isinstance(x, dict) else None
        logits.append(None if cached is None else
                      np.asarray(ops.convert_to_numpy(cached), "float32")[new])  # fmt: skip
        one_hot = one_hot or len(y.shape) == 2 and y.shape[-1] > 1
    count = teacher_scaling.MAX_IMAGES
    cached = None if any(z is None for z in logits) else np.concatenate(logits)[:count]
    return _Seen(np.concatenate(xs)[:count], np.concatenate(ys)[:count], one_hot, cached)


class _Fed:
    """How ``fit`` is given ``images``: ``mode`` as :func:`teacher_scaling.other_scaling`
    takes it (None: not checked), the constants that recover pixels / 255 (standardised
    images), and ``said``, the words that tell the user."""

    def __init__(self, images: np.ndarray):
        self.mean = self.std = None
        if images.ndim != 4:  # features, not (batch, height, width, channels) pixels
            self.mode, self.said = None, "not images"
            return
        if images.min() >= 0:
            self.mode = "scale" if images.max() <= 1 else "none"
            self.said = {"scale": "values in [0, 1], taken as pixels / 255",
                         "none": "values above 1, taken as raw pixels in [0, 255]"}[self.mode]
            return
        low, high = images.min(axis=(0, 1, 2)), images.max(axis=(0, 1, 2))
        if np.any(high <= low):  # a constant channel: no range to recover its pixels from
            self.mode, self.said = None, "negative values, a channel constant"
            return
        # x = (unit - mean) / std with unit spanning [0, 1]: std = 1 / range, mean = -low / range.
        self.mode, self.std, self.mean = "standardize", 1 / (high - low), -low / (high - low)
        self.said = (f"negative values, taken as standardised: x * {as_python(self.std)} + "
                     f"{as_python(self.mean)} spans [0, 1] like pixels / 255")  # fmt: skip


def check_fed_teacher(distiller, batches, inputs: FitInputs | None = None) -> bool:
    """Refuses, before any step, a teacher that ``fit``'s first labelled images
    (``batches``, :func:`fitnets_tf.first_batches.first_batches`) show cannot teach as fed, as
    the command line's :func:`fitnets_tf.evaluation.check_teacher` refuses one on the
    validation images: it calls the data's classes by other labels, or is far below chance
    (:mod:`fitnets_tf.class_order`: trained with another class order), or is right clearly
    more often on the images scaled another common way (:func:`fitnets_tf.teacher_scaling.
    other_scaling`). A teacher near chance is warned of. Each fix is said in the form of
    ``inputs``, what ``fit`` was given (default: a dataset of ``(x, y)``). Given cached
    logits, they are judged instead of the teacher (:func:`_check_cached`).

    Returns whether the teacher was checked: not without labels (a hint stage's images
    alone), nor on fewer than :data:`FEWEST_REFUSABLE` distinct ones (each said once), nor
    given cached logits (judged at each such ``fit``, their warnings said once; the teacher is
    not called): the next ``fit`` tries again. ``Distiller(..., check_teacher=False)`` skips
    the check.
    """
    teacher, inputs = distiller.teacher, inputs or FitInputs()
    seen = _images_and_labels(batches, teacher)
    if seen is None:
        _tell_once(distiller, "unlabelled", UNLABELLED)
        return False
    images, labels = seen.images, seen.labels
    if len(labels) < FEWEST_REFUSABLE:
        if len(labels):
            _tell_once(distiller, "few", _too_few(len(labels), inputs))
        return False
    inputs = inputs.seen(batches[0], seen.one_hot)
    if seen.logits is not None:
        _check_cached(distiller, seen.logits, labels, inputs)
        return False  # a later fit without the cache is taught by the teacher: checked there
    logits = _predictor(teacher, distiller.distribute_strategy, logits=True)(images)
    predictions, num_classes = np.argmax(logits, axis=-1), logits.shape[-1]
    accuracy, chance = float(np.mean(predictions == labels)), 1 / num_classes
    fed = _Fed(images)
    if labels.min() < 0 or labels.max() >= num_classes:  # Keras' loss will name them
        _refuse_other_scaling(distiller, images, labels, fed, predictions, inputs)
        return True
    class_order.refuse_another_order(predictions, labels, num_classes, "first", inputs=inputs)
    if not class_order.near_chance(accuracy, num_classes):
        _refuse_other_scaling(distiller, images, labels, fed, predictions, inputs)
        _warn_logit_scale(distiller, images, labels, logits, fed, inputs)
        return True
    hint = class_order.below_chance_hint(predictions, labels, num_classes, "first",
                                         inputs=inputs)  # fmt: skip
    _refuse_other_scaling(distiller, images, labels, fed, predictions, inputs)
    note(_near_chance(distiller, images, labels, accuracy, chance, fed, hint, inputs))
    return True


def _check_cached(distiller, logits: np.ndarray, labels: np.ndarray, inputs: FitInputs) -> None:
    """The checks of the teacher's cached ``logits`` of ``fit``'s first distinct images (of
    ``labels``): what the student learns from in this ``fit``, whatever the teacher would say
    now. Its class order and accuracy are judged as the teacher's answers are; its logits' top
    gap alone (:func:`fitnets_tf.logit_scale.cached_warning`). The teacher is not called (the
    cache is there to spare it), so no other scaling of the images is tried."""
    predictions, num_classes = np.argmax(logits, axis=-1), logits.shape[-1]
    if labels.min() < 0 or labels.max() >= num_classes:  # Keras' loss will name them
        return
    class_order.refuse_another_order(predictions, labels, num_classes, "first", inputs=inputs)
    accuracy, name = float(np.mean(predictions == labels)), distiller.teacher.name
    if not class_order.near_chance(accuracy, num_classes):
        tau = float(ops.convert_to_numpy(distiller.temperature))
        said = logit_scale.cached_warning(logits, tau, name=name,
                                          given=f"on the first {len(labels)} images fit is given")
        if said:
            _tell_once(distiller, "cached gap", said)
        return
    hint = class_order.below_chance_hint(predictions, labels, num_classes, "first",
                                         inputs=inputs)  # fmt: skip
    little = _little_to_teach(name, inputs, accuracy, len(labels), 1 / num_classes)
    _tell_once(distiller, "cached chance", f"{little}{hint} Was it trained with this data's "
               "class order, and given the images scaled as it was trained on when its logits "
               "were cached?")  # fmt: skip


def _little_to_teach(name: str, inputs: FitInputs, accuracy: float, count: int,
                     chance: float) -> str:  # fmt: skip
    return (f"warning: the teacher {name!r}{inputs.by_cache} is right on {accuracy:.4f} of the "
            f"first {count} images fit is given (chance {chance:.4f}), so it has little to "
            "teach.")  # fmt: skip


def _warn_logit_scale(distiller, images: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                      fed: _Fed, inputs: FitInputs) -> None:  # fmt: skip
    """Warns of a teacher given raw pixels or pixels / 255 whose logits are 255 times off
    (:mod:`fitnets_tf.logit_scale`): its soft targets near one-hot or near uniform."""
    if fed.mode not in ("none", "scale"):
        return
    tau = float(ops.convert_to_numpy(distiller.temperature))
    given = f"on the first {len(labels)} images as fit is given them ({fed.said})"
    # How to feed the teacher the other way, in the form fit was given (the warning's fix).
    fix = {mode: (f"give fit the images so, which both models take (e.g. "
                  f"{inputs.images_fix(expression)}). {SKIP}")
           for mode, expression in (("none", "x / 255"), ("scale", "x * 255"))}  # fmt: skip
    said = logit_scale.warning(
        _predictor(distiller.teacher, distiller.distribute_strategy, logits=True), images,
        labels, logits, fed.mode, tau, name=distiller.teacher.name, given=given, fix=fix)
    if said:
        note(said)


def _near_chance(distiller, images, labels, accuracy: float, chance: float, fed: _Fed,
                 hint: str, inputs: FitInputs) -> str:  # fmt: skip
    """The warning of a teacher near chance: its lagging batch norm statistics' when scoring
    with each batch's own makes it teach (one replica: the check sets them back), else the
    command line's words with the Python fix."""
    teacher = distiller.teacher
    if distiller.distribute_strategy.num_replicas_in_sync == 1:
        # In batches: 512 images of 224x224x3 at once, in training mode, would hold a large
        # teacher's activations for all of them.
        given = tf.data.Dataset.from_tensor_slices((images, labels)).batch(_BATCH)
        if (lagging := evaluation.lagging_statistics(teacher, given, accuracy, chance,
                                                     "first")) is not None:  # fmt: skip
            return lagging
    normalize = _normalize_hint(inputs) if fed.mode in ("scale", "none") else ""
    return (f"{_little_to_teach(teacher.name, inputs, accuracy, len(labels), chance)}{hint} Was "
            f"it trained with this data's class order and on images scaled the same way?"
            f"{normalize}")  # fmt: skip


def _predictor(teacher, strategy, logits: bool = False):
    """The teacher's classes (``logits``: its logits) of a batch of images, in batches."""
    graph = evaluation.inference(teacher)

    def predict(images):
        with strategy.scope():  # an unbuilt teacher makes its variables here
            out = [ops.convert_to_numpy(graph(tf.convert_to_tensor(images[i:i + _BATCH],
                                                                   "float32")))
                   for i in range(0, len(images), _BATCH)]  # fmt: skip
        out = np.concatenate(out).astype("float32")
        return out if logits else np.argmax(out, axis=-1)

    return predict


def _refuse_other_scaling(distiller, images: np.ndarray, labels: np.ndarray, fed: _Fed,
                          predictions: np.ndarray, inputs: FitInputs) -> None:  # fmt: skip
    if fed.mode is None:
        return
    predict = _predictor(distiller.teacher, distiller.distribute_strategy)
    found = teacher_scaling.other_scaling(
        predict, tf.data.Dataset.from_tensors((images, labels)), fed.mode, mean=fed.mean,
        std=fed.std, given=predictions)  # the teacher's classes as given: computed already
    if found is None:
        return
    raise ConfigError(
        f"The teacher {distiller.teacher.name!r} is right on {found.accuracy:.4f} of the first "
        f"{found.count} images as fit is given them ({fed.said}), but on "
        f"{found.better:.4f} of the same images {found.how}: it was trained on images scaled "
        "so, and would teach its mistakes. Give fit the images scaled so, which both models "
        f"take (e.g. {inputs.images_fix(found.expression)}). A teacher right on these images as "
        f"given: {SKIP}"
    )
