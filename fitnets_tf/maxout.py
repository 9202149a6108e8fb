"""The maxout function over piece-major channels, and the two orders of a maxout's columns.

How it is computed (not what): the maxout layers (:mod:`fitnets_tf.layers`) hold their kernel's
and bias's columns in *piece-major* order (column ``k * units + j`` is piece ``k`` of unit
``j``), so that piece ``k`` of every unit is the ``k``-th contiguous block of the channels and
the forward pass is a max over the pieces axis of a free reshape to ``(..., pieces, units)``.
The reshape to ``(..., units, pieces)`` + ``reduce_max`` that the grouping suggests is 3-4x
slower on CPU once its gradient is counted (broadcasting compare/divide over a 5-D tensor), and
it was the largest single cost of a thin student's training step
(``bench/student_profile.py``). Holding the columns so, rather than reordering them at each
call, saves four transposes per layer and train step (kernel and bias, and their gradients
back). Files keep the grouping's own order: ``.keras`` and ``.weights.h5`` files hold the
columns unit-major (as pylearn2 did, and as every earlier version of this library wrote them);
the layers convert on saving and loading. ``get_weights``/``set_weights``, the variables
themselves and a run's ``tf.train.Checkpoint`` files are piece-major
(:mod:`fitnets_tf.run.contents` refuses to resume from a checkpoint written before); convert
with :func:`unit_major` and :func:`piece_major`. Keras' legacy ``.h5`` model files bypass the
layers' saving hooks and hold the variables as held: one written by an earlier version loads in
the wrong order (load it there and save it as ``.keras``).

The gradient at tied pieces is a choice (:data:`TIES`): ``"share"``, the default, is
``reduce_max``'s (a tie shares the gradient equally), hand-written and computed on the channel
blocks; ``"one"`` gives it all to one of the tied pieces, the rule of a max pool (and of
PyTorch's ``max`` over a dimension), and computes the maxout as a ``1 x pieces`` max pool of a
free reshape: one oneDNN pass forward and one back, where the blocks' gradient takes a split,
seven elementwise passes and a concat. Ties are rare once the biases differ, but at
initialisation every piece ties on an all-zero input patch (MNIST's background). Both rules
give a layer's outputs bitwise those of the reshape formulation; with ``"share"`` so is its
kernel's gradient (pinned in ``tests/test_layers.py``), and the bias's gradient and the
gradient passed to the layer below sum the same terms in another order, so they may differ in
the last bit.
"""

from __future__ import annotations

import contextlib
import contextvars

from keras import ops

_BLOCKWISE = contextvars.ContextVar("fitnets_tf_maxout_blockwise", default=False)
#: The gradient rules at tied pieces; the first is the default.
TIES = ("share", "one")


def check_ties(ties) -> str:
    if ties not in TIES:
        raise ValueError(f"`ties` must be one of {TIES}. Received: ties={ties!r}")
    return ties


@contextlib.contextmanager
def blockwise():
    """Within it, maxouts are *traced* as an elementwise maximum of their channel blocks.

    For graphs converted to ONNX, and for inference only (a maximum's gradient gives a tie to
    one piece). tf2onnx runs each NHWC convolution in NCHW between two Transposes, which its
    optimizer then moves through slices and elementwise ops but not through a reshape: the
    default formulation keeps two transposes of the whole activation per maxout, the blocks'
    maximum none. The same values, bit for bit.
    """
    token = _BLOCKWISE.set(True)
    try:
        yield
    finally:
        _BLOCKWISE.reset(token)


def maxout(z, units: int, pieces: int):
    """Max over contiguous groups of ``pieces`` channels in the last axis."""
    shape = ops.shape(z)
    grouped = ops.reshape(z, (*shape[:-1], units, pieces))
    return ops.max(grouped, axis=-1)


