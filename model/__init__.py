"""The trimodal network: encoders, gated cross-attention fusion, reasoning core, decoders (docs/model.md
"Architecture").

Importing the package registers `trimodal` with transformers' AutoConfig / AutoModel / AutoModelForSeq2SeqLM.
"""
from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration

__all__ = ["TrimodalConfig", "TrimodalForConditionalGeneration"]
