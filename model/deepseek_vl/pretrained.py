"""DeepSeek-VL's three parts from local transformers checkpoint folders (pretrained init), named in DeepSeekVLConfig:

    low_vision_pretrained   a SigLIP folder (SiglipVisionModel, or a full SiglipModel: its vision tower)
    high_vision_pretrained  a SAM folder (SamModel or SamVisionModel: both keep the encoder as `vision_encoder.*`;
                            the prompt encoder and mask decoder of a full SamModel are not used)
    text_pretrained         a Llama-architecture LLM folder (LlamaForCausalLM; DeepSeek LLM's config says "llama")

Loading reuses model/trimodal/pretrained.py's `load_pretrained`: safetensors only, local_files_only (nothing is
fetched from a hub), every weight must come from the folder, and on the meta device (inside DeepSeekVLForCausalLM
.from_pretrained) only the structure is built, the saved DeepSeek-VL checkpoint supplies the weights.

The folder's config must agree with the sub-config on every key that sets a parameter's shape (SIZE_KEYS):
a mismatch is a ValueError naming the keys, not a checkpoint silently reshaped or half loaded. Other settings
(rope_theta, norm eps, activation) are the folder's, as from_pretrained builds them.
"""
from __future__ import annotations

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedConfig,
    SamVisionConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.sam.modeling_sam import SamVisionEncoder

from trimodal.model.trimodal.pretrained import SIGLIP, LoadPlan, load_pretrained

SIGLIP_TYPES = {"siglip": SIGLIP, "siglip_vision_model": SIGLIP}
SAM_TYPES = {name: LoadPlan("SamVisionModel") for name in ("sam", "sam_vision_model")}
LLAMA_TYPES = {"llama": LoadPlan("LlamaForCausalLM")}
SIZE_KEYS = {
    "low_vision_pretrained": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                              "image_size", "patch_size", "num_channels"),
    "high_vision_pretrained": ("hidden_size", "mlp_dim", "num_hidden_layers", "num_attention_heads", "image_size",
                               "patch_size", "num_channels", "output_channels", "window_size", "global_attn_indexes",
                               "use_abs_pos", "use_rel_pos", "qkv_bias"),
    "text_pretrained": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                        "num_key_value_heads", "head_dim", "attention_bias", "mlp_bias", "tie_word_embeddings"),
}


def check_sizes(field_name: str, path: str, ours: PreTrainedConfig, theirs: PreTrainedConfig) -> None:
    """ValueError naming every SIZE_KEYS key on which the folder's config and ours disagree."""
    def value(config, key):  # lists and tuples compare alike (a yaml list, a config default tuple)
        v = getattr(config, key, None)
        return list(v) if isinstance(v, tuple | list) else v

    pairs = {key: (value(ours, key), value(theirs, key)) for key in SIZE_KEYS[field_name]}
    differ = {key: pair for key, pair in pairs.items() if pair[0] != pair[1]}
    if differ:
        listed = ", ".join(f"{k}: config {a!r}, folder {b!r}" for k, (a, b) in differ.items())
        hint = " (text vocab_size comes from the project tokenizer: use the checkpoint's tokenizer)" \
            if "vocab_size" in differ else ""
        raise ValueError(f"{field_name}={path!r} does not match the model config on {sorted(differ)}: {listed}{hint}")


def load_part(path: str, supported: dict[str, LoadPlan], field_name: str, ours: PreTrainedConfig):
    _, model = load_pretrained(path, supported, field_name)
    check_sizes(field_name, path, ours, model.config)
    # from_pretrained keeps a checkpoint's own dtype (bf16 for DeepSeek's); the model is built and trained in fp32
    return model.to(torch.get_default_dtype())


def low_tower(config: SiglipVisionConfig, path: str | None) -> SiglipVisionModel | None:
    return load_part(path, SIGLIP_TYPES, "low_vision_pretrained", config) if path else None


def high_encoder(config: SamVisionConfig, path: str | None) -> SamVisionEncoder | None:
    return load_part(path, SAM_TYPES, "high_vision_pretrained", config).vision_encoder if path else None


def language_model(config: LlamaConfig, path: str | None) -> LlamaForCausalLM:
    return load_part(path, LLAMA_TYPES, "text_pretrained", config) if path else LlamaForCausalLM(config)
