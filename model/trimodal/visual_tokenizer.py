"""Discrete visual tokens for L_MIM (docs/model.md "Objectives": log P(tokenizer(p) | Patches_obs, context)).

BEiT takes its targets from a pretrained dVAE; nothing may be downloaded here, so the tokenizer is a
random-hyperplane locality-sensitive hash instead. Each patch is contrast-normalised (minus its mean, divided by
its std + 1e-6, over all its pixels and channels), projected on `bits` fixed Gaussian directions, and the signs
of the projections are packed into an integer code in [0, 2**bits). Patches with similar structure (edges,
gradients, textures) fall on the same side of most hyperplanes and share codes; brightness and contrast do not
change a code. A flat patch (std below FLAT_STD, far under one 8-bit grey level of a [0, 1] image) is set to
all zeros rather than left to float rounding noise amplified by the division; its projections are 0 and count
as positive bits, so every flat patch gets the deterministic code 2**bits - 1.

The projection is drawn from torch.Generator().manual_seed(seed) and kept out of the state dict
(persistent=False): the same seed always gives the same tokens and checkpoints do not carry it.
"""
from __future__ import annotations

import torch
from torch import nn

from trimodal.model.trimodal.vision import patchify

FLAT_STD = 1e-4


class PatchHashTokenizer(nn.Module):
    def __init__(self, patch_size: int, channels: int = 3, bits: int = 8, seed: int = 0):
        super().__init__()
        if not 1 <= bits <= 62:
            raise ValueError(f"bits must be in [1, 62] to pack into int64, got {bits}")
        self.patch_size, self.channels, self.bits = patch_size, channels, bits
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(patch_size * patch_size * channels, bits, generator=generator)
        self.register_buffer("projection", projection, persistent=False)
        self.register_buffer("powers", 2 ** torch.arange(bits, dtype=torch.long), persistent=False)

    @property
    def vocab_size(self) -> int:
        return 2**self.bits

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, C, H, W] -> codes [B, N] int64, N = (H/P)(W/P), patches in the ViT's row-major order
        (model.vision.patchify: left to right, then top to bottom), so code n is the target of patch n."""
        patches = patchify(pixel_values.float(), self.patch_size)  # [B, N, P*P*C]
        patches = patches - patches.mean(-1, keepdim=True)
        std = patches.std(-1, correction=0, keepdim=True)
        patches = torch.where(std < FLAT_STD, 0.0, patches / (std + 1e-6))
        positive = patches @ self.projection.to(patches.device) >= 0  # sign(0) counts as positive
        return (positive.long() * self.powers.to(patches.device)).sum(-1)
