import dataclasses
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from fitnets_tf import distribute
from fitnets_tf.errors import ConfigError

HERE = os.path.dirname(__file__)


@dataclasses.dataclass
class Sizes:  # what check_last_batches reads of a Datasets
    batch_size: int
    num_train_examples: int
    num_validation_examples: int | None


@pytest.fixture(scope="module")
def check() -> dict:
    """distribute_check.py's results (its own process: 2 logical CPU devices)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "distribute_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_mirrored_on_two_logical_cpus_matches_one_device(check):
    one, mirrored = check["one"], check["mirrored"]
    for phase in ("hints", "kd"):
        # Logged losses agree: neither halved (keras.losses' trap) nor doubled.
        np.testing.assert_allclose(mirrored[phase], one[phase], rtol=2e-3)
    # Gradients are scaled right: the same SGD updates give the same weights.
    np.testing.assert_allclose(mirrored["weights"], one["weights"], rtol=2e-3)


def test_fused_batch_norm_trains_as_keras_layer_on_two_replicas(check):
    # Each replica normalises with its own half-batch's statistics and updates the moving
    # ones from it, in both layers; the fused kernel only sums in another order.
    for fused, keras_bn in zip(*check["batch_norm"].values(), strict=True):
        np.testing.assert_allclose(fused, keras_bn, rtol=1e-4, atol=1e-5)


def test_a_last_batch_smaller_than_the_replicas_is_refused_before_training():
    # On 2 logical CPUs a last batch of 1 failed at the end of the first epoch, inside a kernel
    # ("Number of ways to split should evenly divide the split dimension").
    two = types.SimpleNamespace(num_replicas_in_sync=2)
    fine = Sizes(batch_size=8, num_train_examples=35, num_validation_examples=16)
    assert distribute.check_last_batches(fine, two) is fine  # last batches of 3 and 8
    assert distribute.check_last_batches(fine, None) is fine  # one replica
    short = dataclasses.replace(fine, num_validation_examples=17)
    with pytest.raises(ConfigError, match=r"last validation batch holds 1 example\(s\) \(17 "
                                          r"examples in batches of 8\), fewer than the strategy's "
                                          r"2 replicas.*--batch_size=7 or 9"):
        distribute.check_last_batches(short, two)
    assert distribute.check_last_batches(dataclasses.replace(short, batch_size=9), two)
