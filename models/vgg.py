"""VGG-16 with batch norm for 3x32x32 (CIFAR) inputs."""

from __future__ import annotations

import torch
from torch import nn

# Channel multiples of ``width`` per conv layer; "M" is a 2x2 max-pool.
_VGG16 = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M")


class VGG(nn.Module):
    """Conv/BN/ReLU feature stack (five max-pools: 32 -> 1), then a 3-layer classifier.

    The classifier is adapted to CIFAR: its input is the 1x1x(8*width) feature
    map and its hidden layers have 8*width units (512 at the default width).
    """

    def __init__(self, num_classes: int, width: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ci = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                co = int(item) * width
                layers += [nn.Conv2d(ci, co, 3, padding=1), nn.BatchNorm2d(co), nn.ReLU()]
                ci = co
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(ci, ci), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(ci, ci), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(ci, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images ``x`` of shape [B, 3, 32, 32]."""
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16_bn(num_classes: int = 10, width: int = 64, dropout: float = 0.0) -> VGG:
    """VGG-16-BN for 3x32x32; ``width`` is the first conv's channel count (64 by default)."""
    return VGG(num_classes, width, dropout)
