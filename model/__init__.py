"""The multimodal network of seed 001 (encoders, gated cross-attention fusion, reasoning core, decoders).

Importing the package registers `trimodal` with transformers' AutoConfig / AutoModel / AutoModelForSeq2SeqLM.
"""
from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration

__all__ = ["TrimodalConfig", "TrimodalForConditionalGeneration"]
