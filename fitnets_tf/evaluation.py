"""What a run measures of a trained model: test accuracy, size, multiplications, latency."""

from __future__ import annotations

import functools
import weakref

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf import class_order, latency, logit_scale, models, teacher_scaling
from fitnets_tf.callbacks import learning_rate_flag
from fitnets_tf.errors import ConfigError
from fitnets_tf.export.serving import as_served, in_float32
from fitnets_tf.models import onnx_model

# PyTorch's convention: its mean and std are the user's to give (the scaling check tries the
# images' own statistics and ImageNet's, which a Normalize's values need not be).
_NORMALIZE_HINT = dict.fromkeys(("scale", "none"), (
    " A PyTorch teacher trained behind torchvision's Normalize(mean, std) and exported without "
    "it is fed what it knows with --preprocessing=standardize --input_mean=MEAN "
    "--input_std=STD (its Normalize's values)."))  # fmt: skip

# Each model's inference function, kept while the model lives: one made per call would trace
# anew each time, and TensorFlow warns of "excessive retracing".
_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Inference:
    """``model(x, training=False)``, holding the model weakly (the function must not keep it
    alive). An object, not a lambda: TensorFlow counts retracing per code object, so one lambda
    traced once for each of several models was warned of as retracing."""

    def __init__(self, model: keras.Model):
        self._model = weakref.ref(model)

    def __call__(self, images):
        return self._model()(images, training=False)


def inference(model: keras.Model):
    """``model(images, training=False)`` as one graph per model, kept while the model lives.

    In a graph: an eager call of an ONNX teacher loaded with hints computes and copies every
    hint too, which a graph asking for the logits alone does not.
    """
    if model not in _INFERENCE:
        _INFERENCE[model] = tf.function(_Inference(model), reduce_retracing=True)
    return _INFERENCE[model]


def predict_classes(model: keras.Model, images) -> np.ndarray:
    """``model``'s class for each of a batch of ``images``, computed in inference mode.

    Not Keras' ``predict_on_batch``: under a ``MirroredStrategy`` of N replicas it gives each
    replica the whole batch and returns N copies of the predictions.
    """
    return np.argmax(inference(model)(images), axis=-1)


def test_accuracy(model: keras.Model, test: tf.data.Dataset) -> float:
    """Top-1 accuracy over every batch of ``test`` (logits or probabilities out; labels as
    class ids, ``(batch,)`` or Keras' ``(batch, 1)``)."""
    predictions, labels = _answers(model, test)
    return float(np.mean(predictions == labels)) if len(labels) else 0.0


