"""The paper's networks, registered by name: its teachers, FitNets 1-4 and Table 6's depth nets.

Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015 (arXiv:1412.6550). Each is an
:class:`~fitnets_tf.models.specs.ArchSpec`; :mod:`~fitnets_tf.models.maxout_net` builds it.
"""

from __future__ import annotations

from fitnets_tf.models.specs import ArchSpec, ConvSpec


def cifar_fitnet(
    blocks: tuple[tuple[int, ...], ...],
    guided_layer: int,
    description: str,
    teacher: str = "cifar_teacher",
    **paper,
) -> ArchSpec:
    """A CIFAR FitNet: 3x3 "same" maxout convs in blocks, 2x2 pools, a global pool at the end.

    The original pools the last 8x8 map with an 8x8 window, i.e. a max over the whole map; a
    global max pool is the same on 32x32 inputs and stays valid for other input sizes.
    """
    convs = []
    for b, block in enumerate(blocks):
        last_pool = "global" if b == len(blocks) - 1 else (2, 2)
        convs += [
            ConvSpec(f, pool=last_pool if j == len(block) - 1 else None)
            for j, f in enumerate(block)
        ]
    return ArchSpec(
        convs=tuple(convs),
        guided_layer=guided_layer,
        teacher=teacher,
        description=description,
        **paper,
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    # CIFAR teacher: pylearn2's maxout cifar10.yaml. The 5x5x192 -> 500x5 FC layer alone holds
    # 12M weights (16.2M in all, not the paper's ~9M); the multiplications, 732M, match ~725M.
    "cifar_teacher": ArchSpec(
        convs=(
            ConvSpec(96, 8, 4, pool=(4, 2), max_norm=0.9),
            ConvSpec(192, 8, 3, pool=(4, 2), max_norm=1.9365),
            ConvSpec(192, 5, 3, pool=(2, 2), max_norm=1.9365),
        ),
        input_dropout=0.2,
        dropout=0.5,
        hint_layer=2,
        description="CIFAR teacher: Goodfellow et al.'s maxout net (cuda-convnet ceil pooling).",
        paper_params=9e6,
        paper_mults=725e6,
    ),
    "fitnet1": cifar_fitnet(
        ((16, 16, 16), (32, 32, 32), (48, 48, 64)),
        6,
        "FitNet 1, 11 layers.",
        paper_params=250e3,
        paper_mults=30e6,
    ),
    "fitnet2": cifar_fitnet(
        ((16, 32, 32), (48, 64, 80), (96, 96, 128)),
        6,
        "FitNet 2, 11 layers.",
        paper_params=862e3,
        paper_mults=108e6,
    ),
    "fitnet3": cifar_fitnet(
        ((32, 48, 64, 64), (80, 80, 80, 80), (128, 128, 128)),
        8,
        "FitNet 3, 13 layers (the paper's 392M does not recount; 324M does).",
        paper_params=1.6e6,
        paper_mults=392e6,
    ),
    "fitnet4": cifar_fitnet(
        ((32, 32, 32, 48, 48), (80,) * 6, (128,) * 6),
        11,
        "FitNet 4, 19 layers; also the paper's SVHN student.",
        paper_params=2.5e6,
        paper_mults=382e6,
    ),
    # MNIST teacher: pylearn2's maxout mnist.yaml, except 2 pieces (not 4) in conv3: the paper's
    # ~361K parameters match 2 pieces (361.1K); 4 pieces would give 418.7K.
    "mnist_teacher": ArchSpec(
        convs=(
            ConvSpec(48, 8, 0, pool=(4, 2), max_norm=0.9),
            ConvSpec(48, 8, 3, pool=(4, 2), max_norm=1.9365),
            ConvSpec(24, 5, 3, pool=(2, 2), max_norm=1.9365),
        ),
        fc_units=None,
        input_dropout=0.2,
        dropout=0.5,
        hint_layer=2,
        description="MNIST teacher: maxout conv 48-48-24, no FC layer.",
        paper_params=361e3,
    ),
    # MNIST FitNet: the original MNIST_fitnet_valid.yaml, including its 4-piece last two layers.
    "mnist_fitnet": ArchSpec(
        convs=(
            ConvSpec(16, 5, 0, max_norm=0.9),
            ConvSpec(16, 3, 0, pool=(4, 2), max_norm=0.9),
            ConvSpec(16, 5, 3, max_norm=1.9365),
            ConvSpec(16, 3, 0, pool=(4, 2), max_norm=1.9365),
            ConvSpec(12, 3, 3, pieces=4, max_norm=1.9365),
            ConvSpec(12, 3, 0, pieces=4, pool=(2, 2), max_norm=1.9365),
        ),
        fc_units=None,
        guided_layer=4,
        teacher="mnist_teacher",
        description="MNIST FitNet: 6 maxout convs 16-16-16-16-12-12.",
        paper_params=30e3,
    ),
    # SVHN teacher: pylearn2's maxout svhn.yaml (pads 4, 3, 3, ceil pooling: 6x6 last map). It
    # has 10.5M parameters, not the paper's ~4.9M, which no square last map gives (4x4: 5.3M),
    # so the original geometry is kept.
    "svhn_teacher": ArchSpec(
        convs=(
            ConvSpec(64, 5, 4, pool=(3, 2), max_norm=0.9),
            ConvSpec(128, 5, 3, pool=(3, 2), max_norm=1.9365),
            ConvSpec(128, 5, 3, pool=(3, 2), max_norm=1.9365),
        ),
        fc_units=400,
        input_dropout=0.2,
        dropout=0.5,
        hint_layer=2,
        description="SVHN teacher: maxout conv 64-128-128 + maxout FC 400x5 (student: fitnet4).",
        paper_params=4.9e6,
    ),
}

