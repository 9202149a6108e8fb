"""Where a teacher or a student comes from: a registered name, a ``.keras`` file, or Keras.

``--teacher`` and ``--student`` (and :func:`resolve`) take any of:

* a **registered architecture** (:func:`fitnets_tf.models.names`), built by
  :func:`fitnets_tf.models.build` with the run's init, max-norm and dropout options (those
  options concern these nets only);
* a path ending in **``.keras``**: a Keras 3 model file, loaded with ``safe_mode``
  (:func:`fitnets_tf.run.io.load_model`). A teacher's file is a trained teacher, used as saved
  (the same as ``--teacher_path``). A student's file gives the *architecture* only: its
  layers are re-created by ``keras.models.clone_model`` with fresh weights drawn after seeding
  with the run's seed, so every mode starts from the same initial weights and ``--seed``
  decides them (seeds stored in the file's initializers are dropped for that reason); the
  state of its adapted preprocessing layers (a ``Normalization``'s mean and variance), which
  no initializer draws, is copied from the file (:mod:`fitnets_tf.layer_state`);
  Keras' BatchNormalization layers as :class:`~fitnets_tf.batch_norm.FusedBatchNormalization`
  (applications' too: the same layer, trained through TensorFlow's fused kernel), and its
  maxout layers with the run's ``maxout_ties``;
* **``keras.applications.NAME``** (e.g. ``keras.applications.MobileNetV3Small``): built for the
  dataset's input shape and classes with ``weights=None``, so nothing is ever downloaded
  (ImageNet weights would need 3-channel ImageNet-sized inputs and a 1000-class top anyway: to
  distil from a pretrained network, save your fine-tuned model as ``.keras`` and pass the
  file), ``classifier_activation=None`` (logits) and ``include_preprocessing=False`` where the
  constructor has it (the data pipeline already normalises the images).

Every model a source gives has one input and one output, outputs logits (a final softmax is
removed, its weights kept) and is checked against the dataset's image shape and classes. An
application's auto-generated layer names (``re_lu_7``: Keras counts per process) are
renumbered within the model (``re_lu``, ``re_lu_1``...) as in a fresh process, so the names
``--list_layers`` prints are the ones ``--hints`` takes in any run, whatever Keras built
before (a file's names are its own, and stay). The layers of models nested in a file's model
(a backbone in a ``Sequential``) are brought to the top level, weights shared
(:func:`fitnets_tf.models.nesting.flattened`), so that ``--hints`` can name them.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import os
import re

import keras

from fitnets_tf import batch_norm
from fitnets_tf.errors import ConfigError, ModelFileError
from fitnets_tf.layer_state import copy_adapted_state, is_adapted, set_weights
from fitnets_tf.layers import MaxoutConv2D, MaxoutDense
from fitnets_tf.models import onnx_model, saved_model
from fitnets_tf.models.logits import check_class_logits, softmax_note, without_softmax
from fitnets_tf.models.nesting import flattened
from fitnets_tf.models.registry import build, names
from fitnets_tf.models.traced import as_graph
from fitnets_tf.notes import note
from fitnets_tf.run import io

APPLICATIONS = "keras.applications."
KERAS_SUFFIX = ".keras"
MAXOUT_LAYERS = (MaxoutConv2D, MaxoutDense)


def is_keras_file(spec) -> bool:
    """Whether ``spec`` names a ``.keras`` file (whether or not it exists)."""
    return isinstance(spec, str) and spec.endswith(KERAS_SUFFIX)


# What PyTorch saves a model's weights (or the pickled module) in: no graph TensorFlow can run.
PYTORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


# How to make an ONNX teacher of a PyTorch model, for a dynamic batch, in one file.
TORCH_EXPORT = ("PyTorch 2.9 or later: torch.onnx.export(model.eval(), (torch.zeros(1, C, H, W),), "
                "'teacher.onnx', dynamic_shapes=({0: 'batch'},), external_data=False); before: "
                "dynamic_axes={'input': {0: 'batch'}}, input_names=['input'] instead of "
                "dynamic_shapes and external_data")  # fmt: skip


def pytorch_file_problem(spec, role: str = "teacher") -> str | None:
    """The fix for a PyTorch checkpoint given as a model (one sentence), or None."""
    if not (isinstance(spec, str) and spec.lower().endswith(PYTORCH_SUFFIXES)):
        return None
    if role != "teacher":
        return (f"{spec!r} is a PyTorch file, whose model cannot be trained here: build the "
                f"{role} in Keras (a .keras file, an architecture or {APPLICATIONS}NAME)")  # fmt: skip
    # The default exporter's own arguments (dynamo, PyTorch 2.9): it warns against
    # dynamic_axes, and without external_data=False writes the weights to teacher.onnx.data.
    return (f"{spec!r} is a PyTorch file, which TensorFlow cannot run: export the teacher to "
            f"ONNX ({TORCH_EXPORT}) and give --teacher_path=teacher.onnx")  # fmt: skip


def check(spec, role: str = "model") -> str | None:
    """What is wrong with ``spec``, one sentence, or None; cheap (no model is built or read)."""
    if spec in names():
        return None
    if problem := pytorch_file_problem(spec, role):
        return problem
    if is_keras_file(spec):
        if os.path.isfile(os.path.expanduser(spec)):
            return None
        return f"the {role} file {spec!r} does not exist"
    if isinstance(spec, str) and spec.startswith(APPLICATIONS):
        return _application_problem(spec.removeprefix(APPLICATIONS))
    kind = foreign_kind(spec)
    if kind:  # functions that run but cannot be rebuilt or trained: a trained teacher's only use
        return (f"{spec!r} is {kind}, a trained teacher: give it as --teacher_path"
                if role == "teacher" else
                f"{spec!r} is {kind}, whose functions cannot be re-created and trained as a "
                f"{role}: give a .keras file or an architecture")  # fmt: skip
    return (
        f"unknown {role} {spec!r}: give a registered architecture ({', '.join(names())}), a "
        f"path to a .keras file, or {APPLICATIONS}NAME (a Keras model constructor)"
    )


def foreign_kind(spec) -> str | None:
    """"a TensorFlow SavedModel" or "an ONNX model" when ``spec`` names one (a teacher run as a
    function: :mod:`~fitnets_tf.models.saved_model`, :mod:`~fitnets_tf.models.onnx_model`)."""
    if isinstance(spec, str) and saved_model.is_saved_model(spec):
        return "a TensorFlow SavedModel"
    return "an ONNX model" if onnx_model.is_onnx_file(spec) else None


def _application_problem(name: str) -> str | None:
    constructor = getattr(keras.applications, name, None)
    if constructor is not None and _is_constructor(constructor):
        return None
    known = [n for n in dir(keras.applications) if _is_constructor(getattr(keras.applications, n))]
    return f"{APPLICATIONS}{name} is not a Keras model constructor (valid: {', '.join(known)})"


def _is_constructor(obj) -> bool:
    if inspect.ismodule(obj) or not callable(obj):
        return False
    try:
        return {"classes", "weights", "input_shape"} <= set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return False


def resolve(
    spec: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    seed: int | None = None,
    *,
    keep_weights: bool = False,
    role: str = "model",
    **build_kwargs,
) -> keras.Model:
    """The model ``spec`` names, for images of ``input_shape`` and ``num_classes`` logits.

    Args:
        spec: a registered name, a ``.keras`` path or ``keras.applications.NAME`` (see the
            module docstring).
        input_shape, num_classes: the dataset's.
        seed: decides the initial weights (a registered net's initializers; Keras' global
            seed, ``keras.utils.set_random_seed``, before the layers of a file or an
            application are created).
        keep_weights: a ``.keras`` file's weights are used as saved (a trained teacher)
            instead of re-initialised (a student's architecture).
        role: how messages name the model ("teacher", "student").
        **build_kwargs: :func:`fitnets_tf.models.build`'s options (``kernel_initializer``,
            ``max_norm``, ``dropout``, ``input_dropout``), for registered architectures only;
            but ``maxout_ties`` sets a re-initialised file's maxout layers too.

    Raises:
        ConfigError: ``spec`` is invalid (see :func:`check`), or the model does not take the
            dataset's images or give its classes.
        ModelFileError: the ``.keras`` file cannot be loaded safely.
    """
    problem = check(spec, role)
    if problem:
        raise ConfigError(f"Invalid {role}: {problem}.")
    if spec in names():
        return build(spec, input_shape, num_classes, seed=seed, **build_kwargs)
    if is_keras_file(spec):
        # Flattened first, so that a nested model's BatchNormalization is re-created fused too.
        # A subclassed model's layers become a graph, which hints and the re-creation need.
        model = flattened(as_graph(io.load_model(spec, role, ModelFileError), input_shape, role))
        ties = build_kwargs.get("maxout_ties")
        model = model if keep_weights else reinitialised(model, seed, maxout_ties=ties, role=role)
    else:
        model = reinitialised(_application(spec, input_shape, num_classes), seed, renumber=True,
                              role=role)  # fmt: skip
    return for_dataset(model, input_shape, num_classes, role, spec)


def _application(spec: str, input_shape, num_classes: int) -> keras.Model:
    constructor = getattr(keras.applications, spec.removeprefix(APPLICATIONS))
    kwargs = dict(input_shape=tuple(input_shape), classes=num_classes, weights=None)
    accepted = inspect.signature(constructor).parameters
    kwargs.update({k: v for k, v in (("classifier_activation", None),
                                     ("include_preprocessing", False)) if k in accepted})  # fmt: skip
    try:
        with _channels_last():
            return constructor(**kwargs)
    except (ValueError, TypeError) as e:  # e.g. "Input size must be at least 32x32"
        raise ConfigError(
            f"{spec} cannot be built for images of shape {tuple(input_shape)} and "
            f"{num_classes} classes: {e}"
        ) from e


@contextlib.contextmanager
def _channels_last():
    """Keras' image data format set to channels last within: an application follows the
    global one, which ``~/.keras/keras.json`` may set to channels first, and would read the
    dataset's ``(H, W, C)`` images as ``H`` channels of ``W × C`` (MobileNetV3Small refused
    ``(32, 32, 3)`` as smaller than 32x32). The layers keep it in their configs: their copies
    (:func:`reinitialised`) are channels last too."""
    given = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_last")
    try:
        yield
    finally:
        keras.config.set_image_data_format(given)


def reinitialised(model: keras.Model, seed: int | None = None, *, renumber: bool = False,
                  maxout_ties: str | None = None, role: str = "model") -> keras.Model:  # fmt: skip
    """``model``'s architecture with fresh initial weights (``keras.models.clone_model``).

    Keras' global seed is set to ``seed`` first, and the seeds of the layers' initializers are
    dropped, so that ``seed`` alone decides the weights. The state of its adapted
    preprocessing layers (an adapted ``Normalization``'s mean and variance:
    :func:`~fitnets_tf.layer_state.is_adapted`), which no initializer draws, is copied from
    ``model``, and the run told so once per layer (naming ``role``). Keras' BatchNormalization
    layers are re-created as :class:`~fitnets_tf.batch_norm.FusedBatchNormalization` (the
    same layer, trained by TensorFlow's fused kernel). The layers keep their names; with
    ``renumber``, auto-generated ones are renumbered within the model (see the module
    docstring) and the input is named ``input``, as the registered nets' is. ``maxout_ties``
    (:data:`fitnets_tf.maxout.TIES`) replaces the gradient rule of its maxout layers.
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    names = _stable_names(model) if renumber else {}

    def clone(layer):
        config = _unseeded(layer.get_config())
        config["name"] = names.get(layer.name, layer.name)
        if maxout_ties and isinstance(layer, MAXOUT_LAYERS):
            config["ties"] = maxout_ties
        return batch_norm.fused_class(layer).from_config(config)

    inputs = _new_input(model, tuple(model.inputs[0].shape[1:]), "input" if renumber else None)
    fresh = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    for layer in filter(is_adapted, model.layers):
        if copy_adapted_state(layer, fresh.get_layer(names.get(layer.name, layer.name))):
            what = ", ".join(weight.name for weight in layer.weights)
            note(f"The {role} {model.name!r} keeps the state its layer {layer.name!r} "
                 f"({type(layer).__name__}) was adapted to{f' ({what})' if what else ''}: no "
                 "initializer draws it. Its other weights are drawn from the run's seed.")  # fmt: skip
    return fresh


def _new_input(model: keras.Model, shape: tuple, name: str | None = None):
    """A new input of ``shape`` for ``keras.models.clone_model(model, input_tensors=...)``,
    named ``name`` or as ``model``'s input layer."""
    given = [layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)]
    name = name or (given[0] if given else None)
    tensor = keras.Input(shape, dtype=model.inputs[0].dtype, name=name)
    # clone_model wants it in the model's own structure (`keras.Model([x], y)`: a list); a
    # Sequential model not called since loading has no `input`, and takes the tensor.
    with contextlib.suppress(AttributeError, ValueError):
        return keras.tree.map_structure(lambda _: tensor, model.input)
    return tensor


