"""DeepSeek-VL's hybrid vision encoder (docs/model.md "DeepSeek-VL"): two towers over one image.

    low  (semantic): a SigLIP ViT at low resolution (384 px, patch 16 at full size)  -> S x S tokens, S = 24
    high (detail):   a SAM-B ViTDet at high resolution (1024 px, patch 16)           -> 256 x 64 x 64 map
                     interpolated to 4S x 4S (96 x 96), then two stride-2 3x3 convolutions (256 -> 512 -> 1024
                     channels at full size)                                           -> S x S tokens
Both yield S^2 tokens (576 at full size), one per cell of the same grid, so the adaptor
(model/deepseek_vl/vl_adaptor.py) can join them cell by cell. Built on transformers' SiglipVisionModel and
SamVisionEncoder, from config (random init), or around towers already loaded from local checkpoints
(model/deepseek_vl/pretrained.py).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SamVisionConfig, SiglipVisionConfig, SiglipVisionModel
from transformers.models.sam.modeling_sam import SamVisionEncoder


class HighResolutionTower(nn.Module):
    """SAM-B's encoder, its map resized to 4S x 4S and brought down to S x S by two stride-2 convolutions."""

    def __init__(self, config: SamVisionConfig, grid: int, channels: tuple[int, int],
                 encoder: SamVisionEncoder | None = None):
        super().__init__()
        self.grid = grid  # S: the low tower's tokens per side
        self.encoder = encoder if encoder is not None else SamVisionEncoder(config)
        c1, c2 = channels
        self.down = nn.Sequential(nn.Conv2d(config.output_channels, c1, 3, stride=2, padding=1),
                                  nn.Conv2d(c1, c2, 3, stride=2, padding=1))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, H] -> [B, S^2, c2]."""
        features = self.encoder(pixel_values).last_hidden_state  # [B, C, h, h] (the neck's output channels)
        features = F.interpolate(features, size=(4 * self.grid, 4 * self.grid), mode="bilinear",
                                 align_corners=False)
        return self.down(features).flatten(2).transpose(1, 2)


class HybridVisionEncoder(nn.Module):
    """`low_model` / `high_encoder`: pretrained towers of the configs' sizes, used instead of new ones."""

    def __init__(self, low: SiglipVisionConfig, high: SamVisionConfig, high_channels: tuple[int, int],
                 low_model: SiglipVisionModel | None = None, high_encoder: SamVisionEncoder | None = None):
        super().__init__()
        if low.image_size % low.patch_size:
            raise ValueError(f"low tower: image_size {low.image_size} is not a multiple of patch_size {low.patch_size}")
        self.grid = low.image_size // low.patch_size
        low = copy.deepcopy(low)
        low.vision_use_head = False  # the tokens are used, not SigLIP's pooled embedding: no head left untrained
        self.low = low_model if low_model is not None else SiglipVisionModel(low)
        self.high = HighResolutionTower(high, self.grid, high_channels, high_encoder)
        self.low_size, self.high_size = low.image_size, high.image_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values [B, 3, H, W] (normalised) -> (low [B, S^2, low width], high [B, S^2, high_channels[1]]):
        each tower sees the image resized to its own resolution."""
        low = F.interpolate(pixel_values, size=(self.low_size, self.low_size), mode="bilinear", align_corners=False)
        high = F.interpolate(pixel_values, size=(self.high_size, self.high_size), mode="bilinear",
                             align_corners=False)
        return self.low(low).last_hidden_state, self.high(high)
