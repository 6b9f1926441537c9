"""Multimodal fusion (docs/model.md "Fusion"): pairwise gated cross-attention, then hierarchical joint fusion.

Gated cross-attention, as docs/model.md "Fusion" writes it, for target t and source s:
    CA = softmax((H_t W_Q)(H_s W_K)^T / sqrt(d_k)) (H_s W_V)           (multi-head, then W_O)
    g  = sigmoid(Linear([H_t, CA]))                                     (a gate per position and feature)
    H  = (1 - g) * H_t + g * Project(CA)
Every ordered pair of present modalities has its own module; for a target, the sources are applied in turn
(image <- text <- audio order, skipping itself). A sample that lacks the source gets g = 0, i.e. H = H_t (so
the pair runs on the samples holding both modalities only).
Hierarchical joint fusion then runs Transformer blocks over the concatenation of the fused streams (with a
learned modality embedding each), giving H_multi and its mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from trimodal.model import lockstep
from trimodal.model.layers import EncoderBlock, MultiHeadAttention, on_present
from trimodal.model.trimodal.configuration import TrimodalConfig

MODALITIES = ("image", "text", "audio")
PAIRS = tuple((s, t) for t in MODALITIES for s in MODALITIES if s != t)  # (source, target), in the order they run


@dataclass
class Stream:
    """One modality's encoder output for the batch: hidden [B, L, D], mask [B, L] (False for absent samples)."""

    hidden: torch.Tensor
    mask: torch.Tensor

    @property
    def present(self) -> torch.Tensor:
        return self.mask.any(dim=-1)


class GatedCrossAttention(GradientCheckpointingLayer):  # checkpointable, as layers.EncoderBlock
    def __init__(self, dim: int, heads: int, gate_bias_init: float):
        super().__init__()
        self.cross_attn = MultiHeadAttention(dim, heads)
        self.gate = nn.Linear(2 * dim, dim)
        self.gate.opening = gate_bias_init  # the model's _init_weights reads it (it visits Linears, not this module)
        self.project = nn.Linear(dim, dim)
        self.reset_gate()

    def reset_gate(self) -> None:
        """Every gate starts at g = sigmoid(gate_bias_init), whatever its inputs (zero weight)."""
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, self.gate.opening)

    def forward(self, target: torch.Tensor, source: Stream) -> torch.Tensor:
        ca = self.cross_attn(target, source.hidden, key_mask=source.mask)
        g = torch.sigmoid(self.gate(torch.cat([target, ca], dim=-1)))
        g = g * source.present[:, None, None].to(g.dtype)
        return (1 - g) * target + g * self.project(ca)


class MultimodalFusion(nn.Module):
    def __init__(self, config: TrimodalConfig):
        super().__init__()
        c = config
        self.pairs = nn.ModuleDict({f"{s}_to_{t}": GatedCrossAttention(c.d_model, c.fusion_heads, c.gate_bias_init)
                                    for t in MODALITIES for s in MODALITIES if s != t})
        self.modality_embedding = nn.Embedding(len(MODALITIES), c.d_model)
        self.joint = nn.ModuleList(EncoderBlock(c.d_model, c.fusion_heads, c.reasoning_ffn, c.hidden_act, c.dropout,
                                                c.layer_norm_eps) for _ in range(c.joint_fusion_layers))

    def cross(self, pair: str, target: torch.Tensor, target_present: torch.Tensor, source: Stream) -> torch.Tensor:
        """One pair's gated cross-attention, run on the samples that hold both modalities only: where the source
        is absent g = 0 leaves H_t as it is, and a sample without the target has no positions anything reads."""
        return on_present(lambda h, s, m: self.pairs[pair](h, Stream(s, m)), target_present & source.present,
                          target, source.hidden, source.mask, into=target)

    def forward(self, streams: dict[str, Stream]) -> tuple[torch.Tensor, torch.Tensor, dict[str, slice]]:
        """streams: the modalities present in the batch -> (H_multi [B, sum L, D], mask, slice per modality).
        A pair runs when some sample holds both its modalities (in lockstep: some sample of some rank; a rank
        that lacks one of the two streams runs the pair on a placeholder, trimodal/model/lockstep.py)."""
        held = [t in streams and s in streams and bool((streams[t].present & streams[s].present).any())
                for s, t in PAIRS]
        run = dict(zip(PAIRS, lockstep.needed(*held), strict=True))
        fused, loose = {}, []
        for target in MODALITIES:
            h = streams[target].hidden if target in streams else None
            for source in MODALITIES:
                if source == target or not run[source, target]:
                    continue
                if target in streams and source in streams:
                    h = self.cross(f"{source}_to_{target}", h, streams[target].present, streams[source])
                    continue
                placeholder = self.pairs[f"{source}_to_{target}"](*self.placeholder(streams))  # lockstep
                if h is None:
                    loose.append(placeholder)  # no target here: tied to the fused sequence below
                else:
                    h = lockstep.tie(h, placeholder)
            if h is not None:
                fused[target] = h + self.modality_embedding.weight[MODALITIES.index(target)]
        order = [m for m in MODALITIES if m in fused]
        hidden = torch.cat([fused[m] for m in order], dim=1)
        if loose:
            hidden = lockstep.tie(hidden, loose)
        mask = torch.cat([streams[m].mask for m in order], dim=1)
        segments, start = {}, 0
        for m in order:
            segments[m] = slice(start, start + fused[m].shape[1])
            start += fused[m].shape[1]
        for block in self.joint:
            hidden = block(hidden, key_mask=mask)
        return hidden, mask, segments

    @staticmethod
    def placeholder(streams: dict[str, Stream]) -> tuple[torch.Tensor, Stream]:
        """A target and a source of one position each, for a pair this rank's streams cannot feed."""
        like = next(iter(streams.values())).hidden
        zeros = like.new_zeros(1, 1, like.shape[-1])
        return zeros, Stream(zeros, torch.ones(1, 1, dtype=torch.bool, device=like.device))
