"""Small models for the 8x8 digits data set (1x8x8 inputs, 10 classes)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then Linear+ReLU hidden layers, then a Linear classifier."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images ``x`` of shape [B, C, H, W]."""
        return self.classifier(self.features(torch.flatten(x, 1)))


def mlp(num_classes: int = 10, hidden: tuple[int, ...] = (128, 64),
        in_shape: tuple[int, int, int] = (1, 8, 8)) -> MLP:
    """MLP for 1x8x8 digits: 64-128-64-``num_classes`` by default."""
    c, h, w = in_shape
    return MLP(c * h * w, tuple(hidden), num_classes)


def _conv_bn_relu(ci: int, co: int) -> list[nn.Module]:
    return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]


class SmallCNN(nn.Module):
    """Three 3x3 conv/BN/ReLU stages with two 2x2 max-pools, then a 2-layer classifier."""

    def __init__(self, in_channels: int, width: int, num_classes: int, spatial: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, 2 * width), nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width), nn.MaxPool2d(2),
        )
        flat = 4 * width * (spatial // 4) ** 2
        self.classifier = nn.Sequential(nn.Linear(flat, 4 * width), nn.ReLU(),
                                        nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images ``x`` of shape [B, C, H, W]."""
        return self.classifier(torch.flatten(self.features(x), 1))


def cnn(num_classes: int = 10, width: int = 16, in_shape: tuple[int, int, int] = (1, 8, 8)) -> SmallCNN:
    """Small CNN for 1x8x8 digits: conv widths ``width``, 2x, 4x; H and W divisible by 4."""
    c, h, w = in_shape
    if h != w or h % 4:
        raise ValueError(f"cnn needs square inputs with H divisible by 4, got {in_shape}")
    return SmallCNN(c, width, num_classes, h)
