"""A model's class logits: a final softmax found and left out, and what the Distiller checks of
a teacher and a student's ends (and builds of a subclassed student) before any data is read.

Distillation softens both models' logits with the temperature, so a softmax the model applies
itself has to go (its probabilities taken as logits give soft targets near uniform), and it
needs two class logits or more (a softmax over one logit is 1 whatever the input).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fitnets_tf.errors import ConfigError
from fitnets_tf.models.nesting import flattened, layer_input
from fitnets_tf.notes import note

# The names of the softmax functions a model may end in: keras.activations.softmax,
# keras.ops.softmax, tf.keras.activations.softmax and tf.compat.v1.nn.softmax are "softmax",
# tf.nn.softmax and tf.math.softmax "softmax_v2". By name rather than identity, so that
# every backend's and Keras version's function counts, whichever object the user passed.
SOFTMAX_NAMES = frozenset({"softmax", "softmax_v2"})


def is_softmax(function) -> bool:
    """Whether ``function`` (an activation, or a Lambda layer's function) is a softmax."""
    return getattr(function, "__name__", None) in SOFTMAX_NAMES


def are_probabilities(outputs) -> bool:
    """Whether a batch of outputs (a numpy array) looks like a softmax's: 2-D, not empty,
    every row in [0, 1] and summing to 1 (to float16's precision). Logits that happen to are
    taken for probabilities too: the messages that act on this say why."""
    p = np.asarray(outputs)
    if p.ndim != 2 or p.shape[0] == 0:
        return False
    in_range = np.all(p >= -1e-3) and np.all(p <= 1 + 1e-3)
    return bool(in_range and np.allclose(p.sum(axis=-1), 1.0, atol=1e-2))


# log(0) would be -inf: a probability that underflowed becomes float32's smallest normal one.
_SMALLEST = float(np.finfo(np.float32).tiny)


def logits_of_foreign(outputs, probed, name: str, kind: str):
    """The logits of a teacher run as a function (a SavedModel's signature, an ONNX model)
    whose ``outputs`` (a symbolic tensor) gave ``probed`` (numpy) on a probe batch: ``outputs``,
    or their logarithm when ``probed`` are probabilities, and the run says so (``kind`` names
    the teacher's format). ``log p = z - logsumexp(z)`` differs from the logits ``z`` by one
    number per image, which every softmax at every temperature cancels: the soft targets, the
    KD loss and the predictions are those its logits would give."""
    if not are_probabilities(probed):
        return outputs
    note(f"The teacher {name!r} ({kind}) outputs probabilities: the Distiller uses their "
         "logarithms as its logits (the same soft targets at every temperature).")
    return ops.log(ops.maximum(outputs, _SMALLEST))


def ends(model: keras.Model):
    """``(inputs, outputs)`` of a Functional or built Sequential model; None for a subclassed
    one (its ends are known only once it is called)."""
    try:
        return list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError, TypeError):
        return None


def final_softmax(model: keras.Model):
    """The operation applying ``model``'s final softmax, or None: a ``Softmax`` layer,
    ``keras.ops.softmax`` called on the graph's tensors, or a layer whose activation is a
    softmax (a ``Dense``, an ``Activation``, a ``Lambda``), whatever softmax function it was
    given. A subclassed model's end is not an operation: None."""
    model_ends = ends(model)
    if model_ends is None or len(model_ends[1]) != 1:
        return None
    history = getattr(model_ends[1][0], "_keras_history", None)
    last = history.operation if history is not None else None
    # keras.ops.softmax in a Functional graph is an operation whose class Keras does not
    # export; it shares its name with the Softmax layer.
    if type(last).__name__ == "Softmax":
        return last
    function = getattr(last, "function", None) if isinstance(last, keras.layers.Lambda) else None
    if is_softmax(getattr(last, "activation", None)) or is_softmax(function):
        return last
    return None


def ends_in_softmax(model: keras.Model) -> bool:
    """Whether a Functional (or built Sequential) model ends in a softmax
    (:func:`final_softmax`)."""
    return final_softmax(model) is not None


