"""Maxout layers (Goodfellow et al., 2013) and the ceil-mode pooling of the paper's nets.

Maxout grouping, used by both layers: the linear part produces ``units * pieces`` channels
and output unit ``j`` is the maximum of the contiguous group ``[j * pieces, (j + 1) * pieces)``.
This is the grouping of pylearn2's maxout layers, which the FitNets code used.

The maxout maths and the order the layers hold their columns in: :mod:`fitnets_tf.maxout`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from fitnets_tf.maxout import (  # noqa: F401
    TIES,
    check_ties,
    max_of_pieces,
    maxout,
    piece_major,
    unit_major,
)

_PACKAGE = "fitnets_tf"

# fitnets_tf's layers and nets take (N, H, W, C) maps. Keras gives a layer built without a
# data_format keras.config.image_data_format(), which a notebook may have set to channels_first
# for models of its own: every conv and pooling this library builds says which it is.
DATA_FORMAT = "channels_last"


def _check_positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return value


def _check_max_norm(value) -> float | None:
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(
            f"`max_norm` must be None or a positive number. Received: max_norm={value!r}"
        )
    return None if value is None else float(value)


def kernel_max_norm(value: float | None, conv: bool) -> keras.constraints.MaxNorm | None:
    """The max-norm constraint the paper's code (pylearn2) puts on a kernel, or None.

    pylearn2's ``max_kernel_norm`` bounds each output channel's convolution kernel, its rows,
    columns and input channels together (axes 0, 1, 2 of a Keras ``(rows, cols, in, out)``
    kernel); ``max_col_norm`` each output's column of a dense kernel (axis 0). Keras' MaxNorm
    rescales as pylearn2 does after every update: ``w · clip(‖w‖, 0, value) / (ε + ‖w‖)``.
    """
    if value is None:
        return None
    return keras.constraints.MaxNorm(value, axis=[0, 1, 2] if conv else 0)


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"`{name}` must be an int or a pair of ints. Received: {name}={value!r}")
    for v in value:
        _check_positive_int(name, v)
    return value


def _weight_options_config(layer) -> dict:
    """The serialised initializers and regularizer that both maxout layers take, as Dense does."""
    return dict(
        kernel_initializer=keras.initializers.serialize(layer.kernel_initializer),
        bias_initializer=keras.initializers.serialize(layer.bias_initializer),
        kernel_regularizer=keras.regularizers.serialize(layer.kernel_regularizer),
    )


class _PieceMajorInitializer:
    """Draws the weights as ``initializer`` would in the grouping's (unit-major) order, then
    reorders them: a seeded layer computes the same function whatever the order it holds."""

    def __init__(self, initializer, units: int, pieces: int):
        self.initializer, self.units, self.pieces = initializer, units, pieces

    def __call__(self, shape, dtype=None):
        return piece_major(self.initializer(shape, dtype=dtype), self.units, self.pieces)


class _Maxout(keras.layers.Layer):
    """What both maxout layers share: piece-major weights in memory, unit-major in files."""

    def _maxout_units(self) -> int:
        raise NotImplementedError

    def _add_maxout_weights(self, kernel_shape, constraint):
        units, pieces = self._maxout_units(), self.pieces
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*kernel_shape, units * pieces),
            initializer=_PieceMajorInitializer(self.kernel_initializer, units, pieces),
            regularizer=self.kernel_regularizer,
            constraint=constraint,
        )
        self.bias = self.add_weight(
            name="bias",
            shape=(units * pieces,),
            initializer=_PieceMajorInitializer(self.bias_initializer, units, pieces),
        )

    def save_own_variables(self, store):
        for i, variable in enumerate((self.kernel, self.bias)):
            store[str(i)] = ops.convert_to_numpy(
                unit_major(variable, self._maxout_units(), self.pieces)
            )

    def load_own_variables(self, store):
        super().load_own_variables(store)  # checks the count and shapes, assigns unit-major
        for variable in (self.kernel, self.bias):
            variable.assign(piece_major(variable, self._maxout_units(), self.pieces))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaxoutConv2D(_Maxout):
    """2-D convolution followed by maxout over ``pieces`` channels per output filter.

    ``output[..., j] = max_k conv(x, W)[..., j * pieces + k]`` for ``k < pieces``: ``W`` as
    files hold it; the ``kernel`` and ``bias`` variables hold its columns piece-major.

    Args:
        filters: number of output channels (after the max).
        kernel_size: int or pair.
        pieces: linear pieces per output channel (the paper uses 2 for conv layers).
        strides: int or pair.
        padding: ``"valid"``, ``"same"`` or a non-negative int: explicit zero padding on every
            side, as pylearn2's ``pad`` (the paper's teacher pads 4, 3, 3 with 8, 8, 5 kernels).
        max_norm: if set, each of the ``filters * pieces`` kernels is constrained to this L2
            norm after every update (the paper's code uses 0.9 for the students' convs).
        ties: the gradient at tied pieces, ``"share"`` or ``"one"``
            (:data:`fitnets_tf.maxout.TIES`; ``"one"`` trains faster on CPU).
        kernel_initializer, bias_initializer, kernel_regularizer: as in ``keras.layers.Conv2D``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        pieces: int = 2,
        strides=1,
        padding="valid",
        max_norm: float | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        ties: str = TIES[0],
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ties = check_ties(ties)
        self.filters = _check_positive_int("filters", filters)
        self.pieces = _check_positive_int("pieces", pieces)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        if isinstance(padding, str):
            padding = padding.lower()
            if padding not in ("valid", "same"):
                raise ValueError(
                    "`padding` must be 'valid', 'same' or a non-negative int. "
                    f"Received: padding={padding!r}"
                )
        elif not isinstance(padding, int) or padding < 0:
            raise ValueError(
                f"`padding` must be 'valid', 'same' or a non-negative int. Received: padding={padding!r}"
            )
        self.padding = padding
        self.max_norm = _check_max_norm(max_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"{self.name}: the channel axis of the input must be known. Received: {input_shape}"
            )
        constraint = kernel_max_norm(self.max_norm, conv=True)
        self._add_maxout_weights((*self.kernel_size, in_channels), constraint)

    def _maxout_units(self) -> int:
        return self.filters

    def _explicit_padding(self) -> int:
        return self.padding if isinstance(self.padding, int) else 0

    def call(self, inputs):
        pad = self._explicit_padding()
        if pad:
            inputs = ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        mode = "same" if self.padding == "same" else "valid"
        z = ops.conv(inputs, self.kernel, strides=self.strides, padding=mode,
                     data_format=DATA_FORMAT)
        return max_of_pieces(ops.add(z, self.bias), self.pieces, self.ties)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        pad = self._explicit_padding()
        spatial = []
        for size, k, s in zip((height, width), self.kernel_size, self.strides, strict=True):
            if size is None:
                spatial.append(None)
            elif self.padding == "same":
                spatial.append(math.ceil(size / s))
            else:
                spatial.append((size + 2 * pad - k) // s + 1)
        return (batch, *spatial, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            pieces=self.pieces,
            strides=self.strides,
            padding=self.padding,
            max_norm=self.max_norm,
            ties=self.ties,
            **_weight_options_config(self),
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaxoutDense(_Maxout):
    """Fully connected layer followed by maxout over ``pieces`` linear units per output.

    ``output[:, j] = max_k (x @ W + b)[:, j * pieces + k]`` for ``k < pieces``: ``W`` and
    ``b`` as files hold them; the ``kernel`` and ``bias`` variables hold their columns
    piece-major.

    Args:
        units: number of outputs (after the max).
        pieces: linear pieces per output (the paper's FC layers use 5).
        max_norm: if set, each of the ``units * pieces`` weight columns is constrained to this
            L2 norm (the paper's code uses 1.9 for FC columns).
        ties: as :class:`MaxoutConv2D`'s.
        kernel_initializer, bias_initializer, kernel_regularizer: as in ``keras.layers.Dense``.
    """

    def __init__(
        self,
        units: int,
        pieces: int = 5,
        max_norm: float | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        ties: str = TIES[0],
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ties = check_ties(ties)
        self.units = _check_positive_int("units", units)
        self.pieces = _check_positive_int("pieces", pieces)
        self.max_norm = _check_max_norm(max_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=2)

    def build(self, input_shape):
        self._add_maxout_weights((input_shape[-1],), kernel_max_norm(self.max_norm, conv=False))

    def call(self, inputs):
        z = ops.add(ops.matmul(inputs, self.kernel), self.bias)
        return max_of_pieces(z, self.pieces, self.ties)

    def _maxout_units(self) -> int:
        return self.units

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            pieces=self.pieces,
            max_norm=self.max_norm,
            ties=self.ties,
            **_weight_options_config(self),
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CeilMaxPooling2D(keras.layers.Layer):
    """Max pooling whose output size rounds up: ``ceil((n - pool) / stride) + 1``.

    cuda-convnet, which the paper's maxout teachers were trained with, pools this way: the
    last window may hang over the edge and covers only the pixels that exist. Keras' "valid"
    pooling rounds down, which shrinks the teacher's maps (and its multiplication count by
    about 14%). The overhang is padded with the dtype's lowest value so it never wins the max.
    """

    def __init__(self, pool_size, strides=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair("pool_size", pool_size)
        self.strides = _pair("strides", strides if strides is not None else pool_size)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _overhang(self, size: int, pool: int, stride: int) -> int:
        out = self._out_size(size, pool, stride)
        return max((out - 1) * stride + pool - size, 0)

    @staticmethod
    def _out_size(size: int, pool: int, stride: int) -> int:
        return max(math.ceil((size - pool) / stride), 0) + 1

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        pad_h = self._overhang(height, self.pool_size[0], self.strides[0])
        pad_w = self._overhang(width, self.pool_size[1], self.strides[1])
        if pad_h or pad_w:
            dtype = keras.backend.standardize_dtype(inputs.dtype)
            lowest = -6.0e4 if dtype == "float16" else -3.0e38
            inputs = ops.pad(
                inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], constant_values=lowest
            )
        return ops.max_pool(inputs, self.pool_size, strides=self.strides, padding="valid",
                            data_format=DATA_FORMAT)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        sizes = [
            None if n is None else self._out_size(n, p, s)
            for n, p, s in zip((height, width), self.pool_size, self.strides, strict=True)
        ]
        return (batch, *sizes, channels)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides)
        return config
