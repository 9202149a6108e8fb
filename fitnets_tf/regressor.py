"""The hint regressor r(·; W_r): maps the student's guided layer onto the teacher's hint layer.

The paper's rule (section 3.2): the regressor is convolutional, with a *valid* kernel of
``k = N_g − N_h + 1`` pixels per spatial axis (``N`` the map size), so that a guided map of
``N_g`` pixels becomes a hint-sized map of ``N_h`` pixels with ``k² · O_g · O_h`` weights
instead of the ``N_h² · O_h · N_g² · O_g`` of a fully connected one. Its non-linearity is the
hint layer's, so that the regressor can reach the hint's range (a maxout hint is matched by a
maxout regressor with the teacher's number of pieces); where no Keras activation reaches it (a
``ReLU(negative_slope=...)`` or ``LeakyReLU`` hint below 0, a lambda), the regressor is linear.
"""

from __future__ import annotations

import math
import numbers

import keras

from fitnets_tf import layers as maxout_layers
from fitnets_tf.errors import ConfigError, HintShapeError
from fitnets_tf.models.nesting import own_nodes

# Layers that do not change which non-linearity produced their input's values: we look
# through them to find the hint's non-linearity (the paper's layer includes its pooling).
_TRANSPARENT = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.Identity,
    maxout_layers.CeilMaxPooling2D,
)

KINDS = ("auto", "linear")


def inbound_layer(layer, model=None):
    """The single layer feeding ``layer`` in ``model``'s graph (a Functional graph), or None."""
    # In ``model``'s own graph: a flattened model's layers were also called in their nested
    # model's, and two nodes hid the parent of a pooling hint inside a backbone.
    nodes = own_nodes(model, layer) if model is not None else getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        return None
    parents = [t._keras_history.operation for t in nodes[0].input_tensors]
    return parents[0] if len(parents) == 1 else None


def hint_nonlinearity(hint_layer: keras.layers.Layer, model=None) -> dict:
    """Describes the non-linearity that produced ``hint_layer``'s output (in ``model``'s graph,
    when given: the teacher holding it).

    Returns one of ``{"kind": "maxout", "pieces": p, "ties": t}``, ``{"kind": "activation",
    "activation": name}`` or ``{"kind": "linear"}``.
    """
    layer = hint_layer
    while isinstance(layer, _TRANSPARENT):
        parent = inbound_layer(layer, model)
        if parent is None:
            break
        layer = parent
    if isinstance(layer, (maxout_layers.MaxoutConv2D, maxout_layers.MaxoutDense)):
        return {"kind": "maxout", "pieces": layer.pieces, "ties": layer.ties}
    if isinstance(layer, keras.layers.ReLU):
        return _relu_nonlinearity(layer)
    name = _activation_name(getattr(layer, "activation", None))
    return {"kind": "linear"} if name == "linear" else {"kind": "activation", "activation": name}


def _relu_nonlinearity(layer: keras.layers.ReLU) -> dict:
    """The regressor's non-linearity for a ``keras.layers.ReLU`` hint: one that reaches every
    value the hint takes (``f(x) = negative_slope · (x − threshold)`` below ``threshold``)."""
    if layer.negative_slope:
        # A leaky ReLU's values go below 0, which a ReLU regressor never reaches (an
        # irreducible hint loss): linear, as for a LeakyReLU layer.
        return {"kind": "linear"}
    # MobileNets' ReLU(6.): a plain ReLU regressor could not be bounded as the hint is. Other
    # bounds and thresholds keep the hint's values in [0, max_value], which a ReLU reaches.
    return {"kind": "activation", "activation": "relu6" if layer.max_value == 6 else "relu"}


def _activation_name(activation) -> str:
    """The Keras name of ``activation`` (``"relu"`` for ``keras.activations.relu`` and
    ``tf.nn.relu`` alike), or ``"linear"``: none, or a function Keras has no activation of
    that name for (a lambda, a ``functools.partial``), whose range a linear regressor reaches
    whatever it is."""
    name = getattr(activation, "__name__", None)
    try:
        keras.activations.get(name)
    except ValueError:
        return "linear"
    return name or "linear"


