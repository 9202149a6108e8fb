"""The stage-1 path of FitNets: the teacher up to its hint layer, the student up to its guided
layer, and the regressor that maps one onto the other.

Both sub-models share the weights of the teacher and the student (taps), so building a path
copies nothing and checks a pair before any training.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers

import keras

from fitnets_tf import regressor as regressor_lib
from fitnets_tf.errors import ConfigError, HintShapeError
from fitnets_tf.hint_flags import pair_name
from fitnets_tf.models import onnx_hints
from fitnets_tf.models.nesting import (
    layer_output,
    nested_model_end,
    nested_models,
    repeated_names,
)
from fitnets_tf.models.onnx_model import onnx_layer
from fitnets_tf.models.saved_model import SavedModelTeacher


@dataclasses.dataclass
class HintTaps:
    """Sub-models that share the teacher's and student's weights.

    Held in a plain object so Keras does not track them as layers of the Distiller: their
    weights already belong to ``teacher`` and ``student``.
    """

    teacher_hint: keras.Model | None = None
    student_guided: keras.Model | None = None


def check_functional(model, role: str):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{role}` must be a keras.Model. Received: {type(model).__name__}")
    try:
        model.inputs  # noqa: B018  (Functional and built Sequential models have them)
    except (AttributeError, ValueError) as e:
        # A Sequential without keras.Input has no input yet: it is not subclassed.
        what = ("a Sequential model without an input: start it with keras.Input(shape)"
                if isinstance(model, keras.Sequential) else
                f"a subclassed {type(model).__name__}: take the graph of its layers with "
                "fitnets_tf.models.traced.as_graph(model, input_shape, role), as the Distiller "
                "does")  # fmt: skip
        raise TypeError(
            f"`{role}` must be a Functional (or built Sequential) keras.Model so that its layers "
            f"can be tapped by name; got {what}, or pass no hint_layer/guided_layer."
        ) from e


def check_tappable(teacher: keras.Model) -> None:
    """Refuses hints from a SavedModel teacher loaded without them
    (:mod:`fitnets_tf.models.saved_model`): its signature runs as a function whose layers are
    not Keras', and its hints are tensors of its graph, which it was not loaded to give."""
    if any(isinstance(layer, keras.layers.TFSMLayer) for layer in teacher.layers):
        raise ConfigError(
            f"The teacher {teacher.name!r} is a TensorFlow SavedModel, run as a function, "
            "loaded without hints: it has no layer to take a hint from. Its hints are tensors "
            "of its graph: load it with them (saved_model.load(path, input_shape, hints=[...]); "
            "--list_layers lists them) and name them, hints=[(tensor, guided_layer)], let "
            "hints='auto' choose one, or distil it without hints (KD)."
        )


def foreign_hints(teacher: keras.Model):
    """``(kind, hint tensors)`` of a teacher run as a function whose hints are tensors of its
    graph (an ONNX model, a SavedModel loaded with hints), or None."""
    onnx = onnx_layer(teacher)
    if onnx is not None:
        return "ONNX", onnx.hints
    layer = next((x for x in teacher.layers if isinstance(x, SavedModelTeacher)), None)
    return None if layer is None else ("SavedModel", layer.hints)


def layer_pairs(teacher: keras.Model, pairs) -> list[tuple[str, str]]:
    """``pairs``, the hints (tensors) of an ONNX or SavedModel teacher named by their layers
    (:mod:`onnx_hints`)."""
    foreign = foreign_hints(teacher)
    if foreign is None:
        return [tuple(pair) for pair in pairs]
    kind, tensors = foreign
    hints = [onnx_hints.layer_name(tensor) for tensor in tensors]
    return onnx_hints.layer_pairs(pairs, teacher.name, hints, kind)


def model_inputs(model: keras.Model):
    # A lone input unwrapped, so a tap called with a tensor matches its input structure.
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def find_layer(model: keras.Model, name: str, role: str):
    names = [layer.name for layer in model.layers]
    if (end := nested_model_end(model, name)) is not None:
        raise ConfigError(
            f"The {role} '{name}' is a model nested in '{model.name}', whose layers are named "
            f"one by one so that a hint can be taken inside it: its output is the layer "
            f"'{end}'. Name that layer, or one of its others (--list_layers shows them)."
        )
    if name not in names:
        raise ConfigError(
            f"Unknown {role} '{name}' in model '{model.name}'.{_nested_note(model, name)} "
            f"Valid layer names: {', '.join(names)}."
        )
    layer = model.get_layer(name)
    if isinstance(layer, keras.Model):
        # Its `output` belongs to its own graph: a tap of it is not connected to the input.
        raise ConfigError(
            f"The {role} '{name}' of model '{model.name}' is a nested model, which could not be "
            f"flattened.{_nested_note(model, name)} Name a layer of the outer model."
        )
    return layer


