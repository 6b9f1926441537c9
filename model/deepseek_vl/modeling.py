"""DeepSeek-VL (docs/model.md "DeepSeek-VL"): the hybrid vision encoder and adaptor in front of a
Llama-architecture language model (pre-norm RMSNorm, SwiGLU, rotary positions: transformers' LlamaForCausalLM).

The LLM reads [visual tokens; text]: the adaptor's S^2 tokens (576 at full size) come first, then the text's
embeddings; a sample without an image has its visual positions masked out of attention. Loss only on text labels.
Each part is built from its sub-config (random init) or, where `low_vision_pretrained` / `high_vision_pretrained` /
`text_pretrained` name a local checkpoint folder, loaded from it (model/deepseek_vl/pretrained.py); the adaptor
and the high tower's two convolutions are always new. `config.pretrained_parts` remembers which parts came from a
folder, across saves: the paper freezes its vision towers because they arrive pretrained, and a tower that starts
random only sees once it trains, so `frozen_for_recipe` never freezes one (docs/model.md "DeepSeek-VL: training").

    config = DeepSeekVLConfig(text={"vocab_size": 1024, "hidden_size": 64, ...}, low_vision={...}, high_vision={...})
    model = DeepSeekVLForCausalLM(config)
    out = model(input_ids, attention_mask, pixel_values=images, image_present=has_image, labels=labels)
    new_tokens = model.generate(input_ids=ids, attention_mask=mask, pixel_values=images, max_new_tokens=8)
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import (
    GenerationMixin,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedModel,
    SamVisionConfig,
    SiglipVisionConfig,
)

from trimodal.model.deepseek_vl import pretrained
from trimodal.model.deepseek_vl.hybrid_vision import HybridVisionEncoder
from trimodal.model.deepseek_vl.vl_adaptor import HybridAdaptor
from trimodal.model.preference import ALIGNMENT_LOSS_WEIGHTS

IGNORE_INDEX = -100
DEFAULT_LOSS_WEIGHTS = {"lm": 1.0, "ce": 1.0, "vqa": 1.0, "cls": 1.0, **ALIGNMENT_LOSS_WEIGHTS}
TOWERS = {"low_vision": "vision.low", "high_vision": "vision.high"}  # part -> its parameters' prefix


class DeepSeekVLConfig(PreTrainedConfig):
    """Three sub-configs as plain dicts (saved in config.json): `low_vision` (SiglipVisionConfig), `high_vision`
    (SamVisionConfig), `text` (LlamaConfig); `high_channels`: the two convolutions' output channels.
    `*_pretrained`: a local checkpoint folder to load that part from (None: random init); its config must match
    the sub-config's sizes. `pretrained_parts`: the parts (low_vision, high_vision, text) loaded from a folder when
    the model was first built, kept in config.json after the folders are forgotten."""

    model_type = "trimodal_deepseek_vl"

    def __init__(self, low_vision: dict | None = None, high_vision: dict | None = None,
                 high_channels: list[int] | tuple[int, int] = (512, 1024), text: dict | None = None,
                 low_vision_pretrained: str | None = None, high_vision_pretrained: str | None = None,
                 text_pretrained: str | None = None, loss_weights: dict | None = None,
                 pretrained_parts: list[str] | None = None, **kwargs):
        # the trainer's objectives (trimodal/training/trainer.py): lm = next-token loss of the warm-up and the joint
        # pretraining; ce / vqa / cls = the fine-tuning tasks' turns (model/deepseek_vl/tasks.py)
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.low_vision = dict(low_vision or {})
        self.high_vision = dict(high_vision or {})
        self.high_channels = list(high_channels)
        self.text = dict(text or {})
        self.low_vision_pretrained = low_vision_pretrained
        self.high_vision_pretrained = high_vision_pretrained
        self.text_pretrained = text_pretrained
        self.pretrained_parts = sorted(pretrained_parts or [])
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if key in self.text:
                kwargs.setdefault(key, self.text[key])
        kwargs.setdefault("tie_word_embeddings", self.text.get("tie_word_embeddings", False))
        super().__init__(**kwargs)

    def sub_configs_built(self) -> tuple[SiglipVisionConfig, SamVisionConfig, LlamaConfig]:
        return (SiglipVisionConfig(**self.low_vision), SamVisionConfig(**self.high_vision), LlamaConfig(**self.text))


class DeepSeekVLForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = DeepSeekVLConfig
    base_model_prefix = "deepseek_vl"
    main_input_name = "input_ids"
    # the blocks FSDP shards one by one (trimodal/training/distributed.py) and device_map never splits; each is a
    # transformers GradientCheckpointingLayer (trainer.activation_checkpointing)
    _no_split_modules = ["LlamaDecoderLayer", "SiglipEncoderLayer", "SamVisionLayer"]
    supports_gradient_checkpointing = True

    def __init__(self, config: DeepSeekVLConfig):
        super().__init__(config)
        low, high, text = config.sub_configs_built()
        self.vision = HybridVisionEncoder(low, high, tuple(config.high_channels),
                                          pretrained.low_tower(low, config.low_vision_pretrained),
                                          pretrained.high_encoder(high, config.high_vision_pretrained))
        self.adaptor = HybridAdaptor(low.hidden_size, config.high_channels[1], text.hidden_size)
        self.language_model = pretrained.language_model(text, config.text_pretrained)
        self.post_init()
        loaded = {"low_vision": config.low_vision_pretrained, "high_vision": config.high_vision_pretrained,
                  "text": config.text_pretrained}
        config.pretrained_parts = sorted({*config.pretrained_parts, *(part for part, path in loaded.items() if path)})
        # the parts' weights now live in this model: a saved copy (config.json) must not load them again, nor need
        # the folders to exist where it is loaded
        config.low_vision_pretrained = config.high_vision_pretrained = config.text_pretrained = None

    def frozen_for_recipe(self, prefixes: list[str]) -> list[str]:
        """A stage's `frozen` prefixes as this model applies them: a vision tower that started random (not in
        config.pretrained_parts) trains even where the recipe freezes it; a prefix above one (`vision`) still
        freezes the rest under it. The trainer calls this (trimodal/training/trainer.py)."""
        learning = [prefix for part, prefix in TOWERS.items() if part not in self.config.pretrained_parts]
        kept = []
        for prefix in prefixes:
            below = [t for t in learning if t == prefix or t.startswith(prefix + ".")]
            if not below:
                kept.append(prefix)
            elif prefix not in below:  # a parent of a learning tower: freeze its other parameters
                module = self.get_submodule(prefix)
                kept += [f"{prefix}.{name}" for name, _ in module.named_parameters(recurse=False)]
                kept += [f"{prefix}.{name}" for name, child in module.named_children()
                         if f"{prefix}.{name}" not in below and any(True for _ in child.parameters())]
        return kept

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The adaptor only: the towers and the LLM initialise themselves (their own classes' rules)."""
        if isinstance(module, nn.Linear) and any(module is m for m in self.adaptor.modules()):
            nn.init.normal_(module.weight, std=self.language_model.config.initializer_range)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def visual_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] pixels in [0, 1] -> [B, S^2, d]: normalised as SigLIP's processor does ((x - 0.5) / 0.5),
        both towers, then the adaptor."""
        return self.adaptor(*self.vision(pixel_values * 2 - 1))

    def inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               pixel_values: torch.Tensor | None = None, image_present: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, visual: torch.Tensor | None = None) -> dict:
        """The LLM's inputs_embeds / attention_mask / labels for [visual tokens; text]. `visual`: the batch's
        visual_tokens computed once already (several turns about the same images), instead of pixel_values."""
        embeds = self.get_input_embeddings()(input_ids)
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.long)
        if pixel_values is None and visual is None:
            return {"inputs_embeds": embeds, "attention_mask": mask, "labels": labels}
        visual = (self.visual_tokens(pixel_values) if visual is None else visual).to(embeds.dtype)
        present = (image_present if image_present is not None
                   else torch.ones(len(input_ids), dtype=torch.bool, device=input_ids.device))
        visual_mask = present[:, None].to(mask.dtype).expand(-1, visual.shape[1])
        out = {"inputs_embeds": torch.cat([visual, embeds], dim=1), "attention_mask": torch.cat([visual_mask, mask], 1)}
        if labels is not None:
            ignore = torch.full(visual.shape[:2], IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
            out["labels"] = torch.cat([ignore, labels], dim=1)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, image_present: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, visual: torch.Tensor | None = None, **kwargs):
        """Logits over [visual; text] positions (the last input_ids.shape[1] are the text's); loss on text labels."""
        return self.language_model(**self.inputs(input_ids, attention_mask, pixel_values, image_present, labels,
                                                 visual), **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, image_present: torch.Tensor | None = None,
                 visual: torch.Tensor | None = None, **kwargs):
        """The new tokens only (the LLM generates from inputs_embeds), with its KV cache unless use_cache=False.
        Prompts are left-padded for batched generation (the new tokens follow every prompt's last token)."""
        inputs = self.inputs(input_ids, attention_mask, pixel_values, image_present, visual=visual)
        inputs.pop("labels", None)
        return self.language_model.generate(**inputs, **kwargs)
