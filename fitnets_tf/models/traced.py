"""A subclassed model as a graph of its own layers, so that a hint or guided layer can be named.

A subclassed model's ``call`` is Python: Keras knows its layers but not how they connect, so
no layer's output can be tapped. Running that ``call`` once on a ``keras.Input`` calls each
layer on symbolic tensors, and the layers record the graph; ``keras.Model(inputs, outputs)``
over it shares every layer (and weight) with the model: training the graph trains the model.

The graph holds what the Python did for one value of ``training``. Passed at run time,
``training`` still reaches every layer, as through the model; but a ``call`` that *branches*
on it (``if training: x = self.noise(x)``) would keep one branch. So the call is traced with
``training=False`` and with ``True``, and both graphs must hold the same layers and give the
model's own inference outputs on a random batch, or the model is refused with what to do.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np

from fitnets_tf.errors import ConfigError
from fitnets_tf.models.logits import known_input_shape
from fitnets_tf.models.nesting import is_graph

# What needs a subclassed model's graph, for messages.
_NEEDS = "hints and a model file's re-created layers"
# The graphs' inference outputs against the model's, on random inputs (float32 rounding of
# the same operations in another order stays far below).
_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def is_subclassed(model) -> bool:
    """Whether ``model`` is a ``keras.Model`` whose ``call`` is code (not Functional or
    Sequential)."""
    return isinstance(model, keras.Model) and not is_graph(model)


def built_input_shape(model: keras.Model) -> tuple | None:
    """The shape of one example a built subclassed model was called on, or None."""
    shapes = getattr(model, "_build_shapes_dict", None) or {}  # Keras records its first call
    shape = next(iter(shapes.values()), None) if len(shapes) == 1 else None
    return tuple(shape[1:]) if shape is not None else None


def as_graph(model: keras.Model, input_shape, role: str) -> keras.Model:
    """``model`` as a Functional model of its own layers for inputs of ``input_shape`` (one
    example's); ``model`` itself when it is not subclassed.

    Raises:
        ConfigError: its ``call`` cannot run on a symbolic input (TensorFlow functions called
            on it, not Keras layers and ``keras.ops``), or does not give one graph for both
            values of ``training``; the message says which and what to do.
    """
    if not is_subclassed(model):
        return model
    takes_training = "training" in inspect.signature(model.call).parameters
    graphs = [_trace(model, input_shape, role, training)
              for training in ((False, True) if takes_training else (None,))]  # fmt: skip
    layers = [[id(layer) for layer in graph.layers[1:]] for graph in graphs]
    x = np.random.default_rng(0).standard_normal((2, *input_shape)).astype("float32")
    expected = _inference(model, x)
    if layers[0] != layers[-1] or not all(
        np.allclose(_inference(graph, x), expected, **_TOLERANCE) for graph in graphs
    ):
        raise ConfigError(
            f"The {role} {model.name!r} is a subclassed {type(model).__name__} whose call runs "
            "other layers or other arithmetic with training=True than with training=False (a "
            f"Python branch on `training`), so the graph of its layers, which {_NEEDS} need, "
            "would not be the model. Pass `training` to the layers instead (`self.dropout(x, "
            "training=training)`), or build it as a Functional model."
        )
    return graphs[0]


def _trace(model: keras.Model, input_shape, role: str, training: bool | None) -> keras.Model:
    inputs = keras.Input(tuple(input_shape), name=f"{model.name}_input")
    kwargs = {} if training is None else {"training": training}
    try:
        outputs = model.call(inputs, **kwargs)
        return keras.Model(inputs, outputs, name=model.name)
    except Exception as e:  # noqa: BLE001  (a user's call may raise anything on a KerasTensor)
        raise ConfigError(
            f"The {role} {model.name!r} is a subclassed {type(model).__name__}, and {_NEEDS} "
            "need the graph of its layers: running its call on a symbolic input, to record how "
            f"its layers connect, failed ({type(e).__name__}: {_first_sentence(e)}). Use Keras "
            "layers and keras.ops in its call (not TensorFlow functions), or build it as a "
            "Functional model; from Python, distil it without hints."
        ) from e


def _first_sentence(error: Exception) -> str:
    return str(error).strip().splitlines()[0].split(". ")[0].rstrip(".")


def as_graphs(teacher: keras.Model, student: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The Distiller's pair for hints (:func:`as_graph`): a subclassed model is traced on the
    shape it was built on (called once), or else on the other model's input shape.

    Raises:
        ConfigError: a subclassed model with neither shape known, or not traceable.
    """
    shapes = [built_input_shape(m) if is_subclassed(m) else known_input_shape(m)
              for m in (teacher, student)]  # fmt: skip
    out = []
    for model, own, other, role in ((teacher, *shapes, "teacher"),
                                    (student, *shapes[::-1], "student")):  # fmt: skip
        shape = own or other
        if is_subclassed(model) and shape is None:
            raise ConfigError(
                f"The {role} {model.name!r} is a subclassed {type(model).__name__} that has not "
                "been called yet, and the other model does not say its input shape either: "
                f"call it once on a batch of your images ({role}(images[:1])) before building "
                "the Distiller, so that the graph of its layers, which hints need, can be traced."
            )
        out.append(as_graph(model, shape, role) if shape is not None else model)
    return out[0], out[1]


def _inference(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))
