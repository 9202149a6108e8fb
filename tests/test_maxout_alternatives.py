"""bench/maxout_alternatives.py: the formulations it times compute what the library computes.

No timing is asserted. The pool-gradient and depthwise-difference variants claim the library's
shared-tie gradient; a small-integer input makes most pieces tie, so a wrong tie rule shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bench import maxout_alternatives
from fitnets_tf import maxout


@pytest.mark.parametrize("shape", [(2, 3, 4, 8), (5, 6)])
@pytest.mark.parametrize("variant", ["_pool_gradients_max_of_pieces",
                                     "_depthwise_difference_max_of_pieces"])  # fmt: skip
def test_variants_equal_the_library_at_ties(variant, shape):
    function = getattr(maxout_alternatives, variant)
    assert maxout_alternatives.same_gradients(function, shape)


def test_same_gradients_tells_a_different_tie_rule():
    def ties_to_one(z, pieces, ties="share"):
        return maxout.max_of_pieces(z, pieces, "one")

    assert not maxout_alternatives.same_gradients(ties_to_one)


def test_pool_gradients_share_a_tie_in_halves():
    z = tf.constant([[1.0, 2.0, 1.0, 0.0]])  # unit 0 ties (1, 1); unit 1: piece 0 wins
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = maxout_alternatives._pool_gradients_max_of_pieces(z, 2)
    gradient = tape.gradient(out, z, output_gradients=tf.constant([[4.0, 8.0]]))
    np.testing.assert_array_equal(out, [[1.0, 2.0]])
    np.testing.assert_array_equal(gradient, [[2.0, 8.0, 2.0, 0.0]])