def check_names(teacher: keras.Model, student: keras.Model, pairs) -> None:
    """Refuses the names of ``pairs`` that are no layer of their model, all in one message, each
    with the valid names closest to it (a typo is then one look away).

    A nested model's name is left to :func:`find_layer`, whose message names its end layer.
    """
    unknown, seen = [], set()
    for i, (hint, guided) in enumerate(pairs):
        for model, name, role in ((teacher, hint, "hint_layer"), (student, guided, "guided_layer")):
            names = [layer.name for layer in model.layers]
            if (role, name) in seen or name in names or nested_model_end(model, name) is not None:
                continue
            seen.add((role, name))
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            mean = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            other, other_role = (student, "student") if model is teacher else (teacher, "teacher")
            if name in [layer.name for layer in other.layers]:  # not a typo: the order
                mean = (f" ('{name}' is a layer of the {other_role} '{other.name}': a pair is "
                        "(teacher_layer, student_layer), and the teacher comes first)")  # fmt: skip
            where = f"Pair {i + 1} ({pair_name(hint, guided)}): " if len(pairs) > 1 else ""
            unknown.append((model, f"{where}Unknown {role} '{name}' in model '{model.name}'{mean}."
                                   f"{_nested_note(model, name)}"))  # fmt: skip
    if not unknown:
        return
    models = list({id(model): model for model, _ in unknown}.values())
    valid = (f"Valid layer names: {', '.join(layer.name for layer in models[0].layers)}."
             if len(models) == 1 else valid_names(teacher, student))  # fmt: skip
    raise ConfigError(" ".join(message for _, message in unknown) + " " + valid)


def _nested_note(model: keras.Model, name: str) -> str:
    """Why a layer of a nested model cannot be named, when it is one ('' otherwise)."""
    inner = [m for m in nested_models(model) if name in [layer.name for layer in m.layers]]
    repeated = repeated_names(model)
    if not (inner or isinstance(_top_layer(model, name), keras.Model)) or not repeated:
        return ""
    where = f" '{name}' is a layer of the nested model '{inner[0].name}', and" if inner else ""
    return (
        f"{where} the layers of nested models are named only when every layer name is unique "
        f"once they are brought to the top level; these repeat: {', '.join(repeated)}. Give "
        "those layers unique names (name=...) when building the model."
    )


def _top_layer(model: keras.Model, name: str):
    return next((layer for layer in model.layers if layer.name == name), None)


def valid_names(teacher: keras.Model, student: keras.Model) -> str:
    return (
        f"Teacher layers: {', '.join(layer.name for layer in teacher.layers)}. "
        f"Student layers: {', '.join(layer.name for layer in student.layers)}."
    )


def deepest_guided_layer(student: keras.Model, pairs) -> str:
    """The guided layer of ``pairs`` nearest the student's output: stage 1 trains up to it."""
    guided = [find_layer(student, name, "guided_layer").name for _, name in pairs]
    order = {layer.name: i for i, layer in enumerate(student.layers)}
    return max(guided, key=order.get)


