"""ResNet-18/50 (torchvision-faithful layouts) with ImageNet and CIFAR stems.

The ImageNet stem is a 7x7/2 conv and a 3x3/2 max-pool (input 3x224x224);
the CIFAR stem is one 3x3/1 conv without pooling (input 3x32x32). ResNet-50
uses the v1.5 bottleneck (stride on the 3x3 conv), as torchvision does.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(ci: int, co: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(ci, co, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(co)]


class Residual(nn.Module):
    """relu(body(x) + shortcut(x)); the shortcut is a 1x1 conv/BN projection when shapes change."""

    expansion = 1

    def __init__(self, body: nn.Sequential, ci: int, co: int, stride: int) -> None:
        super().__init__()
        self.body = body
        self.shortcut = (nn.Sequential(*_conv_bn(ci, co, 1, stride))
                         if stride != 1 or ci != co else nn.Identity())
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(body(x) + shortcut(x))."""
        return self.relu(self.body(x) + self.shortcut(x))


class BasicBlock(Residual):
    """Two 3x3 conv/BN layers (the first strided)."""

    expansion = 1

    def __init__(self, ci: int, planes: int, stride: int) -> None:
        body = nn.Sequential(*_conv_bn(ci, planes, 3, stride), nn.ReLU(), *_conv_bn(planes, planes, 3))
        super().__init__(body, ci, planes, stride)


class Bottleneck(Residual):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, ci: int, planes: int, stride: int) -> None:
        co = planes * self.expansion
        body = nn.Sequential(*_conv_bn(ci, planes, 1), nn.ReLU(),
                             *_conv_bn(planes, planes, 3, stride), nn.ReLU(),
                             *_conv_bn(planes, co, 1))
        super().__init__(body, ci, co, stride)


class ResNet(nn.Module):
    """Stem, four stages of residual blocks (strides 1, 2, 2, 2), global average pool, FC."""

    def __init__(self, block: type[Residual], blocks: tuple[int, ...], num_classes: int,
                 width: int, cifar_stem: bool) -> None:
        super().__init__()
        if cifar_stem:
            self.stem = nn.Sequential(*_conv_bn(3, width, 3), nn.ReLU())
        else:
            self.stem = nn.Sequential(*_conv_bn(3, width, 7, 2), nn.ReLU(),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        stages: list[nn.Module] = []
        ci = width
        for i, count in enumerate(blocks):
            planes = width * 2 ** i
            for j in range(count):
                stages.append(block(ci, planes, 2 if (i > 0 and j == 0) else 1))
                ci = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(ci, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images ``x`` of shape [B, 3, H, W]."""
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet18(num_classes: int = 1000, width: int = 64) -> ResNet:
    """ResNet-18 for 3x224x224 (ImageNet stem); ``width`` is the stem/stage-1 channel count."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width, cifar_stem=False)


def resnet18_cifar(num_classes: int = 10, width: int = 64) -> ResNet:
    """ResNet-18 for 3x32x32 (3x3 stem, no max-pool)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width, cifar_stem=True)


def resnet50(num_classes: int = 1000, width: int = 64) -> ResNet:
    """ResNet-50 (v1.5 bottleneck) for 3x224x224 (ImageNet stem)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, width, cifar_stem=False)


def resnet50_cifar(num_classes: int = 10, width: int = 64) -> ResNet:
    """ResNet-50 (v1.5 bottleneck) for 3x32x32 (3x3 stem, no max-pool)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, width, cifar_stem=True)
