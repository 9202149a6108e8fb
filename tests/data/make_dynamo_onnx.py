"""Regenerates ``tests/data/dynamo_onnx/``: small PyTorch teachers exported to ONNX by
``torch.onnx.export``'s default exporter (the dynamo one, ``torch.export`` based, since PyTorch
2.9), which ``tests/test_onnx_dynamo.py`` loads as teachers.

Made with torch 2.13.0+cpu, onnxscript 0.7.2 (onnx-ir 1.1.0) and onnx 1.23.2; CI installs
neither torch nor onnxscript, hence the committed files. Run from the checkout::

    pip install torch==2.13.0 onnxscript
    python tests/data/make_dynamo_onnx.py

Each network is exported with one of the calls its users write:

* ``plain_cnn`` (1x28x28: conv, batch norm, ReLU, max pooling, twice, then a linear layer):
  the call this README advised up to PyTorch 2.8, ``dynamic_axes={'input': {0: 'batch'}},
  input_names=['input']``. The dynamo exporter turns the axes into dynamic shapes (and warns
  that they are not recommended) and, as for every call without ``external_data=False``,
  writes the large weights to ``plain_cnn.onnx.data`` beside the file.
* ``resnet_block`` (3x32x32: a residual block, its sum, global average pooling): the bare
  call, ``torch.onnx.export(model, (x,), path)``: a fixed batch of 1, an input named after
  ``forward``'s argument (``x``), weights in ``resnet_block.onnx.data``.
* ``flatten_dropout`` (1x28x28: conv, dropout, ``nn.Flatten``, linear layers): the call the
  README advises now, ``dynamic_shapes=({0: 'batch'},), external_data=False``: one file.

Batch norms have random statistics and affine weights (the exporter folds them into the
convolutions); ``expected.npz`` holds a few images (uint8 pixels, channels first, as PyTorch
takes them, fed as pixels / 255), PyTorch's own logits for them, and each network's number of
parameters in PyTorch.
"""

import pathlib

import numpy as np
import torch
from torch import nn

HERE = pathlib.Path(__file__).parent / "dynamo_onnx"


class PlainCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(8 * 7 * 7, classes)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class ResNetBlock(nn.Module):
    def __init__(self, classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())  # fmt: skip
        self.block = ResidualBlock(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


class FlattenDropout(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(),
            nn.Linear(4 * 13 * 13, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, classes),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with batch-norm statistics and affine weights away from their defaults (a
    fresh one's are 0 and 1, which folding would leave unchecked), in inference mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for old in HERE.glob("*.onnx*"):
        old.unlink()
    torch.manual_seed(0)
    teachers = {
        "plain_cnn": (PlainCNN(), (1, 28, 28),
                      dict(dynamic_axes={"input": {0: "batch"}}, input_names=["input"])),
        "resnet_block": (ResNetBlock(), (3, 32, 32), {}),
        "flatten_dropout": (FlattenDropout(), (1, 28, 28),
                            dict(dynamic_shapes=({0: "batch"},), external_data=False)),
    }  # fmt: skip
    expected = {}
    rng = np.random.default_rng(0)
    for seed, (name, (model, shape, options)) in enumerate(teachers.items()):
        model = trained_looking(model, seed)
        torch.onnx.export(model, (torch.zeros(1, *shape),), HERE / f"{name}.onnx", **options)
        pixels = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
        with torch.no_grad():
            images = torch.from_numpy(pixels.astype(np.float32) / 255)
            expected[f"{name}_logits"] = model(images).numpy()
        expected[f"{name}_pixels"] = pixels
        expected[f"{name}_params"] = np.array(sum(p.numel() for p in model.parameters()))
    np.savez_compressed(HERE / "expected.npz", **expected)


if __name__ == "__main__":
    main()