def without_softmax(model: keras.Model) -> keras.Model:
    """The model's logits: the Distiller applies the softmax (and the temperature) itself.

    ``model`` itself unless it ends in a softmax (:func:`final_softmax`); otherwise a model
    sharing its layers up to the softmax: the softmax's input where it is an operation of its
    own (a ``Softmax``, ``Activation`` or ``Lambda`` layer, ``keras.ops.softmax``), a linear
    copy of the layer with the same weights where the layer carries it (a ``Dense``'s).
    """
    last = final_softmax(model)
    if last is None:
        return model
    # Its input in this model's graph: the softmax of a flattened application (its
    # `predictions`) was also called in the application's own graph.
    logits_in = layer_input(model, last)
    if not hasattr(last, "activation") or isinstance(last, keras.layers.Activation):
        return keras.Model(model.inputs[0], logits_in, name=model.name)
    linear = last.__class__.from_config({**last.get_config(), "activation": "linear"})
    outputs = linear(logits_in)
    linear.set_weights(last.get_weights())
    return keras.Model(model.inputs[0], outputs, name=model.name)


def logits_for_distilling(model: keras.Model, role: str) -> keras.Model:
    """``model`` for the Distiller: its logits, a final softmax left out (and said so)."""
    logits = without_softmax(model)
    if logits is model:
        return model
    if role == "student" and not any(layer is logits.layers[-1] for layer in model.layers):
        # A Dense's own softmax: its logits come from a copy, which training would update
        # instead of the student's layer.
        raise ConfigError(
            f"The student {model.name!r} ends in a layer with a softmax activation: the "
            "Distiller trains its logits. Build it with activation=None on that layer (a "
            "separate Softmax layer at the end is fine: it is left out)."
        )
    softmax_note(role, model)
    return logits


def softmax_note(role: str, model: keras.Model) -> None:
    """Tells the user that ``model``'s final softmax is left out (:mod:`fitnets_tf.notes`)."""
    note(f"The {role} {model.name!r} ends in a softmax: the Distiller uses its logits.")


def for_distilling(model: keras.Model, role: str) -> keras.Model:
    """``model`` as the Distiller calls it: the layers of nested models brought to the top
    level (:func:`~fitnets_tf.models.nesting.flattened`, so that a hint or a softmax inside a
    backbone is seen), a final softmax left out (:func:`logits_for_distilling`).

    The one definition of "the teacher's logits": the Distiller's live teacher and the teacher
    cache (:mod:`fitnets_tf.teacher_cache`) both read them here, so cached and live KD have
    the same soft targets.
    """
    return logits_for_distilling(flattened(model), role)


def known_input_shape(model: keras.Model) -> tuple | None:
    """One example's shape at a Functional (or built Sequential) model's one input, when every
    dimension is known; None otherwise (a subclassed model, an open image size)."""
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    return shape if all(d is not None for d in shape) else None


def build_like(student: keras.Model, teacher: keras.Model) -> None:
    """Builds a subclassed student on the teacher's input shape, when that shape is known.

    An unbuilt model has no variables yet, so there would be nothing to optimise; calling it
    once on zeros creates them (as Keras' first ``fit`` batch would).
    """
    if student.built:
        return
    shape = known_input_shape(teacher)
    if shape is not None:  # else a subclassed teacher too: the first batch builds both
        student(ops.zeros((1, *shape)), training=False)


def check_pair(teacher: keras.Model, student: keras.Model) -> None:
    """What the Distiller needs of two models, checked before any data is read: one input and
    one output each, inputs of the same shape (both are called on the same batches) and the
    same number of classes, two or more. Without it, each surfaces in the first step as a
    shape error deep inside Keras or TensorFlow, or as losses of 0."""
    found = {"teacher": ends(teacher), "student": ends(student)}
    for role, model in (("teacher", teacher), ("student", student)):
        if found[role] is None:
            continue
        inputs, outputs = found[role]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ConfigError(
                f"The {role} {model.name!r} has {len(inputs)} input(s) and {len(outputs)} "
                "output(s); the Distiller needs one of each (images in, class logits out). "
                f"Give it keras.Model({role}.inputs[i], {role}.outputs[j]) with the ones that "
                "take the images and give the classes."
            )
    if None not in found.values():
        shapes = [tuple(found[role][0][0].shape[1:]) for role in ("teacher", "student")]
        same = len(shapes[0]) == len(shapes[1]) and all(
            a is None or b is None or a == b for a, b in zip(*shapes, strict=True)
        )
        if not same:
            raise ConfigError(
                f"The teacher {teacher.name!r} takes inputs of shape {shapes[0]} and the student "
                f"{student.name!r} {shapes[1]}: both are called on the same batches. Build the "
                "student for the teacher's input shape (channels last), or resize inside a "
                "model (keras.layers.Resizing)."
            )
    check_same_classes(teacher, student)


