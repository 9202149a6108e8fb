"""bench/native_gradient.py: its C++ kernel computes the library's gradient, bit for bit.

Slow (compiles against TensorFlow's headers, ~15 s) and skipped without ``g++``. No timing is
asserted.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf

from bench import native_gradient

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++"),
]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return native_gradient.build(str(tmp_path_factory.mktemp("kernel")))


def test_every_dtype_and_piece_count_equals_the_library(kernel):
    found = native_gradient.same_as_library(native_gradient.native(kernel))
    assert len(found) == 12 and all(found.values()), found


def test_a_two_way_tie_shares_the_gradient(kernel):
    z = tf.constant([[1.0, 2.0, 1.0, 0.0]])  # unit 0 ties (1, 1); unit 1: piece 0 wins
    out = tf.constant([[1.0, 2.0]])
    gradient = kernel.fitnets_maxout_gradient(z, out, tf.constant([[4.0, 8.0]]), pieces=2)
    np.testing.assert_array_equal(gradient, [[2.0, 8.0, 2.0, 0.0]])


def test_a_three_way_tie_divides_by_three(kernel):
    z = tf.constant([[5.0, 5.0, 5.0]])  # one unit, three pieces, all tied
    gradient = kernel.fitnets_maxout_gradient(z, tf.constant([[5.0]]), tf.constant([[3.0]]),
                                              pieces=3)  # fmt: skip
    np.testing.assert_array_equal(gradient, [[1.0, 1.0, 1.0]])


def test_shapes_that_do_not_match_are_refused(kernel):
    with pytest.raises(tf.errors.InvalidArgumentError, match="pieces"):
        kernel.fitnets_maxout_gradient(tf.zeros((1, 6)), tf.zeros((1, 2)), tf.zeros((1, 2)),
                                       pieces=2)  # fmt: skip
