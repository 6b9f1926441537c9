"""Encoders initialised from a local transformers checkpoint folder, projected to d_model.

Drop-in replacements for model/vision.py, text.py and audio.py (same forward signatures), chosen by
`build_encoders(config)` when config.vision_pretrained / text_pretrained / audio_pretrained name a folder.
Weights load with from_pretrained(use_safetensors=True); nothing is fetched from a hub.

    vision  vit, clip / clip_vision_model, siglip / siglip_vision_model. Pixels in [0, 1] are normalised with the
            folder's preprocessor_config.json mean/std when present, else the model family's defaults. The CLS
            token (ViT, CLIP) is dropped so the output has one position per patch. Masked patches (MIM) are
            replaced by a learned embedding through a forward hook on the patch-embedding convolution.
    text    roberta, bert. The checkpoint's vocabulary is used as is: train with the checkpoint's tokenizer
            (config.vocab_size must equal the checkpoint's).
    audio   whisper (its encoder, x2 subsampling, fixed 2 * max_source_positions input frames: the log-Mel is
            padded to that, outputs are pooled by 2 to the project's x4 frame rate and cut to the real length);
            wav2vec2 (its convolutional front end reads raw waveform, which the shards do not keep: our own
            ConvSubsampling turns log-Mel into conv_dim[-1] features for its feature projection + encoder).
            Masked frames (MAM) are zeroed in the log-Mel input, 4 input frames per output frame.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig

from model.audio import SUBSAMPLING, AudioEncoder, ConvSubsampling, frame_mask, subsampled_lengths
from model.configuration import TrimodalConfig
from model.text import TextEncoder
from model.vision import VisionEncoder

VISION_TYPES = {"vit": "ViTModel", "clip": "CLIPVisionModel", "clip_vision_model": "CLIPVisionModel",
                "siglip": "SiglipVisionModel", "siglip_vision_model": "SiglipVisionModel"}
TEXT_TYPES = {"roberta": "RobertaModel", "bert": "BertModel"}
AUDIO_TYPES = {"whisper": "WhisperModel", "wav2vec2": "Wav2Vec2Model"}
DEFAULT_STATS = {"vit": (0.5, 0.5), "siglip": (0.5, 0.5),
                 "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}


def _load(path: str, kinds: dict[str, str], what: str):
    folder = Path(path)
    if not (folder / "config.json").exists():
        raise ValueError(f"{what}_pretrained={path!r}: no transformers checkpoint (config.json) in that folder")
    model_type = AutoConfig.from_pretrained(folder).model_type
    if model_type not in kinds:
        raise ValueError(f"{what}_pretrained={path!r}: model_type {model_type!r} is not supported; "
                         f"supported: {sorted(kinds)}")
    import transformers

    cls = getattr(transformers, kinds[model_type])
    extra = {"add_pooling_layer": False} if kinds[model_type] in ("ViTModel", "RobertaModel", "BertModel") else {}
    if torch.empty(0).device.type == "meta":
        # inside TrimodalForConditionalGeneration.from_pretrained: the structure is enough, the saved
        # trimodal checkpoint supplies every weight
        return model_type, cls(cls.config_class.from_pretrained(folder), **extra)
    return model_type, cls.from_pretrained(folder, use_safetensors=True, **extra)


class PretrainedVisionEncoder(nn.Module):
    def __init__(self, path: str, config: TrimodalConfig):
        super().__init__()
        model_type, self.model = _load(path, VISION_TYPES, "vision")
        vcfg = self.model.config
        if vcfg.image_size != config.image_size or vcfg.patch_size != config.patch_size:
            raise ValueError(f"vision_pretrained={path!r} takes {vcfg.image_size}px images in {vcfg.patch_size}px "
                             f"patches; config has image_size={config.image_size}, patch_size={config.patch_size}")
        family = model_type.split("_")[0]
        mean, std = DEFAULT_STATS[family]
        preprocessor = Path(path) / "preprocessor_config.json"
        if preprocessor.exists():
            stats = json.loads(preprocessor.read_text())
            mean, std = stats.get("image_mean", mean), stats.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1) * torch.ones(3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1) * torch.ones(3, 1, 1),
                             persistent=False)
        self.has_cls = family in ("vit", "clip")
        self.mask_embedding = nn.Parameter(torch.zeros(vcfg.hidden_size))
        self.out_proj = nn.Linear(vcfg.hidden_size, config.d_model)
        conv = next(m for m in self.model.modules() if isinstance(m, nn.Conv2d))  # the patch embedding
        conv.register_forward_hook(self._mask_patches)
        self._patch_mask: torch.Tensor | None = None

    def _mask_patches(self, module, args, output: torch.Tensor) -> torch.Tensor | None:
        if self._patch_mask is None:
            return None
        b, d, h, w = output.shape
        mask = self._patch_mask.reshape(b, 1, h, w)
        return torch.where(mask, self.mask_embedding.to(output.dtype).reshape(1, d, 1, 1), output)

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._patch_mask = patch_mask
        try:
            hidden = self.model(pixel_values=(pixel_values - self.mean) / self.std).last_hidden_state
        finally:
            self._patch_mask = None
        return self.out_proj(hidden[:, 1:] if self.has_cls else hidden)


class PretrainedTextEncoder(nn.Module):
    def __init__(self, path: str, config: TrimodalConfig):
        super().__init__()
        _, self.model = _load(path, TEXT_TYPES, "text")
        if self.model.config.vocab_size != config.vocab_size:
            raise ValueError(f"text_pretrained={path!r} has a {self.model.config.vocab_size}-token vocabulary but "
                             f"config.vocab_size={config.vocab_size}: train with that checkpoint's tokenizer")
        self.out_proj = nn.Linear(self.model.config.hidden_size, config.d_model)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.model(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state)


def _mask_mel(mel: torch.Tensor, frame_mask_out: torch.Tensor | None) -> torch.Tensor:
    """Zero the SUBSAMPLING log-Mel frames behind every masked output frame."""
    if frame_mask_out is None:
        return mel
    keep = ~frame_mask_out.repeat_interleave(SUBSAMPLING, dim=1)[:, : mel.shape[-1]]
    keep = nn.functional.pad(keep, (0, mel.shape[-1] - keep.shape[1]), value=True)
    return mel * keep[:, None, :]


class PretrainedAudioEncoder(nn.Module):
    def __init__(self, path: str, config: TrimodalConfig):
        super().__init__()
        self.kind, model = _load(path, AUDIO_TYPES, "audio")
        acfg = model.config
        if self.kind == "whisper":
            if acfg.num_mel_bins != config.n_mels:
                raise ValueError(f"audio_pretrained={path!r} expects {acfg.num_mel_bins} mel bins; "
                                 f"config.n_mels={config.n_mels}")
            self.model = model.get_encoder()
            self.input_frames = 2 * acfg.max_source_positions
            hidden = acfg.d_model
        else:
            self.model = model
            self.subsample = ConvSubsampling(config.n_mels, acfg.conv_dim[-1], channels=64)
            hidden = acfg.hidden_size
        self.out_proj = nn.Linear(hidden, config.d_model)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor,
                frame_mask_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mel = _mask_mel(mel, frame_mask_out)
        out_lengths = subsampled_lengths(lengths)
        frames = int(subsampled_lengths(torch.tensor(mel.shape[-1])))
        mask = frame_mask(out_lengths, frames)
        if self.kind == "whisper":
            if mel.shape[-1] > self.input_frames:
                raise ValueError(f"audio of {mel.shape[-1]} frames > the checkpoint's {self.input_frames}")
            padded = nn.functional.pad(mel * frame_mask(lengths, mel.shape[-1])[:, None, :],
                                       (0, self.input_frames - mel.shape[-1]))
            hidden = self.model(input_features=padded).last_hidden_state  # x2 subsampled
            hidden = nn.functional.avg_pool1d(hidden.transpose(1, 2), 2, ceil_mode=True).transpose(1, 2)
            hidden = hidden[:, :frames]
        else:
            features, _ = self.subsample(mel, lengths)
            projected, _ = self.model.feature_projection(features)
            hidden = self.model.encoder(projected, attention_mask=mask.long()).last_hidden_state
        return self.out_proj(hidden), mask


def build_encoders(config: TrimodalConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(vision, text, audio): a pretrained wrapper where the config names a folder, else the project's encoder."""
    vision = PretrainedVisionEncoder(config.vision_pretrained, config) if config.vision_pretrained \
        else VisionEncoder(config)
    text = PretrainedTextEncoder(config.text_pretrained, config) if config.text_pretrained else TextEncoder(config)
    audio = PretrainedAudioEncoder(config.audio_pretrained, config) if config.audio_pretrained \
        else AudioEncoder(config)
    return vision, text, audio
