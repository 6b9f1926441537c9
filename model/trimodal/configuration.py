"""TrimodalConfig: every size and loss weight of the trimodal model (docs/model.md "Architecture"); presets live
in conf/model/<name>.yaml."""
from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from trimodal.model.preference import ALIGNMENT_LOSS_WEIGHTS

PRESETS_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# The contrastive objectives weigh 0.1: at 1.0, with a few distinct contents per batch, they stall the
# supervised heads that share the encoders (demo: classifier at chance for 300+ finetune steps; docs/model.md).
# itm and view_image: the objectives that make fusion and the vision path learn on every run (docs/model.md);
# view_audio / view_text are off: those paths learn from the mixed batches alone.
DEFAULT_LOSS_WEIGHTS = {"mlm": 1.0, "mim": 1.0, "mam": 1.0, "itc": 0.1, "atc": 0.1, "vac": 0.1, "ce": 1.0, "vqa": 1.0,
                        "cls": 1.0, "itm": 1.0, "view_image": 1.0, "view_audio": 0.0, "view_text": 0.0,
                        **ALIGNMENT_LOSS_WEIGHTS}


@strict
class TrimodalConfig(PreTrainedConfig):
    model_type = "trimodal"

    vocab_size: int = 1024
    d_model: int = 64  # width of fusion, reasoning core and decoder; encoders project to it
    hidden_act: str = "gelu"
    dropout: float | int = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    # vision: ViT over image_size^2 RGB in patch_size^2 patches
    image_size: int = 64
    patch_size: int = 8
    num_channels: int = 3
    # "patch": linear patch projection (ViT); "conv": stride-2 conv stack (model/trimodal/vision.py)
    vision_stem: str = "patch"
    # our ViT normalises pixels in [0, 1] per channel, (x - mean) / std (ImageNet statistics by default)
    image_mean: list | None = None
    image_std: list | None = None
    vision_dim: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_ffn: int = 128
    # text: bidirectional Transformer encoder (RoBERTa-like)
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ffn: int = 128
    max_text_positions: int = 128
    # audio: log-Mel -> conv subsampling (x4 in time) -> Conformer blocks
    n_mels: int = 64
    # the features the model was trained on, copied from the shards' index.json by pretrain, so that a saved
    # model folder alone featurises new inputs the way its training data was (trimodal predict / serve)
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    max_text_tokens: int = 64
    # the validate limits that data passed (min_side, max_pixels, max_seconds), copied the same way: predict and serve
    # refuse what validate quarantined (trimodal/data/limits.py). None: a folder saved before they were recorded
    media_limits: dict | None = None
    audio_dim: int = 64
    audio_layers: int = 2
    audio_heads: int = 4
    audio_ffn: int = 128
    conv_kernel_size: int = 15
    audio_subsample_channels: int | None = None  # channels of the x4 conv subsampling; None = audio_dim
    max_audio_frames: int = 512  # after subsampling
    # fusion, reasoning core, decoders
    fusion_heads: int = 4
    joint_fusion_layers: int = 1
    # every gate starts at sigmoid(gate_bias_init). Flamingo starts them closed (tanh(0)) to keep a pretrained
    # language model intact; here fusion trains from scratch with everything else, so they start half open
    gate_bias_init: float | int = 0.0
    reasoning_layers: int = 2
    reasoning_heads: int = 4
    reasoning_ffn: int = 128
    decoder_layers: int = 2
    decoder_heads: int = 4
    decoder_ffn: int = 128
    max_decoder_positions: int = 64
    num_classes: int = 3
    projection_dim: int = 64  # shared space of the contrastive objectives
    mim_bits: int = 8  # visual-token vocabulary = 2**mim_bits (model/trimodal/visual_tokenizer.py)
    loss_weights: dict | None = None  # lambda per objective (docs/model.md "Objectives"); missing keys -> 1.0
    # optional local transformers checkpoint folders to initialise the encoders from
    vision_pretrained: str | None = None
    text_pretrained: str | None = None
    audio_pretrained: str | None = None
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    mask_token_id: int = 4
    decoder_start_token_id: int | None = 1
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(self.loss_weights or {})}
        self.image_mean = list(self.image_mean or IMAGENET_MEAN)
        self.image_std = list(self.image_std or IMAGENET_STD)
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError(f"image_mean / image_std need {self.num_channels} values (num_channels)")
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        super().__post_init__(**kwargs)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TrimodalConfig:
        """conf/model/<name>.yaml (tiny, small, base, full) plus keyword overrides."""
        path = PRESETS_DIR / f"{name}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
            raise ValueError(f"unknown model preset {name!r}; known: {known}")
        settings = yaml.safe_load(path.read_text())
        if "family" in settings.get("model", settings):
            raise ValueError(f"model preset {name!r} is of the {settings['model']['family']} family, not trimodal: "
                             "build it with model.families.build_config(read_preset(name))")
        return cls(**{**settings, **overrides})
