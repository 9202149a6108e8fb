"""A run's process-wide settings are its own: the caller's session is restored after it."""

import keras
import numpy as np
import pytest

from fitnets_tf.run import runtime


def test_session_restores_the_dtype_policy_even_after_an_error():
    keras.config.set_dtype_policy("bfloat16")  # what a notebook had chosen
    with runtime.session(seed=0, deterministic=False, mixed_precision=True):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"  # no GPU here
    assert keras.config.dtype_policy().name == "bfloat16"
    with pytest.raises(RuntimeError), runtime.session(seed=0, deterministic=False,
                                                      mixed_precision=False):  # fmt: skip
        assert keras.config.dtype_policy().name == "float32"
        raise RuntimeError("a failed run")
    assert keras.config.dtype_policy().name == "bfloat16"


def test_session_seeds_every_generator():
    with runtime.session(seed=3, deterministic=False, mixed_precision=False):
        first = keras.random.uniform((3,), seed=keras.random.SeedGenerator(1)).numpy().tolist()
        drawn = np.random.rand()
    with runtime.session(seed=3, deterministic=False, mixed_precision=False):
        again = keras.random.uniform((3,), seed=keras.random.SeedGenerator(1)).numpy().tolist()
        assert np.random.rand() == drawn
    assert first == again
