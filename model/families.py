"""The two model families, each behind the `Family` interface (model/family.py), and how a preset, the params, a
model or a saved folder names one.

    trimodal     model/trimodal/ (family.py: TrimodalFamily; conf/model/tiny.yaml ...); docs/model.md "Architecture"
    deepseek_vl  model/deepseek_vl/ (family.py: DeepSeekVLFamily; conf/model/deepseek_vl*.yaml, whose
                 `family: deepseek_vl` says so); docs/model.md "DeepSeek-VL"

    family = family_for(model)            # or family_named(family_of(params.model))
    step = family.step("finetune", tokenizer)

A preset of the second family is a Hydra `_global_` file (it also chooses that family's pretrain / finetune /
distill recipes), so its model settings sit under a `model:` key; `read_preset` reads either layout.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from trimodal.model.deepseek_vl.family import DeepSeekVLFamily
from trimodal.model.family import Family
from trimodal.model.trimodal.configuration import PRESETS_DIR
from trimodal.model.trimodal.family import TrimodalFamily

FAMILIES: dict[str, Family] = {f.name: f for f in (TrimodalFamily(), DeepSeekVLFamily())}
TRIMODAL, DEEPSEEK_VL = "trimodal", "deepseek_vl"
CLASSES: dict[str, tuple[type[PreTrainedConfig], type[PreTrainedModel]]] = {
    name: (f.config_class, f.model_class) for name, f in FAMILIES.items()}
BY_MODEL_TYPE = {config.model_type: name for name, (config, _) in CLASSES.items()}


def family_of(settings: dict) -> str:
    """The family a preset's / params.yaml's `model` settings name (no `family` key: trimodal)."""
    name = settings.get("family", TRIMODAL)
    if name not in CLASSES:
        raise ValueError(f"model.family {name!r} is not a model family; known: {sorted(CLASSES)}")
    return name


def family_of_model(model: nn.Module) -> str:
    return BY_MODEL_TYPE[model.config.model_type]


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"{name!r} is not a model family; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_for(model: nn.Module) -> Family:
    """The family of a model (any of its configs' model_type)."""
    return FAMILIES[family_of_model(model)]


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
    family = FAMILIES[family_of(settings)]
    return family.build_config({k: v for k, v in settings.items() if k != "family"}, **from_data)


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
