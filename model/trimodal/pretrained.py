"""Encoders initialised from a local transformers checkpoint folder, projected to d_model.

Drop-in replacements for model/trimodal/vision.py, text.py and audio.py (same forward signatures and output shapes),
chosen by `build_encoders(config)` when config.vision_pretrained / text_pretrained / audio_pretrained name a
folder. The family is read from AutoConfig.from_pretrained(folder).model_type. Weights load only with
from_pretrained(folder, use_safetensors=True, local_files_only=True): nothing is fetched from a hub and no
pickle is unpickled. Every weight of the wrapped model must come from the folder (a missing one is an error,
not a silent random init), except the few listed in LoadPlan.may_miss.

vision  vit (ViTModel), clip / clip_vision_model (CLIPVisionModel), siglip / siglip_vision_model
        (SiglipVisionModel); a full CLIP or SigLIP checkpoint gives its vision tower (its .vision_config).
        - image_size, patch_size and num_channels must equal the checkpoint's (ValueError otherwise), so that
          N = config.num_patches.
        - pixels in [0, 1] are normalised with image_mean / image_std of the folder's preprocessor_config.json
          (none if it says do_normalize: false); without that file, with the defaults of the family's
          transformers image processor: ViT and SigLIP 0.5 / 0.5 (IMAGENET_STANDARD), CLIP the OpenAI CLIP
          mean / std (OPENAI_CLIP). They are buffers saved with the trimodal checkpoint.
        - the output keeps the patch positions only (ViT and CLIP's CLS token is dropped; SigLIP has none),
          in row-major order as model.vision.patchify.
        - patch_mask (MIM): a learned embedding replaces the masked patch embeddings before the position
          embeddings are added. ViT does this itself (ViTModel(use_mask_token=True), forward(bool_masked_pos=),
          the token is new, zero-initialised); CLIP and SigLIP have no such input, so a forward hook on their
          patch-embedding convolution (get_input_embeddings()) swaps in this module's mask_embedding.
        - SigLIP is built with vision_use_head=False (the pooling head is unused); CLIP's post_layernorm only
          touches the pooled output, so it stays unused (no gradient).
text    roberta (RobertaModel), bert (BertModel), without pooler. The checkpoint's own embedding table is used
        as is, so the project tokenizer must be the checkpoint's tokenizer: config.vocab_size must equal the
        checkpoint's (ValueError otherwise), and config.pad_token_id / mask_token_id / bos / eos should be that
        tokenizer's ids too (not checked: mask_token_id matters for MLM, pad_token_id for default masks).
        Texts longer than the checkpoint's position table raise ValueError.
audio   Output frames follow the project's x4 subsampling exactly (subsampled_lengths, frame_mask), as
        AudioEncoder, so frame_mask_out [B, T/4] and the MAM targets line up.
        whisper (the encoder of WhisperModel; the decoder is dropped): n_mels must equal num_mel_bins. The
        log-Mel is zeroed past each length and zero-padded to the fixed 2 * max_source_positions frames Whisper
        takes (longer input: ValueError); its x2 output is average-pooled in pairs (ceil) to the x4 rate and cut
        to ceil(T / 4) frames. Masked frames: a forward hook on its conv2 replaces the two Whisper frames behind
        each masked frame with mask_embedding (before its GELU and positions). Whisper's own feature extractor
        scales log-Mel as (max(log10, max - 8) + 4) / 4; our features should match for the weights to be useful.
        wav2vec2 (Wav2Vec2Model): its convolutional front end reads raw waveform, which the shards do not keep,
        so our own ConvSubsampling(n_mels, conv_dim[-1], channels=audio_dim) - new, randomly initialised - turns
        log-Mel into the features that its feature_projection and encoder take (the waveform front end and any
        adapter are dropped). Masked frames: mask_embedding (initialised from the checkpoint's
        masked_spec_embed, where wav2vec2 itself masks) replaces frames after feature_projection.
        As in AudioEncoder, masking acts after the convolutions, whose receptive fields overlap neighbouring
        frames.

Inside TrimodalForConditionalGeneration.from_pretrained (built on the meta device) only the structure is
built from the folder's config.json; the saved trimodal checkpoint then supplies every weight. The folders
must therefore still exist when a trimodal checkpoint is loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from trimodal.model.trimodal.audio import AudioEncoder, ConvSubsampling, frame_mask, subsampled_lengths
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.text import TextEncoder
from trimodal.model.trimodal.vision import VisionEncoder


@dataclass(frozen=True)
class LoadPlan:
    """How to load one transformers class for our use."""

    class_name: str
    config_overrides: dict = field(default_factory=dict)  # set on the checkpoint's config before building
    init_kwargs: dict = field(default_factory=dict)  # passed to the model's __init__
    may_miss: tuple[str, ...] = ()  # weight-name prefixes the folder need not hold (new or unused here)


VIT = LoadPlan("ViTModel", init_kwargs={"add_pooling_layer": False, "use_mask_token": True},
               may_miss=("embeddings.mask_token",))
CLIP = LoadPlan("CLIPVisionModel")
SIGLIP = LoadPlan("SiglipVisionModel", config_overrides={"vision_use_head": False})
VISION_TYPES = {"vit": VIT, "clip": CLIP, "clip_vision_model": CLIP, "siglip": SIGLIP, "siglip_vision_model": SIGLIP}
TEXT_TYPES = {name: LoadPlan(cls, init_kwargs={"add_pooling_layer": False})
              for name, cls in (("roberta", "RobertaModel"), ("bert", "BertModel"))}
AUDIO_TYPES = {"whisper": LoadPlan("WhisperModel", may_miss=("decoder.",)),
               "wav2vec2": LoadPlan("Wav2Vec2Model", config_overrides={"add_adapter": False},
                                    may_miss=("feature_extractor.", "masked_spec_embed"))}
# defaults of the families' transformers image processors (ViTImageProcessor, CLIPImageProcessor, ...)
DEFAULT_PIXEL_STATS = {"ViTModel": (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD),
                       "SiglipVisionModel": (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD),
                       "CLIPVisionModel": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)}


def read_model_type(path: str | None, supported: dict[str, LoadPlan], field_name: str) -> str:
    """The folder's model_type, or a ValueError naming the path, what was found and what is supported."""
    folder = Path(path or "")
    if not path or not (folder / "config.json").is_file():
        raise ValueError(f"{field_name}={path!r}: no transformers checkpoint there (no config.json); "
                         f"supported model types: {sorted(supported)}")
    try:
        model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
    except (ValueError, KeyError) as error:  # a model_type transformers does not know
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        if model_type in supported:
            raise ValueError(f"{field_name}={path!r}: unreadable config.json: {error}") from error
    if model_type not in supported:
        raise ValueError(f"{field_name}={path!r}: model_type {model_type!r} is not supported here; "
                         f"supported model types: {sorted(supported)}")
    return model_type


