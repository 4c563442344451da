"""A small BERT-style encoder with a masked-language-model head.

Token embedding + learned positions + LayerNorm, post-norm bidirectional
blocks (``x = ln(x + attn(x))``, ``x = ln(x + mlp(x))``), and the MLM head
(linear, GELU, LayerNorm, linear to the vocabulary). ``forward(ids, mask)``:
int64 ids ``[N, T]``, an optional additive float padding mask ``[N, 1, 1, T]``
(0 keep, -inf drop); returns token logits ``[N, T, vocab]``, trained with
cross-entropy whose unmasked positions carry the ignore index -100.
"""

from __future__ import annotations

import torch
from satc.models.gpt import SelfAttention, mlp
from torch import nn


class EncoderBlock(nn.Module):
    """Post-norm: ln(x + attn(x)), then ln(x + mlp(x))."""

    def __init__(self, dim: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.attn, self.ln1 = SelfAttention(dim, heads, causal=False), nn.LayerNorm(dim)
        self.mlp, self.ln2 = mlp(dim, ratio), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """One block over tokens ``x`` [N, T, dim]."""
        x = self.ln1(x + self.attn(x, mask))
        return self.ln2(x + self.mlp(x))


class BERT(nn.Module):
    """Embeddings + LayerNorm, encoder blocks, MLM head."""

    input_dtype = torch.int64       # token ids (satc.models.stats builds int examples)

    def __init__(self, vocab: int, context: int, dim: int, depth: int, heads: int,
                 ratio: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, context, dim) * 0.02)
        self.ln = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, ratio) for _ in range(depth))
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.decoder = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """MLM logits [N, T, vocab] for ids [N, T] (``mask``: additive [N, 1, 1, T])."""
        x = self.ln(self.tok(ids) + self.pos[:, : ids.shape[1]])
        for block in self.blocks:
            x = block(x, mask)
        return self.decoder(self.transform(x))


def bert_tiny(num_classes: int = 64, context: int = 16, dim: int = 32, depth: int = 2,
              heads: int = 2, mlp_ratio: int = 4) -> BERT:
    """A tiny BERT; ``num_classes`` is the vocabulary size (the MLM's classes are tokens)."""
    return BERT(num_classes, context, dim, depth, heads, mlp_ratio)