def make_regressor(
    teacher: keras.Model,
    student: keras.Model,
    hint_layer: str,
    guided_layer: str,
    regressor="auto",
    initializer=None,
    max_norm: float | None = None,
    name: str = "regressor",
) -> keras.layers.Layer:
    """The built regressor of one pair (an automatic one named ``name``), after checking that
    it maps the guided onto the hint.

    Raises ``ConfigError`` (:class:`~fitnets_tf.errors.HintShapeError` for shapes) naming both
    layers, their shapes and the valid layer names; nothing is modified.

    Args:
        teacher, student: Functional models.
        hint_layer, guided_layer: layer names.
        regressor: ``"auto"``, ``"linear"`` or a Keras layer (see :class:`Distiller`).
        initializer: kernel initializer of an automatic regressor.
        max_norm: bound of an automatic regressor's kernel norms (see
            :func:`fitnets_tf.regressor.build_regressor`); None: none.
    """
    max_norm = regressor_lib.checked_max_norm(max_norm)
    check_functional(teacher, "teacher")
    check_functional(student, "student")
    hint = find_layer(teacher, hint_layer, "hint_layer")
    guided = find_layer(student, guided_layer, "guided_layer")
    guided_shape = tuple(layer_output(student, guided.name).shape[1:])
    hint_shape = tuple(layer_output(teacher, hint.name).shape[1:])
    if isinstance(regressor, keras.layers.Layer):
        if max_norm is not None:
            raise ConfigError(
                f"`regressor_max_norm` bounds the regressors built here, and a layer of your own "
                f"({regressor.name!r}) was given: give it the bound itself, e.g. "
                f"kernel_constraint=keras.constraints.MaxNorm({max_norm}, axis=[0, 1, 2]) for "
                "a Conv2D (axis=0 for a Dense), or drop regressor_max_norm."
            )
        if not regressor.built:
            regressor.build((None, *guided_shape))
        out = tuple(regressor.compute_output_shape((None, *guided_shape))[1:])
        if out != hint_shape:
            raise HintShapeError(
                f"The given regressor maps the guided layer '{guided_layer}' {guided_shape} to "
                f"{out}, but the hint layer '{hint_layer}' is {hint_shape}."
            )
        return regressor
    regressor_lib.check_shapes(
        guided_shape,
        hint_shape,
        guided_layer=guided_layer,
        hint_layer=hint_layer,
        valid=valid_names(teacher, student),
    )
    return regressor_lib.build_regressor(
        guided_shape, hint_shape, regressor_lib.hint_nonlinearity(hint, teacher), kind=regressor,
        initializer=initializer, max_norm=max_norm, name=name)  # fmt: skip


def tap(model: keras.Model, layer_names: list[str], name: str) -> keras.Model:
    """``model`` up to ``layer_names``: one output per name (a lone one unwrapped)."""
    outputs = [layer_output(model, n) for n in layer_names]
    return keras.Model(model_inputs(model), outputs[0] if len(outputs) == 1 else outputs,
                       name=name)  # fmt: skip


def make_hint_path(
    teacher: keras.Model,
    student: keras.Model,
    hint_layer: str,
    guided_layer: str,
    regressor="auto",
    initializer=None,
    max_norm: float | None = None,
) -> tuple[keras.Model, keras.Model, keras.layers.Layer]:
    """The stage-1 path of one pair: teacher up to the hint, student up to the guided layer,
    and the regressor (:func:`make_regressor`, ``max_norm`` its kernels' bound).

    The two sub-models share the weights of ``teacher`` and ``student`` and compute nothing
    past the tapped layers; nothing is modified, so this also serves to check a pair before
    any training.
    """
    built = make_regressor(teacher, student, hint_layer, guided_layer, regressor, initializer,
                           max_norm)  # fmt: skip
    return (tap(teacher, [hint_layer], "teacher_hint"),
            tap(student, [guided_layer], "student_guided"), built)  # fmt: skip


def resolve_pairs(teacher, student, hints=None, hint_layer=None, guided_layer=None):
    """The hint/guided pairs of either form of the arguments, and the :class:`AutoPair` of
    ``hints="auto"`` (else None). ``[]``: no pair (KD only).

    Raises:
        ConfigError: both forms given, one name of a pair missing, or a malformed ``hints``.
        HintShapeError: pairs given for a model computing channels first.
    """
    if hints is not None and (hint_layer is not None or guided_layer is not None):
        raise ConfigError(
            "Give `hints` (several pairs, or 'auto') or `hint_layer` and `guided_layer` "
            f"(one pair), not both. Received: hints={hints!r}, hint_layer={hint_layer!r}, "
            f"guided_layer={guided_layer!r}"
        )
    if (hint_layer is None) != (guided_layer is None):
        raise ConfigError(
            "Give both `hint_layer` and `guided_layer` (for hint training) or neither "
            f"(KD only). Received: hint_layer={hint_layer!r}, guided_layer={guided_layer!r}"
        )
    if hint_layer is None and hints is None:
        return [], None
    auto = isinstance(hints, str) and hints == "auto"
    if not auto:  # hints='auto' loads a SavedModel teacher again with the tensor it chooses
        check_tappable(teacher)
    for model, role in ((teacher, "teacher"), (student, "student")):
        regressor_lib.check_channels_last(model, role)
    if hint_layer is not None:
        return layer_pairs(teacher, [(hint_layer, guided_layer)]), None
    if auto:
        from fitnets_tf.hint_choice import auto_pair

        chosen = auto_pair(teacher, student)
        return [(chosen.hint_layer, chosen.guided_layer)], chosen
    pairs = [tuple(p) for p in hints] if not isinstance(hints, str) else []
    if not pairs or any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
        raise ConfigError(
            "`hints` must be 'auto' or a non-empty list of (hint_layer, guided_layer) name "
            f"pairs.{_one_pair(hints)} Received: hints={hints!r}"
        )
    if len(set(pairs)) != len(pairs):
        raise ConfigError(f"`hints` names a pair twice. Received: hints={hints!r}")
    return layer_pairs(teacher, pairs), None