def load_pretrained(path: str | None, supported: dict[str, LoadPlan],
                    field_name: str) -> tuple[LoadPlan, PreTrainedModel]:
    plan = supported[read_model_type(path, supported, field_name)]
    folder = Path(path)
    cls = getattr(transformers, plan.class_name)
    # a full CLIP / SigLIP config.json yields its vision_config here (base_config_key)
    hf_config = cls.config_class.from_pretrained(folder, local_files_only=True, **plan.config_overrides)
    if torch.get_default_device().type == "meta":
        # inside TrimodalForConditionalGeneration.from_pretrained: the trimodal checkpoint supplies the weights
        return plan, cls(hf_config, **plan.init_kwargs)
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{field_name}={path!r}: no *.safetensors weights in the folder; only safetensors are "
                         f"loaded (re-save the model with save_pretrained)")
    model, info = cls.from_pretrained(folder, config=hf_config, use_safetensors=True, local_files_only=True,
                                      output_loading_info=True, **plan.init_kwargs)
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(plan.may_miss))
    if missing or info["mismatched_keys"]:
        raise ValueError(f"{field_name}={path!r}: the checkpoint does not hold the weights of {plan.class_name}: "
                         f"missing {missing[:5]}, mismatched {sorted(info['mismatched_keys'])[:5]}")
    return plan, model


