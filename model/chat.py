"""Chat turns and padded token rows, shared by both families and the alignment stages: a batch's text inputs as
strings, the user turn through the tokenizer's chat template, prefix + target rows with labels on the target
(right-padded, for scoring) or prompts left-padded for generation, and a zero loss that reaches every parameter.

    <s> User: {content}\n\nAssistant:      the chat prompt (stages/tokenizer.py's template); the response follows
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor

IGNORE = -100  # a label position no loss counts (PyTorch's cross-entropy default)


def texts(tokenizer, batch: dict) -> list[str]:
    """Each sample's text input as a string ('' when it has none)."""
    return [s.strip() for s in tokenizer.batch_decode(batch["text_ids"], skip_special_tokens=True)]


def chat_prompt(tokenizer, content: str) -> str:
    """The user's turn and the opened assistant turn, through the tokenizer's chat template."""
    if tokenizer.chat_template is None:
        raise ValueError("the tokenizer has no chat template: re-run `dvc repro tokenizer` (stages/tokenizer.py)")
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


def chat_prompt_ids(tokenizer, contents: list[str]) -> list[list[int]]:
    """<s> + each user turn's chat prompt (assistant turn opened), as token ids."""
    return [[tokenizer.bos_token_id, *p] for p in encode(tokenizer, [chat_prompt(tokenizer, c) for c in contents])]


def encode(tokenizer, strings: list[str]) -> list[list[int]]:
    return tokenizer(strings, add_special_tokens=False)["input_ids"] if strings else []


def right_padded(prefixes: list[list[int]], targets: list[list[int]], pad_id: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels) of prefix + target rows, right-padded; labels only on the targets."""
    width = max(len(p) + len(t) for p, t in zip(prefixes, targets, strict=True))
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    labels = torch.full((len(prefixes), width), IGNORE, dtype=torch.long)
    for i, (p, t) in enumerate(zip(prefixes, targets, strict=True)):
        ids[i, : len(p) + len(t)] = torch.tensor(p + t)
        labels[i, len(p): len(p) + len(t)] = torch.tensor(t, dtype=torch.long)
    mask = (labels.ne(IGNORE) | (torch.arange(width)[None] < torch.tensor([len(p) for p in prefixes])[:, None]))
    return ids.to(device), mask.long().to(device), labels.to(device)


def left_padded(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for batched generation: left-padded, so every row's new tokens follow its last prompt token."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):], mask[i, width - len(r):] = torch.tensor(r), 1
    return ids.to(device), mask.to(device)


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position t predicts token t + 1: (logits [n, L-1, V], targets [n, L-1])."""
    return logits[:, :-1], labels[:, 1:]


def zero_loss(model) -> torch.Tensor:
    """A batch with nothing to learn for this step: a zero that still reaches every parameter (DDP / FSDP need
    a gradient, zero, on every rank). Under per-block FSDP a block's parameters are shards (DTensors) outside its
    own forward: the zero reaches the others, and FSDP reduce-scatters zeros for the rest itself."""
    return sum(p.sum() for p in model.parameters() if p.requires_grad and not isinstance(p, DTensor)) * 0.0



@dataclass
class Prompted:
    """Rows of a batch with one prompt each, ready for responses (trimodal/alignment/responses.py): the chat
    prompts' ids, and what the family encoded of the rows' inputs (`encoded`: the trimodal encoder's fused output;
    `visual`: DeepSeek-VL's visual tokens of the batch)."""
    rows: list[int]
    batch: dict
    encoded: object = None
    prompts: list[list[int]] | None = None
    visual: torch.Tensor | None = None
