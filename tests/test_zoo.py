"""The distillation benchmark's CIFAR networks: parameter counts as in its CIFAR-100 table
(trainable weights: PyTorch counts BN's running statistics as buffers, not parameters), logits
out, and the stage outputs users tap as hints."""

import numpy as np
import pytest

from fitnets_tf import models

# For 100 classes on 32x32x3, as the CRD / RepDistiller models count them.
TRAINABLE = {
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
}
SMALL = ("resnet8x4", "wrn_16_2", "vgg8", "resnet20")  # a forward pass on these keeps it fast


@pytest.mark.parametrize("name", sorted(TRAINABLE))
def test_parameter_counts_match_the_benchmark(name):
    model = models.build(name, (32, 32, 3), 100, seed=0)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == TRAINABLE[name]
    assert name in models.names() and model.output.shape == (None, 100)
    stages = 5 if name.startswith("vgg") else 3
    shapes = [model.get_layer(f"stage{k}").output.shape for k in range(1, stages + 1)]
    assert shapes[0][1:3] == (32, 32) and shapes[-1][1:3] == ((4, 4) if stages == 5 else (8, 8))


@pytest.mark.parametrize("name", SMALL)
def test_forward_gives_finite_logits_and_the_seed_fixes_the_weights(name):
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    a, b = (models.build(name, (32, 32, 3), 10, seed=3) for _ in range(2))
    out = np.asarray(a(x, training=False))
    assert out.shape == (2, 10) and np.all(np.isfinite(out))
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights(), strict=True))
    kernels = [w for w in a.trainable_weights if "kernel" in w.path]
    assert not np.array_equal(kernels[1].numpy().ravel()[:8], kernels[2].numpy().ravel()[:8])


def test_zoo_options_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match="no input dropout"):
        models.build("resnet20", (32, 32, 3), 10, input_dropout=0.2)
    with pytest.raises(ValueError, match="is a benchmark net"):
        models.get_spec("resnet20")
    model = models.build("resnet20", (32, 32, 3), 10, dropout=0.3)
    assert model.get_layer("dropout_fc").rate == 0.3


def test_the_default_experiments_plain_cnns_pinned():
    teacher = models.build("wide_cnn", (28, 28, 1), 10, seed=0, dropout=0.2)
    student = models.build("thin_cnn", (28, 28, 1), 10, seed=0)
    assert (models.count_params(teacher), models.count_multiplications(teacher)) == (2_562_362, 43_394_816)
    assert (models.count_params(student), models.count_multiplications(student)) == (61_378, 4_242_240)
    # The hint pair of configs/fashion_mnist.flags: same resolution, a 1x1 regressor apart.
    assert teacher.get_layer("conv3_relu").output.shape[1:] == (14, 14, 96)
    assert student.get_layer("conv2_relu").output.shape[1:] == (14, 14, 48)
    assert [layer.rate for layer in teacher.layers if "dropout" in layer.name] == [0.2, 0.2]
    assert not any("dropout" in layer.name for layer in student.layers)