def _answers(model: keras.Model, images: tf.data.Dataset, distinct: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``model``'s classes and the labels, over every batch of ``images`` (``distinct``: each
    (image, label) once, :func:`fitnets_tf.teacher_scaling.first_copies`)."""
    pairs, seen = [], set()
    for x, y in images:
        classes, labels = predict_classes(model, x), np.asarray(y).reshape(-1)
        if distinct:
            new = teacher_scaling.first_copies(np.asarray(x), labels, seen)
            classes, labels = classes[new], labels[new]
        pairs.append((classes, labels))
    if not pairs:
        return np.zeros(0, "int64"), np.zeros(0, "int64")
    return tuple(np.concatenate(part) for part in zip(*pairs, strict=True))


def check_teacher(
    teacher: keras.Model, images: tf.data.Dataset, preprocessing: str, num_classes: int,
    class_names=None, split: str = "validation", other_scalings: bool = True,
    input_mean: tuple[float, ...] | None = None, input_std: tuple[float, ...] | None = None,
    temperature: float | None = None,
) -> list[str]:  # fmt: skip
    """The teacher's accuracy on ``images`` (the run's ``split``), and a warning near chance,
    as lines to print.

    A teacher trained on another class order or preprocessing than the run's data scores at
    or below chance, or well below what it can, and distilling it silently teaches its
    mistakes. One right clearly more often on the same images scaled another common way (raw
    pixels for pixels / 255 and the other way round, as a first ``Rescaling(1/255)`` takes
    them; standardised per channel, as torchvision's ``Normalize`` gives them) is refused
    (:func:`fitnets_tf.teacher_scaling.better_scaling`; not with ``other_scalings`` False: a
    teacher the run trained on these images, which a barely trained one could fail). Under
    ``preprocessing="standardize"``, ``input_mean`` and ``input_std`` are the constants the
    images were standardised by (the run's ``Preprocessor``'s ``mean`` and ``std``): the
    other scalings are made from the pixels they recover. Given the run's ``temperature``, a
    teacher fed raw pixels or pixels / 255 whose logits are 255 times off (soft targets near
    one-hot or near uniform: :mod:`fitnets_tf.logit_scale`) is warned of, as ``fit`` warns.

    A teacher that gives some labels' images one other class each, or is far *below* chance,
    knows the classes under other labels: it was trained with another class order
    (:mod:`fitnets_tf.class_order`). Each distinct (image, label) counts once in these checks,
    as in ``Distiller.fit``'s (:func:`fitnets_tf.teacher_scaling.first_copies`).

    Raises:
        ConfigError: the teacher calls labels by other classes, naming them and the teacher's
            order; it is right clearly more often on the images scaled another way, naming
            the ``--preprocessing`` that fits it; or it is far below chance.
    """
    # Each (image, label) once, as Distiller.fit's check counts them: copies are no evidence.
    predictions, labels = _answers(teacher, images, distinct=True)
    accuracy = float(np.mean(predictions == labels)) if len(labels) else 0.0
    chance = 1 / num_classes
    lines = [f"teacher: {split} accuracy {accuracy:.4f} (chance {chance:.4f})"]
    class_order.refuse_another_order(predictions, labels, num_classes, split, class_names)
    if not class_order.near_chance(accuracy, num_classes):
        _refuse_better_scaling(teacher, images, preprocessing, split, other_scalings,
                               input_mean, input_std)  # fmt: skip
        if other_scalings and temperature is not None:
            lines += _logit_scale(teacher, images, preprocessing, split, temperature)
        return lines
    hint = class_order.below_chance_hint(predictions, labels, num_classes, split, class_names)
    # Not a class order's (checked above) nor a teacher this run trained on these images.
    _refuse_better_scaling(teacher, images, preprocessing, split, other_scalings, input_mean,
                           input_std)  # fmt: skip
    if (lagging := lagging_statistics(teacher, images, accuracy, chance, split)) is not None:
        return lines + [lagging]
    order = f" (label k is the k-th of: {', '.join(class_names)})" if class_names else ""
    return lines + [f"warning: the teacher is near chance on the {split} images, so it has "
                    f"little to teach.{hint} Was it trained with this data's class order{order} "
                    f"and on images scaled the same way?{_NORMALIZE_HINT.get(preprocessing, '')}"]


def _refuse_better_scaling(teacher, images, preprocessing: str, split: str, tried: bool,
                           mean, std) -> None:  # fmt: skip
    if not tried:  # a teacher the run trained on these images, as it feeds them
        return
    predict = functools.partial(predict_classes, teacher)
    if (message := teacher_scaling.better_scaling(predict, images, preprocessing, split,
                                                  mean=mean, std=std)):  # fmt: skip
        raise ConfigError(message)


# How to feed the teacher the other way, in the command line's terms (logit_scale's fix).
_LOGIT_FIX = {mode: f"run with --preprocessing={flag}, which feeds both models so and makes it "
                    "the exports' input."
              for mode, flag in (("none", "scale"), ("scale", "none"))}  # fmt: skip


def _logit_scale(teacher, images, preprocessing: str, split: str, temperature: float
                 ) -> list[str]:  # fmt: skip
    """The warning of :func:`fitnets_tf.logit_scale.warning` on the first images, as lines."""
    if preprocessing not in _LOGIT_FIX:
        return []
    x, y = teacher_scaling.first_images(images, teacher_scaling.MAX_IMAGES)
    if len(y) == 0:
        return []
    graph = inference(teacher)

    def logits_of(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(graph(tf.convert_to_tensor(batch[i:i + 64], "float32")))
                               for i in range(0, len(batch), 64)])  # fmt: skip

    given = (f"on the first {len(y)} {split} images as this run feeds them "
             f"(--preprocessing={preprocessing})")  # fmt: skip
    said = logit_scale.warning(logits_of, x, y, logits_of(x), preprocessing, temperature,
                               name=teacher.name, given=given, fix=_LOGIT_FIX)  # fmt: skip
    return [said] if said else []


def lagging_statistics(teacher, images, accuracy: float, chance: float, split: str
                        ) -> str | None:  # fmt: skip
    """The warning for a teacher at chance in inference mode that scores with its batches' own
    statistics: its BatchNormalization moving statistics lag its weights (a short training of
    ``keras.applications.MobileNetV2``, whose momentum 0.999 averages over ~1000 steps). None
    otherwise. The moving statistics are restored: the check must not change the teacher."""
    norms = [layer for layer in _all_layers(teacher)
             if isinstance(layer, keras.layers.BatchNormalization)]  # fmt: skip
    if not norms:
        return None
    saved = [(layer.trainable, [v.numpy() for v in layer.non_trainable_variables])
             for layer in norms]  # fmt: skip
    try:
        for layer in norms:
            layer.trainable = True  # a frozen BatchNormalization ignores training=True
        correct = total = 0
        for x, y in images:
            pred = np.argmax(teacher(x, training=True), axis=-1)
            correct, total = correct + int(np.sum(pred == np.asarray(y))), total + len(pred)
    finally:
        for layer, (trainable, values) in zip(norms, saved, strict=True):
            layer.trainable = trainable
            for variable, value in zip(layer.non_trainable_variables, values, strict=True):
                variable.assign(value)
    batch_accuracy = correct / max(total, 1)
    if class_order.near_chance(batch_accuracy, round(1 / chance)):
        return None
    momentum = max(layer.momentum for layer in norms)
    return (
        f"warning: the teacher is near chance on the {split} images in inference mode "
        f"({accuracy:.4f}) but scores {batch_accuracy:.4f} normalised with each batch's own "
        f"statistics: its BatchNormalization moving statistics (momentum {momentum:g}, an "
        f"average over about {1 / (1 - momentum):.0f} steps) lag its weights, so it has little "
        "to teach. Train it longer, or with BatchNormalization(momentum=0.9), before distilling "
        "(README: BatchNorm in short runs)."
    )


def summary_row(name: str, model: keras.Model, test, stage_seconds: dict | None,
                measure_latency: bool, runtimes: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """One row of a run's ``summary.json["models"]``: the model as it is served, in float32.

    A model trained in mixed precision is evaluated as its float32 copy. It is timed as
    ``fitnets-export`` writes it (:func:`~fitnets_tf.export.serving.as_served`: float32, batch
    norm folded), in TensorFlow and in ``runtimes`` (of
    :data:`fitnets_tf.latency.SERVING_RUNTIMES`), as
    ``latency_ms_per_image_batch{1,128}[_<runtime>]``. ``mults`` is None, and
    ``mults_uncounted`` names the layers, when some are not counted
    (:func:`~fitnets_tf.models.counting.uncounted_layers`: a custom layer's convolution).
    """
    model = in_float32(model)
    uncounted = models.uncounted_layers(model)
    row = {
        "name": name,
        "architecture": model.name,
        "test_accuracy": test_accuracy(model, test),
        "params": models.count_params(model),
        # A count that leaves out a custom layer's multiplications would misstate the ratio.
        "mults": None if uncounted else models.count_multiplications(model),
        **({"mults_uncounted": uncounted} if uncounted else {}),
        "train_seconds": round(sum(stage_seconds.values()), 2) if stage_seconds else None,
        "stage_seconds": stage_seconds,
    }
    # Folded once: measure_served_latency's own as_served then has nothing left to do.
    served = as_served(model) if measure_latency or runtimes else None
    if measure_latency:
        timings = latency.measure_latency(served, batch_sizes=(1, 128), repeats=10)
        row["latency_ms_per_image_batch1"] = timings[1]["ms_per_image"]
        row["latency_ms_per_image_batch128"] = timings[128]["ms_per_image"]
    for runtime in runtimes:
        timings = _served_timings(served, runtime)
        for batch in (1, 128) if timings else ():
            row[f"latency_ms_per_image_batch{batch}_{runtime}"] = timings[batch]["ms_per_image"]
    return row


def _served_timings(served: keras.Model, runtime: str) -> dict | None:
    """``served``'s timings in ``runtime``; an ONNX teacher's are its file's in ONNX Runtime
    (None in another runtime, which cannot run it)."""
    onnx = onnx_model.onnx_layer(served)
    if onnx is None:
        return latency.measure_served_latency(served, runtime, batch_sizes=(1, 128), repeats=30)
    if runtime != "onnxruntime":
        return None
    return latency.measure_onnx_file_latency(onnx.onnx_path, onnx.taken_shape(served.inputs[0]),
                                             repeats=30)  # fmt: skip


def training_warnings(name: str, model: keras.Model, history: dict | None, test_acc: float,
                      num_classes: int) -> list[str]:  # fmt: skip
    """What to tell of a model the run trained, once tested: it did not learn
    (:func:`not_learned`), or its BatchNormalization statistics lag (:func:`lagging_batch_norm`)."""
    found = [not_learned(name, history, test_acc, num_classes),
             lagging_batch_norm(name, model, history, test_acc)]  # fmt: skip
    return [warning for warning in found if warning is not None]


def not_learned(name: str, history: dict | None, test_acc: float, num_classes: int
                ) -> str | None:  # fmt: skip
    """A warning when a model ends near chance on the test images *and* its last training
    batches: it learned nothing (diverged in its first epoch, which
    :class:`~fitnets_tf.callbacks.DivergenceWarning` cannot see; stalled; inputs it cannot use).
    None otherwise. ``history``: the model's stages' Keras histories, in order; the last with
    an ``accuracy`` gives its final training accuracy and cross-entropy."""
    chance = 1 / num_classes
    stages = [(key, h) for key, h in (history or {}).items() if h.get("accuracy")]
    if (not stages or not class_order.near_chance(test_acc, num_classes)
            or not class_order.near_chance(stages[-1][1]["accuracy"][-1], num_classes)):
        return None
    stage, last = stages[-1]
    trained = last["accuracy"][-1]
    cross_entropy = (last.get("ce_loss") or last.get("loss") or [None])[-1]
    flag, uniform = learning_rate_flag(f"{name}/{stage}"), np.log(num_classes)
    advice = f" Lower {flag} (or use --optimizer=adam)"
    if cross_entropy is not None and cross_entropy > 2 * uniform:
        advice = (f" Its cross-entropy on the labels, {cross_entropy:.3g}, is over twice a uniform "
                  f"guess's ({uniform:.3g}): training diverged.{advice}")  # fmt: skip
    elif cross_entropy is not None and cross_entropy <= 1.1 * uniform:
        # Stalled, not diverged: a lower rate, divergence's cure, keeps a short run there.
        advice = (f" Its cross-entropy on the labels, {cross_entropy:.3g}, is a uniform guess's "
                  f"({uniform:.3g}): it barely moved, as too few steps or too low a learning "
                  f"rate leave it, and too high a rate can. Try {flag} ten times higher and ten "
                  "times lower (or --optimizer=adam), or more epochs")  # fmt: skip
    return (f"warning: {name} ends near chance: test accuracy {test_acc:.3f}, {trained:.3f} on "
            f"its last training batches (chance {chance:.3f}): it learned nothing.{advice}, and "
            "check its inputs.")  # fmt: skip


def lagging_batch_norm(name: str, model: keras.Model, history: dict | None, test_acc: float
                       ) -> str | None:  # fmt: skip
    """A warning when ``model`` has BatchNormalization layers and scores far worse in inference
    mode than on its last training batches: after a short run their moving statistics (what
    inference uses) lag the weights. None otherwise.

    ``history``: the model's stages' Keras histories, in order (the last with an ``accuracy``
    is its final training accuracy); None: nothing to compare.
    """
    momenta = [layer.momentum for layer in _all_layers(model)
               if isinstance(layer, keras.layers.BatchNormalization)]  # fmt: skip
    trained = [h["accuracy"][-1] for h in (history or {}).values() if h.get("accuracy")]
    if not momenta or not trained or test_acc > trained[-1] - 0.25:
        return None  # (a gap below 0.25 is overfitting's usual size)
    momentum = max(momenta)
    return (
        f"warning: {name} scores {test_acc:.3f} on the test images in inference mode but "
        f"{trained[-1]:.3f} on its last training batches. Its BatchNormalization layers infer "
        f"with statistics averaged over about {1 / (1 - momentum):.0f} steps (momentum "
        f"{momentum:g}), which lag the weights after a short run: train longer, or build it "
        "with a lower momentum (README: BatchNorm in short runs). After a long run, the gap is "
        "overfitting."
    )


def _all_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _all_layers(layer)  # a nested model's own
