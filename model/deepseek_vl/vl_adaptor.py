"""DeepSeek-VL's hybrid MLP adaptor (docs/model.md "DeepSeek-VL"): vision tokens -> the LLM's input space.

    a = W_high h + b_high          one single-layer MLP per resolution, each to d/2 features
    b = W_low  l + b_low
    v = W_2 GELU([a; b]) + b_2     joined along the features ([B, S^2, d]), then an MLP into the LLM's width d
"""
from __future__ import annotations

import torch
from torch import nn


class HybridAdaptor(nn.Module):
    def __init__(self, low_dim: int, high_dim: int, llm_dim: int):
        super().__init__()
        if llm_dim % 2:
            raise ValueError(f"the LLM width {llm_dim} must be even: each resolution gets half of it")
        self.high = nn.Linear(high_dim, llm_dim // 2)
        self.low = nn.Linear(low_dim, llm_dim // 2)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(llm_dim, llm_dim))

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """low [B, N, low_dim], high [B, N, high_dim] (the same N grid cells) -> [B, N, llm_dim]."""
        if low.shape[:2] != high.shape[:2]:
            raise ValueError(f"the towers disagree on the tokens: low {tuple(low.shape)}, high {tuple(high.shape)}")
        return self.out(torch.cat([self.high(high), self.low(low)], dim=-1))
