"""Vision encoder (seed 001 sections 2.1, 4.1): ViT. Patches -> linear projection + positions -> pre-LN blocks."""
from __future__ import annotations

import torch
from torch import nn

from model.configuration import TrimodalConfig
from model.layers import EncoderBlock


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, P*P*C]; patches in row-major order (left to right, then top to bottom)."""
    b, c, h, w = pixel_values.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image {h}x{w} is not divisible into {patch_size}x{patch_size} patches")
    x = pixel_values.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch_size) * (w // patch_size), patch_size * patch_size * c)


class VisionEncoder(nn.Module):
    """H_vis = blocks(x_p W_proj + b_proj + P_pos), then LayerNorm and a projection to d_model; x_p are patches of
    the per-channel normalised image (x - mean) / std (config.image_mean / image_std): without it, a light
    background puts every patch far off zero and the first projection has to learn the offset."""

    def __init__(self, config: TrimodalConfig):
        super().__init__()
        c = config
        self.patch_size = c.patch_size
        self.mean, self.std = c.image_mean, c.image_std  # plain floats: nothing to save, nothing left on meta
        self.patch_proj = nn.Linear(c.patch_size * c.patch_size * c.num_channels, c.vision_dim)
        self.pos = nn.Parameter(torch.zeros(1, c.num_patches, c.vision_dim))
        self.mask_embedding = nn.Parameter(torch.zeros(c.vision_dim))  # replaces masked patches (MIM)
        self.blocks = nn.ModuleList(EncoderBlock(c.vision_dim, c.vision_heads, c.vision_ffn, c.hidden_act, c.dropout,
                                                 c.layer_norm_eps) for _ in range(c.vision_layers))
        self.norm = nn.LayerNorm(c.vision_dim, eps=c.layer_norm_eps)
        self.out_proj = nn.Linear(c.vision_dim, c.d_model) if c.vision_dim != c.d_model else nn.Identity()

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """pixel_values [B, C, H, W] in [0, 1]; patch_mask [B, N] bool marks patches hidden for MIM."""
        mean = torch.tensor(self.mean, dtype=pixel_values.dtype, device=pixel_values.device)[:, None, None]
        std = torch.tensor(self.std, dtype=pixel_values.dtype, device=pixel_values.device)[:, None, None]
        x = self.patch_proj(patchify((pixel_values - mean) / std, self.patch_size))
        if patch_mask is not None:
            x = torch.where(patch_mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        return self.out_proj(self.norm(x))
