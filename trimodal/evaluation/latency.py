"""Inference latency of several model variants, measured side by side: interleaved in one process.

One inference = the encoder, the classifier and a greedy caption of exactly `max_new_tokens` tokens, so every
variant does the same work. For a DeepSeek-VL model (model/families.py) the same in its terms: the visual tokens,
one forward over the caption prompts (the chat turn of model/deepseek_vl/tasks.py, which timing_batches builds
when given the family's tokenizer) and a greedy caption of exactly `max_new_tokens` tokens.

Timing variant after variant lets drift (CPU frequency, a noisy neighbour, caches) favour whichever ran last; here
every round times each variant once, in an order that rotates from round to round, and a variant's latency is its
median over rounds. Two variants are compared by the ratio of their times within each round (paired_ratio): they
ran back to back, so drift between rounds cancels, and the spread of the per-round ratios says how far apart they
really are.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from trimodal.data.batches import model_inputs
from trimodal.data.loader import make_loader
from trimodal.model.deepseek_vl import tasks as vl_tasks
from trimodal.model.families import DEEPSEEK_VL, family_of_model

PROMPTS = "caption_prompts"  # a timing batch's key for the DeepSeek-VL family's prompts (vl_tasks.Turns)


def inference(model, batch: dict, max_new_tokens: int) -> Callable[[], None]:
    if family_of_model(model) == DEEPSEEK_VL:
        return chat_inference(model, batch, max_new_tokens)
    inputs = model_inputs(batch)

    @torch.no_grad()
    def run() -> None:
        encoded = model.encoder(**inputs)
        model(encoder_outputs=encoded)
        model.generate(encoder_outputs=encoded, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                       do_sample=False, num_beams=1)

    return run


def chat_inference(model, batch: dict, max_new_tokens: int) -> Callable[[], None]:
    """DeepSeek-VL: visual tokens, the prompts' forward (as the teacher-forced scoring pass), a greedy caption."""
    if batch.get(PROMPTS) is None:
        raise ValueError("latency: a DeepSeek-VL model needs timing batches with prompts: "
                         "timing_batches(shards, split, sizes, chat_tokenizer=<the model's tokenizer>)")
    turns = batch[PROMPTS]

    @torch.no_grad()
    def timed() -> None:
        visual = vl_tasks.visual_of(model, batch)
        vl_tasks.run(model, turns, visual, batch)
        model.generate(input_ids=turns.ids, attention_mask=turns.mask, max_new_tokens=max_new_tokens,
                       min_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                       pad_token_id=model.config.pad_token_id, **vl_tasks.visual_inputs(turns, visual, batch))

    return timed


def interleaved_rounds(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each callable in each of `repeats` rounds; round r starts at variant r mod n."""
    names = list(runs)
    for name in names:  # warm-up: first-call allocations and kernel selection are not latency
        runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def interleaved_ms(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each callable over `repeats` interleaved rounds."""
    return {name: statistics.median(t) for name, t in interleaved_rounds(runs, repeats).items()}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Quartiles ("q1", "median", "q3") of the per-round ratios numerator[r] / denominator[r]."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    if not ratios:
        raise ValueError("paired_ratio: no rounds")
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {"q1": q1, "median": median, "q3": q3}


def first_rows(batch: dict, n: int) -> dict:
    return {k: v[:n] for k, v in batch.items()}


def timing_batches(shards: str, split: str, sizes: Sequence[int],
                   chat_tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, dict]:
    """"batch<n>" -> the first n records of `split`, per batch size (one loader read for all of them).
    chat_tokenizer: a DeepSeek-VL model's (that family's inference is a chat turn): the first n records the family
    reads (vl_tasks.usable: an audio-only record gives it nothing to do), each batch with its caption prompts."""
    if not sizes:
        return {}
    keep = vl_tasks.usable if chat_tokenizer is not None else None
    batch = next(iter(make_loader(shards, split, max(sizes), keep=keep)))
    batches = {f"batch{size}": first_rows(batch, size) for size in sizes}
    if chat_tokenizer is not None:
        for b in batches.values():
            b[PROMPTS] = vl_tasks.chat_turns(chat_tokenizer, b, "ce", vl_tasks.texts(chat_tokenizer, b),
                                             torch.device("cpu"), with_targets=False)
    return batches


def latency_rounds(models: dict, batches: dict[str, dict], max_new_tokens: int,
                   repeats: int) -> dict[str, dict[str, list[float]]]:
    """model name -> {batch label: ms of one inference in each round}, the models interleaved per batch."""
    out: dict[str, dict[str, list[float]]] = {name: {} for name in models}
    for label, batch in batches.items():
        runs = {name: inference(model, batch, max_new_tokens) for name, model in models.items()}
        for name, ms in interleaved_rounds(runs, repeats).items():
            out[name][label] = ms
    return out


def latency_ms(models: dict, batches: dict[str, dict], max_new_tokens: int,
               repeats: int) -> dict[str, dict[str, float]]:
    """model name -> {batch label: median ms of one inference}, the models interleaved per batch."""
    rounds = latency_rounds(models, batches, max_new_tokens, repeats)
    return {name: {label: statistics.median(ms) for label, ms in row.items()} for name, row in rounds.items()}