def pixel_stats(folder: Path, class_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as [3, 1, 1]: the folder's preprocessor_config.json, else the family's defaults."""
    mean, std = DEFAULT_PIXEL_STATS[class_name]
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        settings = json.loads(preprocessor.read_text())
        if not settings.get("do_normalize", True):
            mean, std = 0.0, 1.0
        else:
            mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
    return tuple(torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1).expand(3, 1, 1).clone()
                 for v in (mean, std))


class PretrainedVisionEncoder(nn.Module):
    """ViT / CLIP / SigLIP vision tower: pixels [B, 3, S, S] in [0, 1] -> patch states [B, N, d_model]."""

    def __init__(self, path: str, config: TrimodalConfig):
        super().__init__()
        plan, self.model = load_pretrained(path, VISION_TYPES, "vision_pretrained")
        vcfg = self.model.config
        ours, theirs = ((config.image_size, config.patch_size, config.num_channels),
                        (vcfg.image_size, vcfg.patch_size, vcfg.num_channels))
        if ours != theirs:
            raise ValueError(f"vision_pretrained={path!r} takes {theirs[0]}px images in {theirs[1]}px patches of "
                             f"{theirs[2]} channels; config has image_size, patch_size, num_channels = {ours}")
        self.image_size, self.num_patches = config.image_size, config.num_patches
        mean, std = pixel_stats(Path(path), plan.class_name)
        self.register_buffer("pixel_mean", mean)  # persistent: meta-device loading fills it
        self.register_buffer("pixel_std", std)
        self.uses_mask_token = plan is VIT  # ViT masks through its own API (bool_masked_pos)
        if not self.uses_mask_token:
            self.mask_embedding = nn.Parameter(torch.zeros(vcfg.hidden_size))
            self.model.get_input_embeddings().register_forward_hook(self._mask_patches)
        self._patch_mask: torch.Tensor | None = None
        self.out_proj = nn.Linear(vcfg.hidden_size, config.d_model)

    def _mask_patches(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook on the patch convolution ([B, D, h, w]): masked patches -> mask_embedding."""
        if self._patch_mask is None:
            return None
        b, d, h, w = output.shape
        return torch.where(self._patch_mask.reshape(b, 1, h, w), self.mask_embedding.to(output.dtype)[:, None, None],
                           output)

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """pixel_values [B, C, H, W] in [0, 1]; patch_mask [B, N] bool marks patches hidden for MIM."""
        if tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"images of {tuple(pixel_values.shape[-2:])} px; the checkpoint takes "
                             f"{self.image_size}x{self.image_size}")
        pixels = (pixel_values - self.pixel_mean) / self.pixel_std
        if self.uses_mask_token:
            hidden = self.model(pixel_values=pixels, bool_masked_pos=patch_mask).last_hidden_state
        else:
            self._patch_mask = patch_mask
            try:
                hidden = self.model(pixel_values=pixels).last_hidden_state
            finally:
                self._patch_mask = None
        return self.out_proj(hidden[:, -self.num_patches:])  # the patches follow the CLS token, if any


