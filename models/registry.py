"""The model zoo: a name -> :class:`ModelSpec` table and lookup helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from satc.models.bert import bert_tiny
from satc.models.gpt import gpt_tiny
from satc.models.resnet import resnet18, resnet18_cifar, resnet50, resnet50_cifar
from satc.models.small import cnn, mlp
from satc.models.vgg import vgg16_bn
from satc.models.vit import vit_tiny
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry: its factory, default input shape per sample ((C, H, W) for images, (T,)
    for token models) and class count (the vocabulary for token models)."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str

    def build(self, **kw: object) -> nn.Module:
        """Build the model; ``num_classes`` defaults to this entry's."""
        kw.setdefault("num_classes", self.num_classes)
        return self.factory(**kw)


ZOO: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("mlp", mlp, (1, 8, 8), 10, "MLP 64-128-64-10 for 8x8 digits"),
    ModelSpec("cnn", cnn, (1, 8, 8), 10, "3-conv CNN with BN and max-pool for 8x8 digits"),
    ModelSpec("resnet18_cifar", resnet18_cifar, (3, 32, 32), 10, "ResNet-18, CIFAR stem"),
    ModelSpec("resnet18", resnet18, (3, 224, 224), 1000, "ResNet-18, ImageNet"),
    ModelSpec("resnet50_cifar", resnet50_cifar, (3, 32, 32), 10, "ResNet-50 v1.5, CIFAR stem"),
    ModelSpec("resnet50", resnet50, (3, 224, 224), 1000, "ResNet-50 v1.5, ImageNet"),
    ModelSpec("vgg16_bn", vgg16_bn, (3, 32, 32), 10, "VGG-16-BN, CIFAR classifier"),
    ModelSpec("vit_tiny", vit_tiny, (3, 32, 32), 10,
              "ViT-Tiny patch 4, dim 192, depth 12, 3 heads, mean-pool head"),
    ModelSpec("gpt_tiny", gpt_tiny, (16,), 64,
              "GPT-style decoder: vocab 64, context 16, dim 32, depth 2, causal, LM head"),
    ModelSpec("bert_tiny", bert_tiny, (16,), 64,
              "BERT-style encoder: vocab 64, context 16, dim 32, depth 2, post-norm, MLM head"),
)}


def list_models() -> list[ModelSpec]:
    """Every zoo entry, in registration order."""
    return list(ZOO.values())


def get_spec(name: str) -> ModelSpec:
    """The zoo entry called ``name``; KeyError listing the known names otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(ZOO)}") from None


def get_model(name: str, **kw: object) -> nn.Module:
    """Build zoo model ``name``; keyword arguments go to its factory."""
    return get_spec(name).build(**kw)
