import math

import keras
import numpy as np
import pytest

from fitnets_tf import losses


def test_hint_loss_is_half_the_squared_error_summed_over_features():
    hint = np.array([[[1.0, 2.0]], [[0.0, 0.0]]], "float32")  # (2, 1, 2)
    regressed = np.array([[[0.0, 0.0]], [[1.0, 1.0]]], "float32")
    np.testing.assert_allclose(losses.hint_loss(hint, regressed), [2.5, 1.0])


def test_cross_entropy_sparse_and_one_hot_agree():
    logits = np.array([[0.0, math.log(3.0)]], "float32")  # P = [0.25, 0.75]
    expected = -math.log(0.75)
    np.testing.assert_allclose(losses.cross_entropy(np.array([1]), logits), [expected], rtol=1e-6)
    one_hot = np.array([[0.0, 1.0]], "float32")
    np.testing.assert_allclose(losses.cross_entropy(one_hot, logits), [expected], rtol=1e-6)


@pytest.mark.parametrize(
    ("tau", "tau_squared", "factor"), [(1.0, False, 1), (2.0, False, 1), (2.0, True, 4)]
)
def test_kd_loss_is_the_soft_cross_entropy(tau, tau_squared, factor):
    # Teacher logits / τ = [0, ln 3] → P_T = [0.25, 0.75]; uniform student → H = ln 2.
    teacher = np.array([[0.0, tau * math.log(3.0)]], "float32")
    student = np.zeros((1, 2), "float32")
    got = losses.kd_loss(teacher, student, tau, tau_squared=tau_squared)
    np.testing.assert_allclose(got, [factor * math.log(2.0)], rtol=1e-6)


def test_losses_return_float32_for_float16_inputs():
    logits = np.zeros((2, 3), "float16")
    assert keras.backend.standardize_dtype(losses.kd_loss(logits, logits, 3.0).dtype) == "float32"
    assert keras.backend.standardize_dtype(losses.hint_loss(logits, logits).dtype) == "float32"
