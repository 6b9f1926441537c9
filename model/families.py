"""The two model families and how a preset, the params or a saved folder names one.

    trimodal     model/trimodal/configuration.py TrimodalConfig, model/trimodal/modeling.py (conf/model/tiny.yaml ...);
                 docs/model.md "Architecture"
    deepseek_vl  model/deepseek_vl/modeling.py (conf/model/deepseek_vl*.yaml, whose `family: deepseek_vl` says so);
                 docs/model.md "DeepSeek-VL"

A preset of the second family is a Hydra `_global_` file (it also chooses that family's pretrain / finetune /
distill recipes), so its model settings sit under a `model:` key; `read_preset` reads either layout.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from trimodal.model.deepseek_vl.modeling import DeepSeekVLConfig, DeepSeekVLForCausalLM
from trimodal.model.trimodal.configuration import PRESETS_DIR, TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration

TRIMODAL, DEEPSEEK_VL = "trimodal", "deepseek_vl"
CLASSES: dict[str, tuple[type[PreTrainedConfig], type[PreTrainedModel]]] = {
    TRIMODAL: (TrimodalConfig, TrimodalForConditionalGeneration),
    DEEPSEEK_VL: (DeepSeekVLConfig, DeepSeekVLForCausalLM),
}
BY_MODEL_TYPE = {config.model_type: name for name, (config, _) in CLASSES.items()}


def family_of(settings: dict) -> str:
    """The family a preset's / params.yaml's `model` settings name (no `family` key: trimodal)."""
    name = settings.get("family", TRIMODAL)
    if name not in CLASSES:
        raise ValueError(f"model.family {name!r} is not a model family; known: {sorted(CLASSES)}")
    return name


def family_of_model(model: nn.Module) -> str:
    return BY_MODEL_TYPE[model.config.model_type]


def read_preset(name: str) -> dict:
    """conf/model/<name>.yaml as plain model settings (family included)."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(p.stem for p in PRESETS_DIR.glob('*.yaml'))}")
    data = yaml.safe_load(path.read_text())
    data.pop("defaults", None)
    return data["model"] if "model" in data else data


def build_config(settings: dict, **from_data) -> PreTrainedConfig:
    """The config of the family `settings` name, with what the data fixes (vocabulary, special tokens, labels)."""
    family = family_of(settings)
    settings = {k: v for k, v in settings.items() if k != "family"}
    if family == TRIMODAL:
        return TrimodalConfig(**{**settings, **from_data})
    text_keys = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")
    text = {**settings.get("text", {}), **{k: from_data[k] for k in text_keys if k in from_data}}
    rest = {k: v for k, v in from_data.items() if k not in text_keys}
    return DeepSeekVLConfig(**{**settings, "text": text, **rest})


def model_class(config: PreTrainedConfig) -> type[PreTrainedModel]:
    if config.model_type not in BY_MODEL_TYPE:
        raise ValueError(f"config model_type {config.model_type!r} is no family of this project")
    return CLASSES[BY_MODEL_TYPE[config.model_type]][1]


def saved_family(model_dir: str | Path) -> str:
    """The family of a saved model folder, from its config.json."""
    model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    if model_type not in BY_MODEL_TYPE:
        raise ValueError(f"{model_dir}/config.json: model_type {model_type!r} is no family of this project "
                         f"({sorted(BY_MODEL_TYPE)})")
    return BY_MODEL_TYPE[model_type]


def load_pretrained(model_dir: str | Path) -> PreTrainedModel:
    """A saved FP32 model of either family (safetensors)."""
    return CLASSES[saved_family(model_dir)][1].from_pretrained(model_dir)
