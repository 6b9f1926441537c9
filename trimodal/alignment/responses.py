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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trimodal.data.batches import fitted, model_inputs
from trimodal.evaluation.generation import answered
from trimodal.model.deepseek_vl.tasks import (
    Turns,
    chat_prompt_ids,
    encode,
    generated,
    left_padded,
    right_padded,
    run,
    shifted,
    visual_of,
)
from trimodal.model.families import DEEPSEEK_VL, family_for, family_of_model
from trimodal.model.preference import sequence_logprobs
from trimodal.model.trimodal.fusion import Stream


def is_vl(model) -> bool:
    return family_of_model(model) == DEEPSEEK_VL


def readable(model, meta: dict) -> bool:
    """Whether the model can read the record at all (DeepSeek-VL: not audio alone)."""
    keep = family_for(model).keep
    return keep is None or keep(meta)


def media_of(model, batch: dict):
    """The batch's inputs, encoded once: the trimodal encoder's streams (image, audio, text), or DeepSeek-VL's
    visual tokens (None without an image)."""
    if is_vl(model):
        return visual_of(model, batch)
    return model.encoder.streams(**model_inputs(batch))


@dataclass
class Prompted:
    """Rows of a batch with one prompt each, ready for responses: the chat prompts' ids, and `encoded` (trimodal:
    the fused encoder output of the rows) or `visual` (DeepSeek-VL: the batch's visual tokens)."""
    rows: list[int]
    batch: dict
    encoded: object = None
    prompts: list[list[int]] | None = None
    visual: torch.Tensor | None = None


RESPONSE_ROOM = 16  # decoder positions kept for the response after its prompt (captions are the longest asked)


def prompt_width(model) -> int | None:
    """The tokens of a chat prompt the model reads whole (trimodal: its decoder's positions less RESPONSE_ROOM; a
    longer prompt loses its start), None where prompts are not cut (DeepSeek-VL)."""
    return None if is_vl(model) else model.config.max_decoder_positions - RESPONSE_ROOM


def _decoder_prompts(model, tokenizer, contents: list[str]) -> list[list[int]]:
    """The chat prompts as the trimodal decoder's prefix, each cut to `prompt_width` (the start of a long text
    goes; "<s>", the end of the instruction and "Assistant:" stay)."""
    return [fitted(ids, prompt_width(model)) for ids in chat_prompt_ids(tokenizer, contents)]


def prompted(model, tokenizer, batch: dict, media, rows: list[int], contents: list[str]) -> Prompted:
    """The rows' inputs with one user turn each (`contents`, e.g. instructions.content), through the chat
    template."""
    if is_vl(model):
        return Prompted(rows, batch, prompts=chat_prompt_ids(tokenizer, contents), visual=media)
    index = torch.tensor(rows, device=batch["image"].device)
    streams = {m: Stream(s.hidden[index], s.mask[index]) for m, s in media.items() if s.mask[index].any()}
    return Prompted(rows, batch, encoded=model.encoder.fuse(streams),
                    prompts=_decoder_prompts(model, tokenizer, contents))


def _targets(tokenizer, responses: list[str], vl: bool) -> list[list[int]]:
    """Each response's tokens and </s>: as the shards tokenize captions and answers (trimodal's decoder, <s>
    dropped) or as vl_tasks' chat turns (a space after "Assistant:")."""
    if vl:
        return [[*t, tokenizer.eos_token_id] for t in encode(tokenizer, [" " + r for r in responses])]
    return [ids[1:] for ids in tokenizer(responses)["input_ids"]]


def logprobs(model, tokenizer, asked: Prompted, responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(response | inputs, prompt) summed over its tokens and </s> [n], its tokens [n]), with gradients."""
    device = asked.batch["image"].device
    if is_vl(model):
        ids, mask, labels = right_padded(asked.prompts, _targets(tokenizer, responses, True),
                                         tokenizer.pad_token_id, device)
        logits, targets = shifted(run(model, Turns(asked.rows, ids, mask), asked.visual, asked.batch), labels)
        return sequence_logprobs(logits, targets)
    targets, room = _targets(tokenizer, responses, False), model.config.max_decoder_positions
    prompts = [fitted(p, room - len(t)) for p, t in zip(asked.prompts, targets, strict=True)]  # long responses too
    ids, _, labels = right_padded(prompts, targets, model.config.pad_token_id, device)
    logits = model(encoder_outputs=asked.encoded, decoder_input_ids=ids).logits
    return sequence_logprobs(*shifted(logits, labels))


@torch.no_grad()
def respond(model, tokenizer, asked: Prompted, max_new_tokens: int, sample: bool = False) -> list[str]:
    """Each row's response: greedy, or sampled (temperature 1, torch's global generator: seed it first)."""
    if not is_vl(model):
        prompts = [torch.tensor(p, device=asked.batch["image"].device) for p in asked.prompts]
        return answered(model, tokenizer, asked.encoded, prompts, max_new_tokens, sample)  # fits them itself
    ids, mask = left_padded(asked.prompts, tokenizer.pad_token_id, asked.batch["image"].device)
    return generated(model, tokenizer, Turns(asked.rows, ids, mask), asked.visual, asked.batch, max_new_tokens,
                     sample)
