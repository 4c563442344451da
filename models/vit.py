"""ViT-Tiny for 3x32x32 (CIFAR): patch 4, dim 192, depth 12, 3 heads, MLP ratio 4.

Written with explicit reshape/permute/matmul/softmax attention (no fused
attention ops), pre-norm blocks, a learned position embedding and no class
token: the head reads the **mean over tokens** after the final LayerNorm.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v projections."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention over tokens of ``x`` [B, N, dim]."""
        b, n, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = (self.drop(attn) @ v).permute(0, 2, 1, 3).reshape(b, n, d)
        return self.drop(self.proj(out))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One block over tokens ``x`` [B, N, dim]."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Conv patch embedding, position embedding, transformer blocks, LayerNorm, mean pool, head."""

    def __init__(self, num_classes: int, image: int, patch: int, dim: int, depth: int,
                 heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        if image % patch:
            raise ValueError(f"image size {image} is not divisible by patch {patch}")
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images ``x`` of shape [B, 3, H, W]."""
        tokens = torch.flatten(self.patch_embed(x), 2).transpose(1, 2) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens)).mean(1))


def vit_tiny(num_classes: int = 10, dim: int = 192, depth: int = 12, heads: int = 3,
             patch: int = 4, mlp_ratio: int = 4, image: int = 32, dropout: float = 0.0) -> ViT:
    """ViT-Tiny for 3x32x32; reduce ``dim``/``depth`` for fast tests."""
    return ViT(num_classes, image, patch, dim, depth, heads, mlp_ratio, dropout)
