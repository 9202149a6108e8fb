"""Input preprocessing: the paper's global contrast normalisation (GCN) and ZCA whitening,
and torchvision's ``Normalize(mean, std)`` for teachers trained behind it.

The FitNets code (pylearn2) preprocessed CIFAR with ``GlobalContrastNormalization(scale=55.)``
followed by ``ZCA(filter_bias=0.1)`` fitted on the training set. Both steps live here twice:

* as numpy functions (:func:`global_contrast_normalize`, :func:`fit_zca`) used once, to fit the
  whitening constants on the training split, and
* as the :class:`Preprocessor` Keras layer, which holds the fitted constants as weights. The
  tf.data pipelines of :mod:`fitnets_tf.data` apply this very layer, and an exported model can
  put it in front of the network so a client sends raw pixels.

Convention used across the project: the network's input is float32 NHWC, already preprocessed;
the :class:`Preprocessor`'s input is raw pixels in ``[0, 255]`` (uint8 or float).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fitnets_tf.errors import ConfigError
from fitnets_tf.standardize import as_values, standardize_problems

_PACKAGE = "fitnets_tf"

#: Preprocessing modes understood by :class:`Preprocessor`.
MODES = ("none", "scale", "gcn", "gcn_zca", "standardize")


def global_contrast_normalize(
    images: np.ndarray, scale: float = 55.0, min_divisor: float = 1e-8
) -> np.ndarray:
    """GCN as pylearn2's ``global_contrast_normalize(X, scale, use_std=False)``.

    Per image: subtract its mean over all pixels and channels, then divide by
    ``||x - mean||_2 / scale``; a divisor below ``min_divisor`` (a constant image) is replaced
    by 1 so the image stays at zero instead of blowing up.

    Args:
        images: array of shape ``(N, ...)``; any range (GCN is scale invariant).
        scale: target L2 norm of each image (55 in the paper's code).
        min_divisor: threshold under which the divisor is replaced by 1.

    Returns:
        float32 array of shape ``(N, D)`` with ``D`` the product of the trailing dimensions.
    """
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    divisor = np.linalg.norm(x, axis=1, keepdims=True) / scale
    divisor[divisor < min_divisor] = 1.0
    return (x / divisor).astype(np.float32)


def fit_zca(x: np.ndarray, filter_bias: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Fits ZCA whitening as pylearn2's ``ZCA(filter_bias)``.

    ``mean = E[x]``; ``C = (x - mean)^T (x - mean) / N + filter_bias * I``;
    ``W = V diag(1 / sqrt(eigvals)) V^T`` from ``eigh(C)``; whitened ``(x - mean) @ W``.
    ``filter_bias`` regularises the small eigenvalues; with 0 the whitened training data has
    identity covariance.

    Args:
        x: array ``(N, D)`` (flattened, typically already GCN-normalised).
        filter_bias: added to the covariance diagonal (0.1 in the paper's code).

    Returns:
        ``(mean, whitening)``: float32 arrays of shapes ``(D,)`` and ``(D, D)``.
    """
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    centered = x - mean.astype(np.float32)
    # The N x D x D product dominates (40K x 3072 for CIFAR): float32 BLAS is fast and accurate
    # enough there; the eigendecomposition is done in float64.
    covariance = (centered.T @ centered).astype(np.float64) / len(x)
    covariance += filter_bias * np.eye(x.shape[1])
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    whitening = (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
    return mean.astype(np.float32), whitening.astype(np.float32)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Preprocessor(keras.layers.Layer):
    """Raw pixels in ``[0, 255]`` to the network's float32 input.

    Modes:
        * ``"none"``: cast to float32 only.
        * ``"scale"``: ``x / 255``, in ``[0, 1]`` (used for MNIST-like data).
        * ``"gcn"``: global contrast normalisation per image (no fitted constants).
        * ``"gcn_zca"``: GCN, then ``(x - zca_mean) @ zca_whitening`` over the flattened image:
          the paper's CIFAR preprocessing. The two non-trainable weights hold the constants
          fitted on the training split (:meth:`adapt` or :meth:`set_zca`); they are saved with
          the layer, so an exported model reproduces the pipeline exactly.
        * ``"standardize"``: ``(x / 255 - mean) / std`` per channel, torchvision's
          ``ToTensor()`` then ``Normalize(mean, std)``: the inputs of a PyTorch model exported
          without that step. ``mean`` and ``std`` are given, in the [0, 1] scale torchvision
          writes them, and held in the layer's config.

    Input: ``(batch, H, W, C)`` uint8 or float in ``[0, 255]``. Output: float32, same shape.
    The layer always computes in float32 (whitening in float16 would lose the small
    eigen-directions), whatever the global dtype policy.

    Args:
        mode: one of ``"none"``, ``"scale"``, ``"gcn"``, ``"gcn_zca"``, ``"standardize"``.
        gcn_scale: target L2 norm per image for GCN (55 in the paper's code).
        filter_bias: ZCA regulariser used by :meth:`adapt` (0.1 in the paper's code).
        min_divisor: GCN divisors below this are replaced by 1 (pylearn2's default 1e-8).
        mean: ``"standardize"`` only: ``Normalize``'s mean, one value or one per channel, in
            [0, 1] (ImageNet's: 0.485, 0.456, 0.406).
        std: ``"standardize"`` only: ``Normalize``'s std, positive, one value or one per
            channel (ImageNet's: 0.229, 0.224, 0.225).
    """

    def __init__(
        self,
        mode: str = "scale",
        gcn_scale: float = 55.0,
        filter_bias: float = 0.1,
        min_divisor: float = 1e-8,
        mean: float | tuple[float, ...] | None = None,
        std: float | tuple[float, ...] | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
        for arg, value in (("gcn_scale", gcn_scale), ("min_divisor", min_divisor)):
            if not value > 0:
                raise ValueError(f"`{arg}` must be positive. Received: {arg}={value!r}")
        if not filter_bias >= 0:
            raise ValueError(f"`filter_bias` must be >= 0. Received: filter_bias={filter_bias!r}")
        self.mode = mode
        self.mean, self.std = as_values(mean), as_values(std)
        self._check_standardize()
        self.gcn_scale = float(gcn_scale)
        self.filter_bias = float(filter_bias)
        self.min_divisor = float(min_divisor)
        self.zca_mean = None
        self.zca_whitening = None

    def _check_standardize(self, channels: int | None = None) -> None:
        if problems := standardize_problems(self.mode, self.mean, self.std, channels):
            raise ValueError(f"{'; '.join(problems)}. Received: mode={self.mode!r}, "
                             f"mean={self.mean}, std={self.std}")  # fmt: skip

    def build(self, input_shape):
        if self.mode == "standardize" and input_shape[-1] is not None:
            self._check_standardize(channels=int(input_shape[-1]))
        if self.mode == "gcn_zca":
            if any(d is None for d in input_shape[1:]):
                raise ValueError(
                    f"`gcn_zca` needs a fully known image shape. Received: input_shape={input_shape}"
                )
            dim = int(np.prod(input_shape[1:]))
            self.zca_mean = self.add_weight(
                shape=(dim,), initializer="zeros", trainable=False, name="zca_mean"
            )
            self.zca_whitening = self.add_weight(
                shape=(dim, dim), initializer="identity", trainable=False, name="zca_whitening"
            )

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "none":
            return x
        if self.mode == "scale":
            return x / 255.0
        if self.mode == "standardize":
            # In torchvision's order (ToTensor's / 255, then Normalize), so that the teacher
            # gets PyTorch's numbers to float32 rounding.
            mean, std = (np.asarray(v, "float32") for v in (self.mean, self.std))
            return (x / 255.0 - mean) / std
        shape = ops.shape(x)
        flat = ops.reshape(x, (shape[0], -1))
        flat = flat - ops.mean(flat, axis=1, keepdims=True)
        divisor = ops.sqrt(ops.sum(ops.square(flat), axis=1, keepdims=True)) / self.gcn_scale
        flat = flat / ops.where(divisor < self.min_divisor, ops.ones_like(divisor), divisor)
        if self.mode == "gcn_zca":
            flat = ops.matmul(flat - self.zca_mean, self.zca_whitening)
        return ops.reshape(flat, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def set_zca(self, mean: np.ndarray, whitening: np.ndarray) -> None:
        """Sets fitted ZCA constants (e.g. read from the on-disk cache); builds if needed."""
        if self.mode != "gcn_zca":
            raise ValueError(f"`set_zca` needs mode='gcn_zca'. Received: mode={self.mode!r}")
        mean = np.asarray(mean, np.float32)
        if not self.built:
            self.build((None, mean.shape[0]))
        self.zca_mean.assign(mean)
        self.zca_whitening.assign(np.asarray(whitening, np.float32))

    def adapt(self, images: np.ndarray) -> None:
        """Fits the ZCA constants on raw training images ``(N, H, W, C)`` in ``[0, 255]``.

        A no-op for modes without fitted constants.
        """
        if self.mode != "gcn_zca":
            return
        images = np.asarray(images)
        if not self.built:
            self.build((None, *images.shape[1:]))
        gcn = global_contrast_normalize(images, self.gcn_scale, self.min_divisor)
        self.set_zca(*fit_zca(gcn, self.filter_bias))

    def get_config(self):
        config = super().get_config()
        config.update(
            mode=self.mode,
            gcn_scale=self.gcn_scale,
            filter_bias=self.filter_bias,
            min_divisor=self.min_divisor,
            mean=None if self.mean is None else list(self.mean),
            std=None if self.std is None else list(self.std),
        )
        return config


# The Rescaling scales of a model that takes raw pixels in [0, 255] itself: to [0, 1] (1/255)
# or to [-1, 1] (1/127.5, with an offset of -1, as MobileNet's preprocessing does).
_RAW_PIXEL_SCALES = (1 / 255, 1 / 127.5)
_FED = {"scale": "pixels / 255", "gcn": "contrast-normalised pixels",
        "gcn_zca": "contrast-normalised, whitened pixels",
        "standardize": "pixels standardized as (pixels / 255 - mean) / std"}  # fmt: skip


def raw_pixel_rescaling(model: keras.Model) -> keras.layers.Rescaling | None:
    """The ``Rescaling`` layer by which ``model`` takes raw pixels in [0, 255], when one comes
    before any layer with weights (a ``Resizing`` or augmentation layer may come first); None
    otherwise."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Rescaling):
            scale = np.asarray(keras.ops.convert_to_numpy(layer.scale), "float64").reshape(-1)
            if scale.size and all(np.any(np.isclose(s, _RAW_PIXEL_SCALES, rtol=1e-3))
                                  for s in scale):  # fmt: skip
                return layer
        elif layer.weights:
            return None
    return None


# Keras' layers that only move, crop, reshape or resize pixels: what comes after them sees
# the model's input values (interpolated ones within their range, or about: bicubic's
# overshoot at edges).
_GEOMETRIC = (keras.layers.InputLayer, keras.layers.Resizing, keras.layers.CenterCrop,
              keras.layers.RandomCrop, keras.layers.RandomFlip, keras.layers.RandomRotation,
              keras.layers.RandomTranslation, keras.layers.RandomZoom, keras.layers.Flatten,
              keras.layers.Reshape, keras.layers.Permute)  # fmt: skip
# The largest mean of the images each mode feeds, with room for rounding and that overshoot:
# raw pixels' is tens (MNIST's 33, CIFAR-10's 120 to 126). Pixels / 255: at most 1.
# Standardized, (x - mean) / std of x in [0, 1]: at most (1 - mean) / std, under 10 for any
# std over 0.1 (ImageNet's constants: 2.64; Fashion-MNIST's: 2.02).
_SCALED_MEAN_BOUND = {"scale": 1.01, "standardize": 10.0}
_BOUND_WORDS = {"scale": "images in [0, 1] have a mean of at most 1",
                "standardize": "standardized images have a mean of a few units at most"}


def raw_pixel_normalization(model: keras.Model, mode: str = "scale"
                            ) -> keras.layers.Normalization | None:  # fmt: skip
    """The ``Normalization`` layer by which ``model`` normalises its input with statistics of
    raw pixels in [0, 255], when it is the first layer to change the input's values
    (:func:`_first_changing`: only resizing, cropping, reshaping, flips, rotations,
    translations or zooms before it, a nested backbone's first layers too); None otherwise.

    Its mean, adapted or given, tells: above 1, it is not the mean of images in [0, 1], whose
    every mean (per channel, per pixel, overall) is at most 1 (``mode`` ``"scale"``); above 10,
    not that of standardized images (``"standardize"``). After a layer that changes the
    values (a ``Rescaling`` to [-1, 1]) the input's range is not known, and it is not judged.
    """
    layer = _first_changing(model)
    if isinstance(layer, keras.layers.Normalization) and not layer.invert:
        return layer if _largest_mean(layer) > _SCALED_MEAN_BOUND[mode] else None
    return None


def _largest_mean(layer: keras.layers.Normalization) -> float:
    # What it subtracts: its adapted mean (weights), or the mean given as an argument.
    mean = layer.adapt_mean if layer.input_mean is None else layer.input_mean
    return float(np.max(keras.ops.convert_to_numpy(mean)))


def check_own_rescaling(model: keras.Model, mode: str, role: str, name: str = "") -> str | None:
    """Refuses a model that rescales raw pixels itself, fed by a ``mode`` that already has;
    returns a warning to print for one fed raw pixels (``"none"``) that does not
    (:func:`unscaled_input`), else None.

    A student file with a first ``Rescaling(1/255)``, trained with the default preprocessing
    (pixels / 255), would see pixels / 65025, all but black images, and train on them without
    an error: unlike a trained teacher, whose accuracy tells, an untrained student cannot be
    checked by what it scores. So would one whose first ``Normalization`` holds raw pixels'
    statistics (:func:`raw_pixel_normalization`): ``(x - 120) / 64`` of ``x`` in [0, 1] is all
    but constant. That is judged under ``"scale"`` and ``"standardize"``: contrast-normalised
    images (``gcn``, ``gcn_zca``) have no range that statistics of raw pixels fall out of,
    whatever the image size and the layer's axes.

    Raises:
        ConfigError: ``mode`` is not ``"none"`` and ``model`` has such a ``Rescaling``, or
            ``mode`` is ``"scale"`` or ``"standardize"`` and it has such a ``Normalization``;
            the message names
            ``--preprocessing=none`` and the other fix.
    """
    if mode in _SCALED_MEAN_BOUND:
        _check_own_normalization(model, mode, role, name)
    if mode == "none":
        return unscaled_input(model, role, name)
    if (layer := raw_pixel_rescaling(model)) is None:
        return None
    scale = float(np.asarray(keras.ops.convert_to_numpy(layer.scale)).reshape(-1)[0])
    raise ConfigError(
        f"The {role} {name or model.name!r} rescales its own input (its layer {layer.name!r} "
        f"multiplies by {scale:.6g}), as a model that takes raw pixels in [0, 255] does, but "
        f"this run feeds it {_FED.get(mode, mode)} (--preprocessing={mode}, given or the "
        "dataset's default): it would see them scaled twice, all but black images, and train "
        "on them without an error. Run with --preprocessing=none (raw pixels to both models: "
        f"then the teacher must take raw pixels too, as its accuracy check tells), or remove "
        f"the {role}'s Rescaling layer."
    )


def unscaled_input(model: keras.Model, role: str, name: str = "") -> str | None:
    """A warning when ``model``, fed raw pixels in [0, 255], takes them into a layer with
    weights before any layer that changes their values (a ``Rescaling``, a ``Normalization``, a
    ``BatchNormalization``...); None otherwise. Such a model trains on inputs 255 times those
    of pixels / 255: the teacher check's advice for a teacher that rescales its own inputs,
    ``--preprocessing=none``, needs the student to rescale too."""
    layer = _first_changing(model)
    normalising = (keras.layers.Normalization, keras.layers.BatchNormalization)
    if layer is None or not layer.weights or isinstance(layer, normalising):
        return None  # it changes the values first (a Rescaling), or has no weights at all
    return (f"warning: the {role} {name or model.name!r} takes raw pixels in [0, 255] "
            f"(--preprocessing=none) straight into its layer {layer.name!r}: give it a first "
            "Rescaling(1/255) layer (the teacher's, if the teacher has one), or it trains on "
            "inputs 255 times larger than pixels / 255.")  # fmt: skip


def _first_changing(model: keras.Model):
    """The first layer of ``model`` that is not geometric (:data:`_GEOMETRIC`), within a
    nested model too (a backbone that rescales its own input first)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return _first_changing(layer)
        if not isinstance(layer, _GEOMETRIC):
            return layer
    return None


def _check_own_normalization(model: keras.Model, mode: str, role: str, name: str) -> None:
    if (layer := raw_pixel_normalization(model, mode)) is None:
        return
    raise ConfigError(
        f"The {role} {name or model.name!r} normalises its own input with raw pixels' "
        f"statistics (its Normalization layer {layer.name!r} subtracts a mean of "
        f"{_largest_mean(layer):.4g}; {_BOUND_WORDS[mode]}), but this run "
        f"feeds it {_FED[mode]} (--preprocessing={mode}, given or the dataset's default): it "
        "would normalise them to all but constant images, and train on them without an error. "
        "Run with --preprocessing=none (raw pixels to both models: then the teacher must take "
        "raw pixels too, as its accuracy check tells), or adapt the "
        f"{role}'s layer on the images as this run feeds them "
        + ("(norm.adapt(images / 255))." if mode == "scale" else "(or drop it).")
    )