# Table 6's depth experiment: (layers, budget in M multiplications) -> (blocks, guided layer).
# Registered as depth{layers}_{budget}m, e.g. depth11_30m.
DEPTH_NETS = {
    (5, 30): (((64,), (64,), (64,)), 2),
    (7, 30): (((16, 32), (32, 64), (64,)), 4),
    (9, 30): (((16, 32), (32, 32, 32), (48, 64)), 5),
    (11, 30): (((16, 16, 16), (32, 32, 32), (48, 48, 64)), 7),
    (5, 107): (((128,), (128,), (128,)), 2),
    (7, 107): (((32, 64), (80, 80), (128,)), 4),
    (9, 107): (((32, 32), (64, 80, 80), (96, 128)), 5),
    (11, 107): (((16, 32, 32), (48, 64, 80), (96, 96, 128)), 7),
}
ARCHITECTURES.update(
    {
        f"depth{layers}_{budget}m": cifar_fitnet(
            blocks,
            guided,
            f"Table 6 depth experiment: {layers} layers, ~{budget}M multiplications.",
            paper_mults=budget * 1e6,
        )
        for (layers, budget), (blocks, guided) in DEPTH_NETS.items()
    }
)
# The ~30M nets at half width, for 28x28x1 inputs: each ~5-6M multiplications, the budget of
# mnist_fitnet, so that a CPU trains the depth experiment on Fashion-MNIST in minutes
# (bench/paper_claims.py). Guided by mnist_teacher. Registered as mnist_depth{layers}.
ARCHITECTURES.update(
    {
        f"mnist_depth{layers}": cifar_fitnet(
            tuple(tuple(width // 2 for width in block) for block in blocks),
            guided,
            f"Table 6's {layers}-layer ~30M net at half width, for 28x28 inputs.",
            teacher="mnist_teacher",
        )
        for (layers, budget), (blocks, guided) in DEPTH_NETS.items()
        if budget == 30
    }
)
# Deeper still, at the same budget (not in the paper, whose Table 6 stops at 11 layers): where
# does each training method stop training a thinner, deeper net? 13 and 15 layers, about the
# multiplications of mnist_fitnet, guided at the end of the second block like the others.
MNIST_DEEPER = {
    13: (((6, 6, 6, 8), (10, 12, 12, 16), (20, 24, 32)), 8),
    15: (((4, 4, 6, 6, 8), (10, 12, 12, 12, 16), (20, 24, 32)), 10),
}
ARCHITECTURES.update(
    {
        f"mnist_depth{layers}": cifar_fitnet(
            blocks, guided, f"{layers} layers at mnist_fitnet's budget (beyond Table 6).",
            teacher="mnist_teacher",
        )  # fmt: skip
        for layers, (blocks, guided) in MNIST_DEEPER.items()
    }
)