def at_input_shape(model: keras.Model, input_shape) -> keras.Model:
    """``model`` built for the images ``input_shape`` where its input leaves a size open
    (``keras.Input((None, None, 3))``): the same layers and weights (a copy), with every
    feature map's size known, as the hint regressor's kernel (``N_g - N_h + 1``) needs.
    ``model`` itself when its input's shape is fixed."""
    shape = tuple(model.inputs[0].shape[1:])
    if None not in shape or len(shape) != len(input_shape):
        return model
    fixed = tuple(d if s is None else s for s, d in zip(shape, input_shape, strict=True))
    built = keras.models.clone_model(model, input_tensors=_new_input(model, fixed))
    set_weights(built, model.get_weights())
    return built


def _stable_names(model: keras.Model) -> dict[str, str]:
    """``{auto-generated name: the name a fresh process would give}`` for ``model``'s layers."""
    counts: collections.Counter = collections.Counter()
    renamed = {}
    for layer in model.layers:
        base = _snake_case(type(layer).__name__)
        if re.fullmatch(rf"{base}(_\d+)?", layer.name):
            renamed[layer.name] = base if counts[base] == 0 else f"{base}_{counts[base]}"
            counts[base] += 1
    return renamed


def _snake_case(name: str) -> str:
    # Keras' rule for default layer names (ReLU -> re_lu, Conv2D -> conv2d).
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _unseeded(config: dict) -> dict:
    """A layer's config with the seeds of its initializers removed."""
    out = dict(config)
    for key, value in config.items():
        inner = value.get("config") if isinstance(value, dict) else None
        if key.endswith("_initializer") and isinstance(inner, dict) and "seed" in inner:
            out[key] = {**value, "config": {**inner, "seed": None}}
    return out


