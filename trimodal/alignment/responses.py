"""A prompt and a response for either family: the model's inputs from a batch's records, an instruction through
the tokenizer's chat template, and then the log-probability of a given response or a generated one. The alignment
stages (`instruct`, `preferences`, `align`) are written once on top of these.

    trimodal     the encoder reads the record's inputs (image, audio, text) as fine-tuning does; the decoder reads
                 the chat prompt "<s>User: {text} {instruction}\\n\\nAssistant:" as its prefix and writes the response,
                 as it answers questions (trimodal/data/batches.question_prefixed)
    deepseek_vl  the causal LM reads the visual tokens, then the same chat prompt, and continues with the response
                 (model/deepseek_vl/tasks.py: its records without an image or text are not `readable`)

Inputs are encoded once per batch (`media_of`) and shared by every prompt asked of it; a `Prompted` is the rows'
inputs with one prompt each, scored against several responses (a preference pair's two) without encoding again.
Each family does its part behind the `Family` interface (model/family.py: media, prompted, logprobs, generate).
"""
from __future__ import annotations

import torch

from trimodal.model.chat import Prompted
from trimodal.model.families import family_for

__all__ = ["Prompted", "logprobs", "media_of", "prompt_width", "prompted", "readable", "respond", "response_logits"]


def readable(model, meta: dict) -> bool:
    """Whether the model can read the record at all (DeepSeek-VL: not audio alone)."""
    keep = family_for(model).keep
    return keep is None or keep(meta)


def media_of(model, batch: dict):
    """The batch's inputs, encoded once: the trimodal encoder's streams (image, audio, text), or DeepSeek-VL's
    visual tokens (None without an image)."""
    return family_for(model).media(model, batch)


def prompt_width(model) -> int | None:
    """The tokens of a chat prompt the model reads whole (trimodal: its decoder's positions less room for the
    response; a longer prompt loses its start), None where prompts are not cut (DeepSeek-VL)."""
    return family_for(model).prompt_width(model)


def prompted(model, tokenizer, batch: dict, media, rows: list[int], contents: list[str]) -> Prompted:
    """The rows' inputs with one user turn each (`contents`, e.g. instructions.content), through the chat
    template."""
    return family_for(model).prompted(model, tokenizer, batch, media, rows, contents)


def response_logits(model, tokenizer, asked: Prompted, responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(next-token logits [n, T, V], labels [n, T]: the responses' tokens and </s>, -100 elsewhere), with
    gradients."""
    return family_for(model).response_logits(model, tokenizer, asked, responses)


def logprobs(model, tokenizer, asked: Prompted, responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(response | inputs, prompt) summed over its tokens and </s> [n], its tokens [n]), with gradients."""
    return family_for(model).logprobs(model, tokenizer, asked, responses)


@torch.no_grad()
def respond(model, tokenizer, asked: Prompted, max_new_tokens: int, sample: bool = False) -> list[str]:
    """Each row's response: greedy, or sampled (temperature 1, torch's global generator: seed it first)."""
    return family_for(model).generate(model, tokenizer, asked, max_new_tokens, sample)
