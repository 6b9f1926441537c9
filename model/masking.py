"""Which inputs are hidden for the self-supervised losses (docs/model.md "Objectives": L_MLM, L_MIM, masked audio).

Every function draws from an explicit torch.Generator, so a seed fixes the masks whatever else uses the global
RNG. Random numbers are drawn on the generator's device and moved to the inputs' device.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def _rand(shape, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _at_least_one(mask: torch.Tensor, allowed: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rows with an allowed position but nothing masked get one allowed position, drawn uniformly."""
    if mask.shape[-1] == 0:  # nothing to mask in a zero-width batch (e.g. no sample has text)
        return mask
    pick = _rand(mask.shape, generator, mask.device).masked_fill(~allowed, -1.0).argmax(-1)
    empty = allowed.any(-1) & ~mask.any(-1)
    one = F.one_hot(pick, mask.shape[-1]).bool() & empty[:, None]
    return mask | one


def special_ids(config) -> set[int]:
    """The ids of `config`'s special tokens (pad, <s>, </s>, <mask>; those it has): never masked, dropped or drawn
    as a random replacement."""
    names = ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id")
    return {getattr(config, name) for name in names if getattr(config, name, None) is not None}


def random_ordinary_ids(shape, vocab_size: int, special: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Token ids of `shape` drawn uniformly from the vocabulary less `special` (on special's device)."""
    ordinary = torch.arange(vocab_size, device=special.device)
    ordinary = ordinary[~torch.isin(ordinary, special)]
    pick = torch.randint(len(ordinary), shape, generator=generator, device=generator.device)
    return ordinary[pick.to(special.device)]


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_token_id: int,
                special_ids: Iterable[int], vocab_size: int, prob: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking for L_MLM: each non-special, non-pad token is selected with probability `prob` (at least one
    per row that has one); selected tokens become [MASK] 80%, a random non-special token 10%, stay 10%.

    input_ids, attention_mask [B, L] -> (masked_input_ids [B, L], mlm_mask [B, L] bool = the selected tokens).
    """
    special = torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype, device=input_ids.device)
    maskable = attention_mask.bool() & ~torch.isin(input_ids, special)
    mlm_mask = (_rand(input_ids.shape, generator, input_ids.device) < prob) & maskable
    mlm_mask = _at_least_one(mlm_mask, maskable, generator)
    action = _rand(input_ids.shape, generator, input_ids.device)
    random_ids = random_ordinary_ids(input_ids.shape, vocab_size, special, generator).to(input_ids.dtype)
    masked = torch.where(mlm_mask & (action < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(mlm_mask & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, mlm_mask


def mask_spans(valid: torch.Tensor, prob: float, span: int, generator: torch.Generator) -> torch.Tensor:
    """Contiguous spans of `span` positions (patches for L_MIM, audio frames for masked audio) covering about
    `prob` of the valid positions; invalid positions are never masked, and a row with a valid position gets
    at least one.

    Spans start independently with probability p = 1 - (1 - prob)^(1/span), also up to span-1 positions before
    the sequence, so every position is covered with probability exactly prob despite overlaps (wav2vec 2.0
    style, with the overlap correction). valid [B, T] bool -> mask [B, T] bool.
    """
    b, t = valid.shape
    if t == 0:  # e.g. a batch in which no sample has audio
        return valid.clone()
    p_start = 1.0 - (1.0 - min(max(prob, 0.0), 1.0)) ** (1.0 / span)
    starts = _rand((b, t + span - 1), generator, valid.device) < p_start
    covered = F.max_pool1d(starts[:, None].float(), kernel_size=span, stride=1)[:, 0].bool()  # [B, T]
    return _at_least_one(covered & valid, valid, generator)
