"""Vision encoder (docs/model.md "Encoders"): ViT. Patches -> linear projection + positions -> pre-LN blocks."""
from __future__ import annotations

import torch
from torch import nn

from trimodal.model.layers import EncoderBlock
from trimodal.model.trimodal.configuration import TrimodalConfig


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, P*P*C]; patches in row-major order (left to right, then top to bottom)."""
    b, c, h, w = pixel_values.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image {h}x{w} is not divisible into {patch_size}x{patch_size} patches")
    x = pixel_values.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch_size) * (w // patch_size), patch_size * patch_size * c)


def conv_stem(channels: int, dim: int, patch_size: int) -> nn.Sequential:
    """log2(patch_size) stride-2 3x3 convolutions, widths doubling up to `dim`: one token per patch_size^2
    region, as patchify gives, but from features that see edges and corners (Xiao et al. 2021, "Early
    convolutions help transformers see better")."""
    depth = patch_size.bit_length() - 1
    if patch_size < 2 or 2**depth != patch_size:
        raise ValueError(f"vision_stem='conv' needs a power-of-two patch_size >= 2, got {patch_size}")
    widths = [channels] + [max(1, dim // 2 ** (depth - 1 - i)) for i in range(depth)]
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1))
        if i < depth - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class VisionEncoder(nn.Module):
    """H_vis = blocks(x_p W_proj + b_proj + P_pos), then LayerNorm and a projection to d_model (with
    config.vision_stem = "conv", a small convolution stack replaces x_p W_proj + b_proj); x_p are patches of
    the per-channel normalised image (x - mean) / std (config.image_mean / image_std): without it, a light
    background puts every patch far off zero and the first projection has to learn the offset."""

    def __init__(self, config: TrimodalConfig):
        super().__init__()
        c = config
        self.patch_size = c.patch_size
        self.mean, self.std = c.image_mean, c.image_std  # plain floats: nothing to save, nothing left on meta
        if c.vision_stem not in ("patch", "conv"):
            raise ValueError(f"vision_stem must be 'patch' or 'conv', not {c.vision_stem!r}")
        self.stem = conv_stem(c.num_channels, c.vision_dim, c.patch_size) if c.vision_stem == "conv" else None
        self.patch_proj = (nn.Linear(c.patch_size * c.patch_size * c.num_channels, c.vision_dim)
                           if self.stem is None else None)
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
        pixels = (pixel_values - mean) / std
        if self.stem is None:
            x = self.patch_proj(patchify(pixels, self.patch_size))
        else:
            if patch_mask is not None:  # hide masked patches' pixels (0 = the mean) from the convolutions too
                b, _, h, w = pixels.shape
                grid = patch_mask.reshape(b, 1, h // self.patch_size, w // self.patch_size)
                hidden = grid.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
                pixels = pixels.masked_fill(hidden, 0.0)
            pixels = pixels.contiguous(memory_format=torch.channels_last)  # faster on CPU: audio.ConvSubsampling
            x = self.stem(pixels).flatten(2).transpose(1, 2)
        if patch_mask is not None:
            x = torch.where(patch_mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        return self.out_proj(self.norm(x))