def _one_pair(hints) -> str:
    """The list to give for one pair given bare: a tuple, or the command line's 'hint:guided'."""
    parts = hints.split(":") if isinstance(hints, str) else hints
    if isinstance(parts, (list, tuple)) and len(parts) == 2 and all(
        isinstance(n, str) and n for n in parts
    ):
        return f" Give hints=[{tuple(parts)!r}] for one pair."
    return ""


def check_weights(hint_weights, count: int) -> tuple[float, ...]:
    """The ``wᵢ`` of ``count`` pairs (default: 1 each)."""
    if hint_weights is None:
        return (1.0,) * count
    weights = tuple(hint_weights)
    if count == 0 and weights:
        raise ConfigError(
            "`hint_weights` weigh the hint pairs, and there are none (KD only): give the pairs "
            "they weigh (hints=[(hint_layer, guided_layer), ...] or hints='auto', or "
            "hint_layer and guided_layer), or drop hint_weights. Received: "
            f"hint_weights={hint_weights!r}"
        )
    # numbers.Real: NumPy scalars too (np.float32 from an array of weights).
    if len(weights) != count or not all(
        isinstance(w, numbers.Real) and not isinstance(w, bool) and 0 < w < math.inf
        for w in weights
    ):
        raise ConfigError(
            f"`hint_weights` must be {count} finite number(s) > 0, one per hint pair. Received: "
            f"hint_weights={hint_weights!r}"
        )
    return tuple(float(w) for w in weights)


def make_regressors(teacher, student, pairs, regressor="auto", initializer=None,
                    max_norm: float | None = None) -> list:  # fmt: skip
    """One checked regressor per pair (:func:`make_regressor`); a failing pair is named.

    ``regressor`` is one kind for all pairs, or a list of layers, one per pair. A seeded Keras
    ``initializer`` gets seed + i for the i-th pair, so that equal shapes get distinct draws.
    ``max_norm`` bounds every automatic regressor's kernel norms (None: no bound).
    """
    given = list(regressor) if isinstance(regressor, (list, tuple)) else None
    if isinstance(regressor, keras.layers.Layer) and len(pairs) > 1:
        # One layer object would be one regressor, its weights shared by every pair.
        raise ConfigError(
            f"Give one regressor per pair: {len(pairs)} pairs and one layer. Pass a list of "
            f"{len(pairs)} layers (regressor=[...]), or 'auto'/'linear' for a regressor each."
        )
    if given is not None and len(given) != len(pairs):
        raise ConfigError(
            f"Give one regressor per pair: {len(pairs)} pairs, {len(given)} regressors."
        )
    check_functional(teacher, "teacher")
    check_functional(student, "student")
    for model, role in ((teacher, "teacher"), (student, "student")):
        regressor_lib.check_channels_last(model, role)
    check_names(teacher, student, pairs)  # every unknown name at once, not the first
    built = []
    for i, ((hint, guided), name) in enumerate(zip(pairs, regressor_lib.regressor_names(pairs),
                                                   strict=True)):  # fmt: skip
        layer = given[i] if given is not None else regressor
        try:
            built.append(make_regressor(teacher, student, hint, guided, layer,
                                        nth_initializer(initializer, i), max_norm, name))
        except ConfigError as e:
            if len(pairs) == 1:
                raise
            raise type(e)(f"Pair {i + 1} ({pair_name(hint, guided)}): {e}") from e
    return built


def nth_initializer(initializer, i: int):
    """The i-th pair's initializer: a seeded Keras initializer gets seed + i."""
    if i == 0 or not isinstance(initializer, keras.initializers.Initializer):
        return initializer
    config = initializer.get_config()
    if not isinstance(config.get("seed"), int):
        return initializer
    return initializer.__class__.from_config({**config, "seed": config["seed"] + i})
