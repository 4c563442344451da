"""A small GPT-style decoder: token embedding, learned positions, pre-norm causal blocks, LM head.

Plain torch (``F.scaled_dot_product_attention(..., is_causal=True)``, which
satc imports as matmul / softmax with a constant causal mask). ``forward``
takes int64 token ids ``[N, T]`` (T <= ``context``) and returns token logits
``[N, T, vocab]``; the LM head is a separate (untied) linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention: one qkv projection, SDPA (causal or with a mask), out proj."""

    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.causal = heads, causal
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention over tokens ``x`` [N, T, dim]; ``mask``: additive, broadcast to scores."""
        n, t, d = x.shape
        q, k, v = (y.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)
                   for y in self.qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


def mlp(dim: int, ratio: int) -> nn.Sequential:
    """Linear -> GELU -> Linear."""
    return nn.Sequential(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))


class DecoderBlock(nn.Module):
    """Pre-norm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, heads, causal=True)
        self.ln2, self.mlp = nn.LayerNorm(dim), mlp(dim, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One block over tokens ``x`` [N, T, dim]."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token + position embedding, decoder blocks, final LayerNorm, LM head."""

    input_dtype = torch.int64       # token ids (satc.models.stats builds int examples)

    def __init__(self, vocab: int, context: int, dim: int, depth: int, heads: int,
                 ratio: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, context, dim) * 0.02)
        self.blocks = nn.Sequential(*(DecoderBlock(dim, heads, ratio) for _ in range(depth)))
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits [N, T, vocab] for token ids ``ids`` [N, T]."""
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        return self.head(self.ln(self.blocks(x)))


def gpt_tiny(num_classes: int = 64, context: int = 16, dim: int = 32, depth: int = 2,
             heads: int = 2, mlp_ratio: int = 4) -> GPT:
    """A tiny GPT; ``num_classes`` is the vocabulary size (the LM's classes are tokens)."""
    return GPT(num_classes, context, dim, depth, heads, mlp_ratio)