def check_batched(images, model: keras.Model) -> None:
    """Refuses images that are one example of ``model``'s input: a dataset not batched.

    Keras would take the first image axis for the batch, and fail deep inside a layer
    ("Negative dimension size caused by subtracting 2 from 1") or train on nonsense.
    """
    model_ends = ends(model)
    if model_ends is None or len(images.shape) != len(model_ends[0][0].shape) - 1:
        return
    expected = tuple(model_ends[0][0].shape[1:])
    if all(e is None or e == d for e, d in zip(expected, images.shape, strict=True)):
        raise ValueError(
            f"The batches hold one image of shape {tuple(images.shape)}, with no batch axis: "
            f"{model.name!r} takes batches of shape (batch, *{expected}). Batch the dataset: "
            "ds.batch(64)."
        )


def _logits_shape(model: keras.Model) -> tuple | None:
    """The output shape of a Functional model (None for a subclassed one's)."""
    try:
        return tuple(model.outputs[0].shape)
    except (AttributeError, ValueError, IndexError):
        return None


def check_class_logits(shape: tuple | None, role: str, name: str) -> None:
    """Refuses a model whose output (of ``shape``, batch axis included; None: unknown) is not
    ``(batch, classes)`` with two classes or more.

    A map of per-pixel scores, ``(batch, H, W, C)`` from a final ``Conv2D(C, 1)``, ends in C
    like logits do: it would train through the hint stage, then fail KD's first step with
    "Incompatible shapes" (or an evaluation with a numpy broadcast error). A Keras binary
    classifier ends in ``Dense(1, activation="sigmoid")``: the softmax over its one logit is 1
    whatever the input, so every loss would be 0 (or a label 1 would fail the step as a class
    the model does not have).
    """
    if shape is None:
        return
    if len(shape) != 2:
        raise ConfigError(
            f"The {role} {name!r} outputs shape {tuple(shape)}, but distillation needs class "
            "logits of shape (batch, classes): one score per class for each image. End it in "
            "a classifier head, e.g. keras.layers.GlobalAveragePooling2D() (or Flatten()) then "
            "keras.layers.Dense(classes)."
        )
    classes = shape[-1]
    if classes is None or classes >= 2:
        return
    raise ConfigError(
        f"The {role} {name!r} gives {classes} output, but distillation needs at least 2 class "
        "logits: it matches the teacher's and the student's softmax over the classes, and a "
        "softmax over one logit is 1 whatever the input (every loss would be 0). Give a binary "
        "classifier a head of 2 logits, keras.layers.Dense(2) with no activation, trained on "
        "labels 0 and 1 (keras.losses.SparseCategoricalCrossentropy(from_logits=True)); a "
        "trained Dense(1) sigmoid's logit z gives the same probabilities as the 2 logits "
        "(0, z)."
    )


def check_same_classes(teacher: keras.Model, student: keras.Model) -> None:
    """Both give the same number of classes, two or more (known for Functional models; a
    subclassed one's is known once it is called, and a mismatch then fails in the first
    step)."""
    shapes = _logits_shape(teacher), _logits_shape(student)
    check_class_logits(shapes[0], "teacher", teacher.name)
    check_class_logits(shapes[1], "student", student.name)
    classes = tuple(None if shape is None else shape[-1] for shape in shapes)
    if None not in classes and classes[0] != classes[1]:
        raise ConfigError(
            f"The teacher {teacher.name!r} gives {classes[0]} classes and the student "
            f"{student.name!r} {classes[1]}: distillation matches their class probabilities. "
            f"Build the student with {classes[0]} outputs."
        )
