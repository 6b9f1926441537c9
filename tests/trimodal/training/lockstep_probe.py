"""Run under torchrun with 2 processes: training steps of a tiny trimodal model sharded per block (FSDP2), in which
the ranks' batches hold different things, against one process computing the same batches.

argv: shards tokenizer out.json job [job ...], a job "family:stage" or "family:stage+checkpointing" (activation
checkpointing on). The trimodal family: rank 0's batch holds no audio
and asks no question (no VQA pass), rank 1's holds audio and asks; every audio-holding sample of rank 1 also has
another modality, so the matching and view objectives run there. DeepSeek-VL (which reads image and text): rank 0's
batch holds no image and asks nothing, rank 1's holds images and asks. The step is the stage's (pretrain or
finetune; or instruct, whose instruction turns rank 0's batch then lacks too). Writes, from rank 0: the
largest gap between the gathered gradients and the one-process gradient of the mean of the two ranks' losses,
each rank's losses beside the one-process ones, the number of FSDP units, and each rank's bytes of parameters,
gradients and AdamW state after one optimizer step against one process's.
"""
from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import AutoTokenizer

from stages.pretrain import build_model
from tests.shard_fixtures import tiny_deepseek_vl
from trimodal.alignment.instruction_tasks import instruct_step
from trimodal.data.batches import pairable
from trimodal.data.loader import make_loader
from trimodal.model.blocks import blocks
from trimodal.model.families import family_for
from trimodal.params import defaults
from trimodal.training.distributed import setup, wrap
from trimodal.training.trainer import Objectives, param_groups


def pick(batch: dict, rows: list[int]) -> dict:
    index = torch.tensor(rows)
    return {k: ([v[i] for i in rows] if isinstance(v, list) else v[index] if torch.is_tensor(v) else v)
            for k, v in batch.items()}


def rank_batches(shards: str, absent: str) -> list[dict]:
    """Rank 0's batch: 4 train samples without `absent` (audio or image) and no question; rank 1's: 4 with it."""
    batch = next(iter(make_loader(shards, "train", 64)))
    holds = batch["mel_lengths"].gt(0) if absent == "audio" else batch["image_present"]
    usable = [i for i, m in enumerate(batch["meta"]) if {"image", "text"} & set(m["modalities"]) or absent == "audio"]
    first = pick(batch, [i for i in usable if not holds[i]][:4])
    second = pick(batch, [i for i in usable if holds[i]][:4])
    first["answer_mask"] = torch.zeros_like(first["answer_mask"])  # rank 0 asks nothing: no VQA pass there
    if absent == "audio":  # as the loader collates a batch without audio: no frames at all
        first["mel"] = first["mel"][..., :0]
    for meta in first["meta"]:
        meta["answer"] = meta["question"] = None  # DeepSeek-VL's turns read the questions from the records
    for b in (first, second):
        b["pairable"] = pairable(b)
    return [first, second]


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    def size(t: torch.Tensor) -> int:
        t = t.to_local() if isinstance(t, DTensor) else t
        return t.numel() * t.element_size()

    return {"parameters": sum(size(p) for p in model.parameters()),
            "gradients": sum(size(p.grad) for p in model.parameters() if p.grad is not None),
            "adam": sum(size(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim)}


def probe(shards: str, tokenizer, job: str, world) -> dict | None:
    """One job ("family:stage", "+checkpointing" for activation checkpointing): the result on rank 0."""
    job, _, extra = job.partition("+")
    family, stage = job.split(":")
    if family == "deepseek_vl":
        model = tiny_deepseek_vl(tokenizer, image_size=16, n_mels=20)
    else:
        params = defaults()
        params.model.update(image_size=16, patch_size=8, n_mels=20)
        model = build_model(params, shards, tokenizer)
    batches = rank_batches(shards, "image" if family == "deepseek_vl" else "audio")
    if stage == "instruct":  # the fine-tuning replay plus instruction turns, which rank 0's batch has none of
        asked = defaults().instructions
        step = instruct_step(tokenizer, asked.templates, asked.options, family_for(model).replay(tokenizer),
                             asked.prompt_noise)
        for meta in batches[0]["meta"]:
            meta["caption"] = meta["label"] = None
    else:
        step = family_for(model).step(stage, tokenizer)

    reference = copy.deepcopy(model)
    reference_losses = []
    for r, b in enumerate(batches):  # one process: the gradient of the mean of the two ranks' losses
        total, losses = Objectives(reference, step)(b, torch.Generator().manual_seed(r))
        (total / 2).backward()
        reference_losses.append({k: v.item() for k, v in losses.items()})
    expected = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in reference.named_parameters()}
    reference_optimizer = torch.optim.AdamW(param_groups(reference, 0.01), lr=1e-3, fused=True)
    reference_optimizer.step()

    if extra == "checkpointing":
        model.activation_checkpointing_enable()
    units = blocks(model)
    objectives = wrap(Objectives(model, step, in_step=True, device=world.device), "fsdp", world, units)
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-3, fused=True)
    total, losses = objectives(batches[world.rank], torch.Generator().manual_seed(world.rank))
    total.backward()
    grads = {n: p.grad.full_tensor() if p.grad is not None else torch.zeros(p.shape)
             for n, p in model.named_parameters()}
    optimizer.step()
    mine = {"losses": {k: v.item() for k, v in losses.items()}, "bytes": state_bytes(model, optimizer)}
    everyone = [None] * world.size
    dist.all_gather_object(everyone, mine)
    if not world.main:
        return None
    gaps = {n: (grads[n] - expected[n]).abs().max().item() for n in expected}
    return {"gradient_gap": max(gaps.values()), "worst": max(gaps, key=gaps.get), "ranks": everyone,
            "reference_losses": reference_losses, "reference_bytes": state_bytes(reference, reference_optimizer),
            "units": sum(isinstance(m, FSDPModule) for m in objectives.modules()), "blocks": len(units)}


def main(shards: str, tokenizer_path: str, out: str, *jobs: str) -> None:
    """Every job in one pair of processes (their start-up, imports and process group once)."""
    world = setup()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    results = {job: probe(shards, tokenizer, job, world) for job in jobs}
    if world.main:
        with open(out, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
