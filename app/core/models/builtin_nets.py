"""The small CNNs the project trains itself (see app/core/training/builtin.py) and ships in models/.

Both networks keep the classic shape taught in the lecture: a ``features`` stack of convolution, ReLU and
pooling, then a ``classifier``. Layer names are stable dotted paths (``features.conv1`` ...) because the
app refers to layers by name (feature maps, Grad-CAM targets, receptive fields).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["BUILTIN_ARCHITECTURES", "DigitNet", "NoduleNet", "count_parameters"]


class NoduleNet(nn.Module):
    """Nodule / no-nodule classifier for 128 x 128 greyscale CT-like slices.

    Four 3x3 conv blocks (8, 16, 32, 32 channels; the first three followed by 2x2 max pooling), then
    global average pooling and one linear layer: the layout Class Activation Mapping was defined for,
    so Grad-CAM on ``features.conv4`` / ``features.relu4`` (16 x 16 at 128 px input) is meaningful.
    Receptive field of ``conv4``: 38 px, enough to see the largest nodule (24 px across) with context.

    ``(N, in_channels, H, W) -> (N, num_classes)`` logits; works for any H, W divisible by 8.
    """

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        widths = (8, 16, 32, 32)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        prev = in_channels
        for i, width in enumerate(widths, start=1):
            # No bias: BatchNorm right after supplies the shift.
            layers[f"conv{i}"] = nn.Conv2d(prev, width, kernel_size=3, padding=1, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm2d(width)
            layers[f"relu{i}"] = nn.ReLU(inplace=False)
            if i < len(widths):
                layers[f"pool{i}"] = nn.MaxPool2d(2)
            prev = width
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, num_classes)`` logits."""
        return self.classifier(self.flatten(self.pool(self.features(x))))


class DigitNet(nn.Module):
    """LeNet-like digit classifier for 28 x 28 greyscale digits (white on black).

    conv1 (8 filters of 5x5, so the learned first-layer filters are large enough to look like stroke and
    edge detectors) -> ReLU -> 2x2 max pool -> conv2 (16 of 5x5) -> ReLU -> 2x2 max pool -> flatten
    (16 x 7 x 7 = 784 values) -> fc1 (64) -> ReLU -> fc2 (num_classes).
    An adaptive pool to 7 x 7 before flattening lets other input sizes through unchanged in meaning.

    ``(N, in_channels, H, W) -> (N, num_classes)`` logits.
    """

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, 8, kernel_size=5, padding=2)),
                    ("relu1", nn.ReLU(inplace=False)),
                    ("pool1", nn.MaxPool2d(2)),
                    ("conv2", nn.Conv2d(8, 16, kernel_size=5, padding=2)),
                    ("relu2", nn.ReLU(inplace=False)),
                    ("pool2", nn.MaxPool2d(2)),
                ]
            )
        )
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(16 * 7 * 7, 64)),
                    ("relu3", nn.ReLU(inplace=False)),
                    ("dropout", nn.Dropout(0.2)),
                    ("fc2", nn.Linear(64, num_classes)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, num_classes)`` logits."""
        return self.classifier(self.flatten(self.pool(self.features(x))))


BUILTIN_ARCHITECTURES: dict[str, type[nn.Module]] = {
    "NoduleNet": NoduleNet,
    "DigitNet": DigitNet,
}


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (buffers such as BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