class PretrainedTextEncoder(nn.Module):
    """RoBERTa / BERT: token ids of the checkpoint's tokenizer [B, L] -> [B, L, d_model]."""

    def __init__(self, path: str, config: TrimodalConfig):
        super().__init__()
        plan, self.model = load_pretrained(path, TEXT_TYPES, "text_pretrained")
        tcfg = self.model.config
        if tcfg.vocab_size != config.vocab_size:
            raise ValueError(f"text_pretrained={path!r} has its own {tcfg.vocab_size}-token embedding table, used "
                             f"as is, so the project tokenizer must be that checkpoint's tokenizer; "
                             f"config.vocab_size={config.vocab_size} differs")
        # RoBERTa numbers positions from pad_token_id + 1
        self.max_positions = tcfg.max_position_embeddings - (tcfg.pad_token_id + 1 if plan.class_name ==
                                                             "RobertaModel" else 0)
        self.out_proj = nn.Linear(tcfg.hidden_size, config.d_model)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.max_positions:
            raise ValueError(f"text of {input_ids.shape[1]} tokens > the checkpoint's {self.max_positions} positions")
        return self.out_proj(self.model(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state)


class PretrainedAudioEncoder(nn.Module):
    """Whisper encoder / wav2vec2 over log-Mel: (mel [B, n_mels, T], lengths) -> ([B, T/4, d_model], mask)."""

    def __init__(self, path: str, config: TrimodalConfig):
        super().__init__()
        plan, model = load_pretrained(path, AUDIO_TYPES, "audio_pretrained")
        acfg = model.config
        self.is_whisper = plan.class_name == "WhisperModel"
        if self.is_whisper:
            if acfg.num_mel_bins != config.n_mels:
                raise ValueError(f"audio_pretrained={path!r} takes {acfg.num_mel_bins} mel bins; "
                                 f"config.n_mels={config.n_mels}")
            self.model = model.get_encoder()  # the decoder is dropped
            self.input_frames = acfg.max_source_positions * self.model.conv1.stride[0] * self.model.conv2.stride[0]
            self.model.conv2.register_forward_hook(self._mask_frames)
            self._frame_mask: torch.Tensor | None = None
            width = acfg.d_model
        else:
            self.subsample = ConvSubsampling(config.n_mels, acfg.conv_dim[-1], channels=config.audio_dim)
            self.feature_projection, self.encoder = model.feature_projection, model.encoder
            width = acfg.hidden_size
        spec_embed = getattr(model, "masked_spec_embed", None)
        self.mask_embedding = nn.Parameter(spec_embed.detach().clone() if spec_embed is not None
                                           else torch.zeros(width))
        self.out_proj = nn.Linear(width, config.d_model)

    def _mask_frames(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook on Whisper's conv2 ([B, D, P], x2 rate): the 2 frames behind a masked frame -> embedding."""
        if self._frame_mask is None:
            return None
        masked = self._frame_mask.repeat_interleave(2, dim=1)[:, : output.shape[-1]]
        masked = nn.functional.pad(masked, (0, output.shape[-1] - masked.shape[1]), value=False)
        return torch.where(masked[:, None, :], self.mask_embedding.to(output.dtype)[None, :, None], output)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor,
                frame_mask_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, n_mels, T], lengths [B]; frame_mask_out [B, T/4] bool marks subsampled frames hidden for MAM."""
        frames = int(subsampled_lengths(torch.tensor(mel.shape[-1])))
        mask = frame_mask(subsampled_lengths(lengths), frames)
        if self.is_whisper:
            hidden = self._whisper(mel, lengths, frame_mask_out)[:, :frames]
        else:
            features, _ = self.subsample(mel, lengths)
            hidden, _ = self.feature_projection(features)
            if frame_mask_out is not None:
                hidden = torch.where(frame_mask_out.unsqueeze(-1), self.mask_embedding.to(hidden.dtype), hidden)
            # a bool mask: the encoder zeroes padded frames with hidden[~mask], which misindexes an integer mask
            hidden = self.encoder(hidden, attention_mask=mask).last_hidden_state
        return self.out_proj(hidden), mask

    def _whisper(self, mel: torch.Tensor, lengths: torch.Tensor,
                 frame_mask_out: torch.Tensor | None) -> torch.Tensor:
        if mel.shape[-1] > self.input_frames:
            raise ValueError(f"audio of {mel.shape[-1]} log-Mel frames > the {self.input_frames} Whisper takes")
        mel = mel * frame_mask(lengths, mel.shape[-1])[:, None, :]  # zero padding, whatever the batch's length
        self._frame_mask = frame_mask_out
        try:
            hidden = self.model(input_features=nn.functional.pad(mel, (0, self.input_frames - mel.shape[-1])))
        finally:
            self._frame_mask = None
        # x2 -> x4: pairs averaged; ceil keeps a last odd frame, as subsampled_lengths rounds up
        return nn.functional.avg_pool1d(hidden.last_hidden_state.transpose(1, 2), 2, ceil_mode=True).transpose(1, 2)


def build_encoders(config: TrimodalConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(vision, text, audio): a pretrained wrapper where the config names a folder, else the project's encoder."""
    vision = PretrainedVisionEncoder(config.vision_pretrained, config) if config.vision_pretrained \
        else VisionEncoder(config)
    text = PretrainedTextEncoder(config.text_pretrained, config) if config.text_pretrained else TextEncoder(config)
    audio = PretrainedAudioEncoder(config.audio_pretrained, config) if config.audio_pretrained \
        else AudioEncoder(config)
    return vision, text, audio
