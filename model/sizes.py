"""Parameter counts per component of a preset, and per-GPU memory of its training state, built on the meta device
(no memory, no init).

    python -m model.sizes [tiny small base full]
    python -m model.sizes --memory [--gpus 1 2 4 8] [tiny small base full]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration

PRESETS = ["tiny", "small", "base", "full"]
COMPONENTS = {
    "vision": "encoder.vision", "text": "encoder.text", "audio": "encoder.audio", "fusion": "encoder.fusion",
    "reasoning": "encoder.core", "decoder": "decoder", "classifier": "classifier",
}
# bf16 autocast over fp32 master weights: fp32 weights, fp32 gradients, AdamW's two fp32 moments
WEIGHT_BYTES, GRAD_BYTES, ADAM_BYTES = 4, 4, 8
STATE_BYTES = WEIGHT_BYTES + GRAD_BYTES + ADAM_BYTES
MEMORY_HEADER = """\
Per-GPU memory of the training state in GB (1e9 bytes): fp32 weights (4 bytes per parameter), fp32 gradients (4)
and AdamW moments (8) under bf16 autocast. Activations are NOT included: they depend on batch size and sequence
lengths, and come on top. Neither are autocast's bf16 weight copies, DDP's gradient buckets, the CUDA context or
allocator slack.
  ddp            every GPU holds all 16 bytes per parameter
  fsdp, blocks   fully_shard per EncoderBlock / DecoderBlock / ConformerBlock (_no_split_modules) and the root:
                 16 bytes / N, plus the root unit (embeddings, heads, gated cross-attention: all outside blocks)
                 gathered with its gradient through the step, plus the largest block gathered twice (itself and
                 the next, prefetched) and its gradient before the reduce-scatter
  fsdp, one unit fully_shard on the root only, as stages/common/distributed.py wraps today: 16 bytes / N, plus
                 the whole model and its gradient gathered for the step
  1 GPU          one process, nothing wrapped: 16 bytes per parameter"""


def meta_model(preset: str) -> TrimodalForConditionalGeneration:
    with torch.device("meta"):
        return TrimodalForConditionalGeneration(TrimodalConfig.from_preset(preset))


def parameter_counts(preset: str) -> dict[str, int]:
    model = meta_model(preset)
    counts = {name: sum(p.numel() for p in model.get_submodule(path).parameters())
              for name, path in COMPONENTS.items()}
    counts["objective heads"] = sum(p.numel() for n, p in model.named_parameters()
                                    if n.split(".")[0] in ("mlm_head", "mim_head", "mam_head", "projections",
                                                           "logit_scale"))
    counts["total"] = sum(p.numel() for p in model.parameters())  # lm_head is tied to the decoder embedding
    return counts


@dataclass(frozen=True)
class Units:
    """A preset's parameters grouped as per-block FSDP units would hold them."""

    total: int
    root: int  # outside every block: what the root unit gathers
    largest_block: int


def fsdp_units(preset: str) -> Units:
    model = meta_model(preset)
    blocks = [sum(p.numel() for p in m.parameters()) for m in model.modules()
              if type(m).__name__ in model._no_split_modules]
    total = sum(p.numel() for p in model.parameters())
    return Units(total, total - sum(blocks), max(blocks))


def ddp_bytes(units: Units, gpus: int) -> float:
    return STATE_BYTES * units.total


def fsdp_block_bytes(units: Units, gpus: int) -> float:
    if gpus == 1:
        return ddp_bytes(units, gpus)
    root = (WEIGHT_BYTES + GRAD_BYTES) * units.root  # FSDP2 keeps the root gathered from forward to backward
    block = (2 * WEIGHT_BYTES + GRAD_BYTES) * units.largest_block
    return STATE_BYTES * units.total / gpus + root + block


def fsdp_one_unit_bytes(units: Units, gpus: int) -> float:
    if gpus == 1:
        return ddp_bytes(units, gpus)
    return STATE_BYTES * units.total / gpus + (WEIGHT_BYTES + GRAD_BYTES) * units.total


STRATEGIES = {"ddp": ddp_bytes, "fsdp, blocks": fsdp_block_bytes, "fsdp, one unit": fsdp_one_unit_bytes}


def memory_table(presets: list[str], gpus: list[int]) -> list[str]:
    lines = [MEMORY_HEADER, "",
             "| preset | parameters | strategy | " + " | ".join(f"{n} GPU{'s' * (n > 1)}" for n in gpus) + " |",
             "| --- | ---: | --- |" + " ---: |" * len(gpus)]
    for preset in presets:
        units = fsdp_units(preset)
        for name, per_gpu in STRATEGIES.items():
            cells = " | ".join(f"{per_gpu(units, n) / 1e9:.2f}" for n in gpus)
            lines.append(f"| {preset} | {units.total / 1e6:.2f} M | {name} | {cells} |")
    return lines


def count_table(presets: list[str]) -> list[str]:
    table = {p: parameter_counts(p) for p in presets}
    lines = ["| component | " + " | ".join(presets) + " |", "| --- |" + " ---: |" * len(presets)]
    for name in next(iter(table.values())):
        lines.append(f"| {name} | " + " | ".join(f"{table[p][name] / 1e6:.2f} M" for p in presets) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.sizes", description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*")
    parser.add_argument("--memory", action="store_true", help="per-GPU memory of the training state")
    parser.add_argument("--gpus", nargs="+", default=["1", "2", "4", "8"])
    args = parser.parse_args(argv)
    # `--gpus 1 2 full`: nargs="+" swallows the presets that follow the counts too
    gpus = [int(v) for v in args.gpus if v.isdigit()]
    presets = [*args.presets, *(v for v in args.gpus if not v.isdigit())] or PRESETS
    print("\n".join(memory_table(presets, gpus) if args.memory else count_table(presets)))


if __name__ == "__main__":
    main()
