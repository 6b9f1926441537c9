"""Inference latency of several model variants, measured side by side: interleaved in one process.

One inference = the encoder, the classifier and a greedy caption of exactly `max_new_tokens` tokens, so every
variant does the same work; each family says what that is in its terms (model/family.py `timed`: DeepSeek-VL's is
the visual tokens, one forward over the caption prompts and the caption, the prompts built once per timing batch by
its `timing_inputs`).

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

from transformers import PreTrainedTokenizerBase

from trimodal.data.loader import make_loader
from trimodal.model.families import family_for
from trimodal.model.family import Family

INPUTS = "timing_inputs"  # a timing batch's key for what its family's inference needs beside it (Family.timing_inputs)


def inference(model, batch: dict, max_new_tokens: int) -> Callable[[], None]:
    """One inference of `model` on a timing batch, as its family times it."""
    return family_for(model).timed(model, batch, batch.get(INPUTS), max_new_tokens)


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


def timing_batches(shards: str, split: str, sizes: Sequence[int], family: Family,
                   tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, dict]:
    """"batch<n>" -> the first n records of `split` the family reads (an audio-only record gives DeepSeek-VL
    nothing to do), per batch size (one loader read for all of them), each with what the family's inference needs
    beside it (`tokenizer`: the models', for a family whose inference is a chat turn)."""
    if not sizes:
        return {}
    batch = next(iter(make_loader(shards, split, max(sizes), keep=family.keep)))
    batches = {f"batch{size}": first_rows(batch, size) for size in sizes}
    for b in batches.values():
        inputs = family.timing_inputs(tokenizer, b)
        if inputs is not None:
            b[INPUTS] = inputs
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
