"""trimodal.model: the networks, one folder per family (as transformers keeps one folder per model), and what the
families share. Installed, this folder is trimodal/model/ (pyproject.toml's package-dir mapping); in the repository
trimodal/__init__.py maps `trimodal.model` to it.

    family.py        the `Family` interface: build, the step of each training stage, predict, respond, class scores
    families.py      the two families behind it; which one a preset, the params, a model or a saved folder names
    trimodal/        the trimodal family: configuration, modeling (encoders, fusion, reasoning core, decoders),
                     pretrained encoders, pretraining objectives, its tasks (the steps), family.py
                     (docs/model.md "Architecture")
    deepseek_vl/     the DeepSeek-VL family: configuration and modeling, hybrid vision and adaptor, its chat-turn
                     tasks, family.py (docs/model.md "DeepSeek-VL")
    layers.py, losses.py, masking.py, preference.py   shared building blocks and losses
    quantization.py, sizes.py, flops.py               INT8, parameter counts and memory per preset, FLOPs
    activations.py   a training step's activation memory, measured (sizes.py --memory --batch)
    lockstep.py      every rank runs the same blocks in the same order (per-block FSDP; docs/training.md)

Importing the package registers `trimodal` with transformers' AutoConfig / AutoModel / AutoModelForSeq2SeqLM.
"""
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration

__all__ = ["TrimodalConfig", "TrimodalForConditionalGeneration"]
