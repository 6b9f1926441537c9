"""Output decoders (docs/model.md "Reasoning core and decoders"): a causal generative decoder cross-attending
to R, and a classification head on pooled R. P(y_t | y_<t, R) = softmax(Linear(DecoderState_t))."""
from __future__ import annotations

import torch
from torch import nn

from trimodal.model.layers import DecoderBlock, masked_mean
from trimodal.model.trimodal.configuration import TrimodalConfig


class GenerativeDecoder(nn.Module):
    def __init__(self, config: TrimodalConfig):
        super().__init__()
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.pos = nn.Embedding(c.max_decoder_positions, c.d_model)
        self.blocks = nn.ModuleList(DecoderBlock(c.d_model, c.decoder_heads, c.decoder_ffn, c.hidden_act, c.dropout,
                                                 c.layer_norm_eps) for _ in range(c.decoder_layers))
        self.norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.max_positions, self.vocab_size = c.max_decoder_positions, c.vocab_size

    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
                attention_mask: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """input_ids: the whole prefix, or with `cache` (an EncoderDecoderCache) only the tokens after the cached
        ones; positions continue from the cache's length."""
        past = cache.get_seq_length() if cache is not None else 0
        if past + input_ids.shape[1] > self.max_positions:
            raise ValueError(f"decoder input of {past + input_ids.shape[1]} tokens > max_decoder_positions "
                             f"{self.max_positions}")
        if input_ids.shape[1] == 0:  # nothing to decode (a batch without targets): empty logits, not a crash
            return memory.new_zeros(input_ids.shape[0], 0, self.vocab_size)
        x = self.embed(input_ids) + self.pos(torch.arange(past, past + input_ids.shape[1], device=input_ids.device))
        for layer, block in enumerate(self.blocks):
            x = block(x, memory, memory_mask, self_mask=attention_mask, cache=cache, layer=layer)
        return self.lm_head(self.norm(x))


class ClassificationHead(nn.Module):
    def __init__(self, config: TrimodalConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.out = nn.Linear(config.d_model, config.num_classes)

    def forward(self, reasoning_state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(masked_mean(reasoning_state, mask)))
