"""Reasoning core (docs/model.md "Reasoning core and decoders"): a non-causal Transformer stack over H_multi -> R."""
from __future__ import annotations

import torch
from torch import nn

from trimodal.model.layers import EncoderBlock
from trimodal.model.trimodal.configuration import TrimodalConfig


class ReasoningCore(nn.Module):
    def __init__(self, config: TrimodalConfig):
        super().__init__()
        c = config
        self.blocks = nn.ModuleList(EncoderBlock(c.d_model, c.reasoning_heads, c.reasoning_ffn, c.hidden_act,
                                                 c.dropout, c.layer_norm_eps) for _ in range(c.reasoning_layers))
        self.norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)

    def forward(self, h_multi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h_multi = block(h_multi, key_mask=mask)
        return self.norm(h_multi)
