"""Blocks shared by every part of the network (docs/model.md "Blocks"): MHSA / cross-attention, FFN, pre-LN blocks.

Masks are boolean [B, L] "key is real" masks (True = attend). A row whose keys are all padding (a modality
the sample does not have) attends to everything instead of producing NaN; callers ignore those outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from trimodal.model import lockstep


def attention_mask(key_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, Lk] bool -> [B, 1, 1, Lk] bool for scaled_dot_product_attention; all-padding rows see every key."""
    if key_mask is None:
        return None
    safe = key_mask | ~key_mask.any(dim=-1, keepdim=True)
    return safe[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(d/h)) V per head, concatenated, times W_O. Self-attention when context is None."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        context_dim = context_dim or dim
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(context_dim, dim)
        self.v_proj = nn.Linear(context_dim, dim)
        self.o_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
                causal: bool = False, cache=None, layer: int = 0) -> torch.Tensor:
        """cache: a transformers EncoderDecoderCache during cached generation. Self-attention appends this step's
        K, V to the layer's past and attends to all of it; cross-attention projects the memory once per generation
        and reuses it (the memory does not change while decoding)."""
        q = self._split(self.q_proj(x))
        if cache is not None and context is not None:
            cross = cache.cross_attention_cache
            if cache.is_updated.get(layer):
                k, v = cross.layers[layer].keys, cross.layers[layer].values
            else:
                k, v = cross.update(self._split(self.k_proj(context)), self._split(self.v_proj(context)), layer)
                cache.is_updated[layer] = True
        else:
            source = x if context is None else context
            k, v = self._split(self.k_proj(source)), self._split(self.v_proj(source))
            if cache is not None:
                k, v = cache.self_attention_cache.update(k, v, layer)
        mask = attention_mask(key_mask)
        if causal:  # query i (absolute position lk - lq + i) sees keys 0..lk - lq + i
            lq, lk = q.shape[-2], k.shape[-2]
            tri = torch.ones(lq, lk, dtype=torch.bool, device=x.device).tril(lk - lq)
            mask = tri if mask is None else mask & tri
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class FeedForward(nn.Module):
    """act(x W1 + b1) W2 + b2 (the activation is config.hidden_act)."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act, self.drop = ACT2FN[act], nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class EncoderBlock(GradientCheckpointingLayer):
    """Pre-LN Transformer block: Z' = MHSA(LN(Z)) + Z; Z_out = FFN(LN(Z')) + Z' (docs/model.md "Blocks").
    A GradientCheckpointingLayer: `activation_checkpointing_enable()` on the model makes it keep only its input
    and recompute the rest in backward (checkpointing `forward`, so FSDP's hooks on the call stay outside)."""

    def __init__(self, dim: int, heads: int, ffn: int, act: str = "gelu", dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, heads, dropout=dropout)
        self.ffn = FeedForward(dim, ffn, act, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), key_mask=key_mask))
        return x + self.drop(self.ffn(self.ln2(x)))


class DecoderBlock(GradientCheckpointingLayer):
    """Pre-LN causal self-attention, cross-attention to the reasoning state R, FFN (checkpointable: EncoderBlock)."""

    def __init__(self, dim: int, heads: int, ffn: int, act: str = "gelu", dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(dim, eps=eps) for _ in range(3))
        self.self_attn = MultiHeadAttention(dim, heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout=dropout)
        self.ffn = FeedForward(dim, ffn, act, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                self_mask: torch.Tensor | None = None, cache=None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.ln1(x), key_mask=self_mask, causal=True, cache=cache, layer=layer))
        x = x + self.drop(self.cross_attn(self.ln2(x), memory, key_mask=memory_mask, cache=cache, layer=layer))
        return x + self.drop(self.ffn(self.ln3(x)))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the sequence of the real positions ([B, L, D] -> [B, D]); zero for an all-padding row."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def on_present(module, present: torch.Tensor, *inputs: torch.Tensor | None, into: torch.Tensor | None = None):
    """module(*inputs) computed on the samples where `present` [B] holds, each output scattered back to B rows:
    into `into` (a single output), else into zeros / False. Exact for a module whose samples do not see each other
    (the encoders and cross-attentions here normalise per position: LayerNorm, no batch statistics). In lockstep
    (trimodal/model/lockstep.py), a rank with no such sample runs the module on its first row and ties that output
    to its own (all zeros)."""
    if present.all():
        return module(*inputs)
    rows = present.nonzero().flatten()
    placeholder = None
    if not len(rows) and lockstep.active():  # another rank runs the module: run it on a placeholder row
        placeholder = module(*(x if x is None else x[:1] for x in inputs))
        out = tuple(y[:0] for y in placeholder) if isinstance(placeholder, tuple) else placeholder[:0]
    else:
        out = module(*(x if x is None else x[rows] for x in inputs))

    def scatter(y: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        return (y.new_zeros((len(present), *y.shape[1:])) if base is None else base).index_copy(0, rows, y)

    if not isinstance(out, tuple):
        result = scatter(out, into)
        return result if placeholder is None else lockstep.tie(result, placeholder)
    result = tuple(scatter(y) for y in out)
    if placeholder is not None:  # tied to the first output (the hidden states; the rest are masks)
        result = (lockstep.tie(result[0], placeholder), *result[1:])
    return result