def for_dataset(
    model: keras.Model, input_shape, num_classes: int, role: str = "model", spec: str = ""
) -> keras.Model:
    """``model`` outputting logits (a final softmax removed), checked against the dataset,
    built for its images where the model's input leaves their size open
    (:func:`at_input_shape`), and with its nested models' layers at the top level; a
    subclassed model as the graph of its layers (:func:`~fitnets_tf.models.traced.as_graph`).

    Raises:
        ConfigError: not one Functional input and output, not ``(batch, classes)`` logits
            of 2 classes or more (:func:`~fitnets_tf.models.logits.check_class_logits`), or
            not ``num_classes``;
            the message names ``role`` and ``spec``.
        DataError: the model does not take ``input_shape`` images (the message says how to
            resize them).
    """
    what = f"The {role} {spec or model.name!r}"
    model = as_graph(model, input_shape, role)  # a teacher file's (a student's is already)
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(f"{what} must be a Functional keras.Model with one input and one "
                          "output (images in, logits out).")  # fmt: skip
    from fitnets_tf.data import check_input_shape  # data imports models: import when used

    check_input_shape(inputs[0].shape, input_shape, role)
    # Before the dataset's classes: a binary classifier's one output needs its own advice.
    check_class_logits(tuple(outputs[0].shape), role, spec or model.name)
    if outputs[0].shape[-1] != num_classes:
        raise ConfigError(
            f"{what} gives {outputs[0].shape[-1]} outputs, but the dataset has {num_classes} "
            f"classes. Give a {role} built for this dataset."
        )
    model = flattened(at_input_shape(model, input_shape))
    inputs, outputs = model.inputs, model.outputs
    if _nested(model):  # one tensor in and out, however it was built (`keras.Model([x], [y])`)
        model = keras.Model(inputs[0], outputs[0], name=model.name)
    logits = without_softmax(model)
    if logits is not model:
        softmax_note(role, model)
    return logits


def _nested(model: keras.Model) -> bool:
    try:
        ends = model.input, model.output
    except (AttributeError, ValueError):  # a Sequential model not called since loading
        return False
    return any(isinstance(end, (list, tuple, dict)) for end in ends)