def kernel_size(guided_shape, hint_shape) -> tuple[int, ...]:
    """The paper's ``k = N_g − N_h + 1`` per spatial axis; shapes exclude the batch axis."""
    return tuple(g - h + 1 for g, h in zip(guided_shape[:-1], hint_shape[:-1], strict=True))


def check_shapes(guided_shape, hint_shape, *, guided_layer: str, hint_layer: str, valid: str):
    """Raises :class:`HintShapeError` when the paper's regressor cannot map one onto the other."""

    def fail(problem: str, fix: str):
        raise HintShapeError(
            f"Cannot regress the student's guided layer '{guided_layer}' (output shape "
            f"{tuple(guided_shape)}) onto the teacher's hint layer '{hint_layer}' (output shape "
            f"{tuple(hint_shape)}): {problem}. {fix} {valid}"
        )

    if len(guided_shape) != len(hint_shape):
        fail(
            "their ranks differ",
            "Choose two convolutional layers (or two flat layers) so the regressor keeps the "
            "layout.",
        )
    if len(hint_shape) not in (1, 3):
        fail(
            "only (H, W, C) feature maps and flat (features,) layers are supported",
            "Choose a 2-D convolutional or a dense layer.",
        )
    if any(d is None for d in (*guided_shape, *hint_shape)):
        fail(
            "a dimension is unknown",
            "Build the models for your images' size so the feature maps' sizes are known: "
            "fitnets_tf.models.at_input_shape(model, (H, W, C)) gives one whose input leaves "
            "it open (a copy, same layers and weights: train and save that one).",
        )
    if len(hint_shape) == 3 and any(k < 1 for k in kernel_size(guided_shape, hint_shape)):
        fail(
            "the hint map is larger than the guided map, and the paper's valid-convolution "
            "regressor (k = N_g - N_h + 1) can only shrink a map",
            "Guide an earlier (larger) student layer or hint from a later (smaller) teacher layer.",
        )


