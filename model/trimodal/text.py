"""Text encoder (docs/model.md "Encoders"): bidirectional Transformer over BPE tokens (RoBERTa-like)."""
from __future__ import annotations

import torch
from torch import nn

from trimodal.model.layers import EncoderBlock
from trimodal.model.trimodal.configuration import TrimodalConfig


class TextEncoder(nn.Module):
    """H_txt = blocks(EmbeddingLookup(t_j) + PositionalEncoding(j)), then LayerNorm and a projection to d_model."""

    def __init__(self, config: TrimodalConfig):
        super().__init__()
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.text_dim, padding_idx=c.pad_token_id)
        self.pos = nn.Embedding(c.max_text_positions, c.text_dim)
        self.blocks = nn.ModuleList(EncoderBlock(c.text_dim, c.text_heads, c.text_ffn, c.hidden_act, c.dropout,
                                                 c.layer_norm_eps) for _ in range(c.text_layers))
        self.norm = nn.LayerNorm(c.text_dim, eps=c.layer_norm_eps)
        self.out_proj = nn.Linear(c.text_dim, c.d_model) if c.text_dim != c.d_model else nn.Identity()
        self.max_positions = c.max_text_positions

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.max_positions:
            raise ValueError(f"text of {input_ids.shape[1]} tokens > max_text_positions {self.max_positions}")
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids) + self.pos(positions)
        for block in self.blocks:
            x = block(x, key_mask=mask)
        return self.out_proj(self.norm(x))