def _regroup(weights, outer: int, inner: int):
    """``weights``' last axis read as ``(outer, inner)`` and written as ``(inner, outer)``.

    A transpose rather than a gather, so that a gradient through it stays a dense tensor (a
    gather's is ``IndexedSlices``, which the optimizers would apply as a sparse update).
    """
    shape = ops.shape(weights)[:-1]
    grouped = ops.reshape(weights, (*shape, outer, inner))
    axes = list(range(len(shape))) + [len(shape) + 1, len(shape)]
    return ops.reshape(ops.transpose(grouped, axes), (*shape, outer * inner))


def piece_major(weights, units: int, pieces: int):
    """``weights``' last axis (``units * pieces`` columns, unit-major) in piece-major order.

    Column ``unit * pieces + k`` moves to ``k * units + unit``.
    """
    return _regroup(weights, units, pieces)


def unit_major(weights, units: int, pieces: int):
    """The inverse of :func:`piece_major`: column ``k * units + unit`` moves to
    ``unit * pieces + k``, the grouping's own order."""
    return _regroup(weights, pieces, units)


def _pieces_gradient(blocks, out, upstream):
    """``reduce_max``'s gradient over the blocks: upstream / (the number of maximal pieces)
    to each maximal piece, 0 to the others (ties share: 1/2 each of a two-way tie)."""
    if len(blocks) == 2:
        # The same numbers in 7 elementwise passes instead of 9 (no compares, no bool->float
        # casts): the weights 0, 1/2, 1 are exact, so each product is bitwise the general
        # case's. The thin students' layers are mostly two-piece.
        half_sign = ops.sign(blocks[0] - blocks[1]) * 0.5
        weights = (0.5 + half_sign, 0.5 - half_sign)
    else:
        hits = [ops.cast(ops.equal(block, out), upstream.dtype) for block in blocks]
        count = hits[0]
        for hit in hits[1:]:
            count = count + hit
        weights = [hit / count for hit in hits]
    return ops.concatenate([weight * upstream for weight in weights], axis=-1)


def max_of_pieces(z, pieces: int, ties: str = TIES[0]):
    """Maxout of a piece-major ``z``: the max over its ``pieces`` equal channel blocks.

    Equals ``maxout`` of the same channels in unit-major order; so does its gradient with
    ``ties="share"``, and with ``"one"`` wherever no two pieces tie.
    """
    if pieces == 1:
        return z
    units = z.shape[-1] // pieces
    if _BLOCKWISE.get():
        # Slices, not a split: tf2onnx moves its layout transposes through a Slice only.
        out = z[..., :units]
        for k in range(1, pieces):
            out = ops.maximum(out, z[..., k * units : (k + 1) * units])
        return out
    if ties == "one":
        return _pooled_pieces(z, pieces, units)
    shape = ops.shape(z)

    @ops.custom_gradient
    def max_over_blocks(z):
        # A free reshape to (..., pieces, units) and a max over the pieces axis: one pass over
        # z, where slicing the channels into blocks first copies all of it (2x slower here).
        out = ops.max(ops.reshape(z, (*shape[:-1], pieces, units)), axis=-2)

        def grad(*upstream, **_):
            return _pieces_gradient(ops.split(z, pieces, axis=-1), out, upstream[0])

        return out, grad

    return max_over_blocks(z)


def _pooled_pieces(z, pieces: int, units: int):
    """The max over the pieces as a ``1 x pieces`` max pool of a free reshape ``(N, H, W *
    pieces, units)``: row ``w * pieces + k`` is piece ``k`` at column ``w``."""
    shape = ops.shape(z)
    rows = (-1, 1) if len(z.shape) == 2 else (-1, shape[1])  # a dense layer's: one image row
    width = 1 if len(z.shape) == 2 else shape[2]
    grouped = ops.reshape(z, (*rows, width * pieces, units))
    # Channels last by construction (the reshape above), whatever Keras' global setting.
    out = ops.max_pool(grouped, (1, pieces), (1, pieces), padding="valid",
                       data_format="channels_last")
    return ops.reshape(out, (*shape[:-1], units))