def _channels_first_layers(model: keras.Model) -> list[str]:
    """The names of ``model``'s layers (those of models nested in it too) that compute
    channels first."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _channels_first_layers(layer)
        elif getattr(layer, "data_format", None) == "channels_first":
            found.append(layer.name)
    return found


def check_channels_last(model: keras.Model, role: str) -> None:
    """Refuses a model computing channels first, whose hints would be read wrongly.

    Every shape rule here reads a feature map as (H, W, C): a (C, H, W) one would be compared,
    regressed and chosen by the wrong axes (refused as too large, or mapped by a kernel of
    channel counts). Its logits are another matter: KD alone needs nothing else.
    """
    names = _channels_first_layers(model)
    if names:
        shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
        raise HintShapeError(
            f"Hints need channels-last feature maps (N, H, W, C), and the {role} {model.name!r} "
            f"computes channels first (data_format='channels_first': {shown}). Build it "
            "channels last (Keras' default: keras.config.set_image_data_format('channels_last') "
            "before building it, or data_format='channels_last' in its layers, with images "
            "(N, H, W, C)), or distil it by KD alone (no hints: only its logits are used)."
        )


def checked_max_norm(max_norm) -> float | None:
    """``max_norm`` of :func:`build_regressor` as a float (a NumPy scalar too, which a maxout
    layer's config refuses), or None; anything else is refused, naming the option."""
    if max_norm is None:
        return None
    number = isinstance(max_norm, numbers.Real) and not isinstance(max_norm, bool)
    if not (number and 0 < max_norm < math.inf):
        raise ConfigError(
            "`regressor_max_norm` must be None (no bound) or a finite number > 0 (the paper's "
            f"code: 0.9). Received: regressor_max_norm={max_norm!r}"
        )
    return float(max_norm)


def regressor_names(pairs) -> list[str]:
    """The layer names of the regressors of ``pairs`` (``(hint_layer, guided_layer)``), so that
    a model's summary tells them apart: ``regressor`` for one pair, as always; for several,
    ``regressor_<guided_layer>``, and the pair's number after it when two pairs guide the same
    layer. Keras' weights files and the run's checkpoints hold variables by position, not by
    layer name: weights saved when every regressor was named ``regressor`` load unchanged."""
    if len(pairs) == 1:
        return ["regressor"]
    guided = [g.replace("/", "_") for _, g in pairs]  # a "/" is no Keras layer name's
    return [f"regressor_{g}" + (f"_{i + 1}" if guided.count(g) > 1 else "")
            for i, g in enumerate(guided)]  # fmt: skip


def build_regressor(
    guided_shape,
    hint_shape,
    nonlinearity: dict,
    *,
    kind: str = "auto",
    initializer=None,
    name: str = "regressor",
    max_norm: float | None = None,
) -> keras.layers.Layer:
    """Builds the regressor for feature shapes given without the batch axis.

    Args:
        guided_shape: output shape of the student's guided layer, e.g. ``(8, 8, 32)``.
        hint_shape: output shape of the teacher's hint layer, e.g. ``(7, 7, 192)``.
        nonlinearity: from :func:`hint_nonlinearity`.
        kind: ``"auto"`` uses the hint's non-linearity (the paper); ``"linear"`` none.
        initializer: kernel initializer; default U(−0.05, 0.05) as in the paper's code.
        name: layer name.
        max_norm: the largest L2 norm of each kernel after every update, as the students'
            layers bound theirs (:func:`fitnets_tf.layers.kernel_max_norm`: each output
            channel's convolution kernel, each column of a dense one). The paper's code gives
            its regressor 0.9; None: no bound.

    Returns:
        A built layer mapping ``(batch, *guided_shape)`` to ``(batch, *hint_shape)``.
    """
    if kind not in KINDS:
        raise ConfigError(f"`regressor` must be one of {KINDS} or a Keras layer. Received: {kind!r}")
    max_norm = checked_max_norm(max_norm)
    if initializer is None:
        initializer = keras.initializers.RandomUniform(-0.05, 0.05)
    if kind == "linear":
        nonlinearity = {"kind": "linear"}
    units = hint_shape[-1]
    conv = len(hint_shape) == 3
    if nonlinearity["kind"] == "maxout":
        cls = maxout_layers.MaxoutConv2D if conv else maxout_layers.MaxoutDense
        # The hint's gradient rule at ties too: a run that chose "one" for speed keeps it here.
        # The layer's own bound (kept in its config), as the students' maxout layers hold it.
        args = dict(pieces=nonlinearity["pieces"], max_norm=max_norm,
                    ties=nonlinearity.get("ties", maxout_layers.TIES[0]))  # fmt: skip
    else:
        cls = keras.layers.Conv2D if conv else keras.layers.Dense
        args = dict(activation=nonlinearity.get("activation"),
                    kernel_constraint=maxout_layers.kernel_max_norm(max_norm, conv))  # fmt: skip
        if conv:
            args.update(data_format=maxout_layers.DATA_FORMAT)
    if conv:
        args.update(kernel_size=kernel_size(guided_shape, hint_shape), padding="valid")
    regressor = cls(units, kernel_initializer=initializer, name=name, **args)
    regressor.build((None, *guided_shape))
    return regressor


def describe(regressor: keras.layers.Layer) -> dict:
    """What a regressor is, for hints.json and the run's log: its layer class, kernel size
    (None: a dense one), output channels and activation (a maxout one: its pieces), and its
    kernels' ``max_norm`` when they are bounded."""
    config = regressor.get_config()
    pieces, activation = config.get("pieces"), config.get("activation") or "linear"
    if pieces:
        activation = f"maxout ({pieces} pieces)"
    elif not isinstance(activation, str):  # a serialized custom activation
        activation = "custom"
    kernel = config.get("kernel_size")
    described = {
        "layer": type(regressor).__name__,
        "kernel_size": list(kernel) if kernel is not None else None,
        "channels": config.get("filters") or config.get("units"),
        "activation": activation,
    }
    constraint = getattr(getattr(regressor, "kernel", None), "constraint", None)
    if isinstance(constraint, keras.constraints.MaxNorm):
        described["max_norm"] = float(constraint.max_value)
    return described


def describe_line(pair: str, described: dict) -> str:
    """:func:`describe`'s fields as one line of the run's log."""
    kernel = described["kernel_size"]
    shape = f"{'x'.join(map(str, kernel))} kernel, " if kernel else ""
    bound = f", kernel norms <= {described['max_norm']:g}" if "max_norm" in described else ""
    return (f"regressor {pair}: {described['layer']}, {shape}{described['channels']} channels, "
            f"{described['activation']}{bound}")  # fmt: skip
