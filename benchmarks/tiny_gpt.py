"""A small GPT-style decoder for benchmarks: token + position embeddings, pre-LN blocks with
causal attention (q/k/v/o as separate nn.Linear layers) and a GELU MLP, then an LM head.

Defaults follow the benchmark shape: 4 layers, width 256, 4 heads, MLP 1024. No buffers and no
dropout, so per-sample libraries that refuse buffers (Opacus in strict mode) accept it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.o_proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x):
        n, t, w = x.shape
        h = self.ln1(x)

        def split(z):
            return z.view(n, t, self.heads, w // self.heads).transpose(1, 2)

        att = F.scaled_dot_product_attention(split(self.q_proj(h)), split(self.k_proj(h)), split(self.v_proj(h)),
                                             is_causal=True)
        x = x + self.o_proj(att.transpose(1, 2).reshape(n, t, w))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 512, width: int = 256, layers: int = 4, heads: int = 4, max_len: int = 512):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(max_len, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def sequence_losses(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean next-token cross-entropy."""
    logits = model(ids)[:, :-1]
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    return per_token.view(ids.shape[0], -1).mean(1)


def block_linear_names(model: TinyGPT, kinds=("q_proj", "k_proj", "v_proj", "o_proj", "up", "down"),
                       layers=None) -> list[str]:
    """Names of the blocks' linear weights and biases (the parameters the benchmarks select)."""
    chosen = range(len(model.blocks)) if layers is None else layers
    return [f"blocks.{i}.{kind}.{p}" for i in chosen for kind in kinds for p in ("weight", "bias")]
