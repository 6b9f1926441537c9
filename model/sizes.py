"""Parameter counts per component of a model preset, and per-GPU memory of its training state, built on the meta
device (no memory, no init), for both model families (model/families.py).

    python -m trimodal.model.sizes                  the trimodal presets, then the DeepSeek-VL presets: one table each
    python -m trimodal.model.sizes [PRESET ...]     those presets, one table per family they belong to
    python -m trimodal.model.sizes --memory [--gpus 1 2 4 8] [PRESET ...]
    python -m trimodal.model.sizes --memory --batch 4 [--text-tokens 128 --audio-seconds 10 --decoder-tokens 64]
                                                       [PRESET ...]   + activations at that batch per GPU (measured)

Every DeepSeek-VL table ends with a line per preset whose name gives a size (deepseek_vl_1.3b: 1.3B, deepseek_vl_7b:
7B; the DeepSeek-VL paper's names refer to the LLM) comparing it with the measured LLM and total. A preset that
leaves the vocabulary to the tokenizer (the deepseek_vl demo size) is counted at conf/tokenizer/default.yaml's
vocab_size.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import torch
import yaml
from transformers import PreTrainedConfig, PreTrainedModel

from trimodal.model.activations import Lengths, measure
from trimodal.model.blocks import blocks as model_blocks
from trimodal.model.families import DEEPSEEK_VL, TRIMODAL, build_config, family_of, model_class, read_preset
from trimodal.model.trimodal.configuration import PRESETS_DIR

PRESETS = {TRIMODAL: ["tiny", "small", "base", "full"],
           DEEPSEEK_VL: ["deepseek_vl", "deepseek_vl_1.3b", "deepseek_vl_7b"]}
TOKENIZER_DEFAULTS = PRESETS_DIR.parent / "tokenizer" / "default.yaml"
# component -> parameter-name prefixes; a weight tied to one listed earlier is counted there only (named_parameters
# yields it once), so an lm_head tied to the embeddings counts 0
COMPONENTS = {
    TRIMODAL: {
        "vision": ("encoder.vision",), "text": ("encoder.text",), "audio": ("encoder.audio",),
        "fusion": ("encoder.fusion",), "reasoning": ("encoder.core",), "decoder": ("decoder",),
        "classifier": ("classifier",),
        "objective heads": ("mlm_head", "mim_head", "mam_head", "itm_head", "projections", "logit_scale"),
    },
    DEEPSEEK_VL: {
        "low vision tower": ("vision.low",),
        "high vision tower": ("vision.high",),  # SAM-B and the two stride-2 convolutions
        "adaptor": ("adaptor",),
        "LLM embeddings": ("language_model.model.embed_tokens",),
        "LLM decoder layers + norm": ("language_model.model.layers", "language_model.model.norm"),
        "lm_head": ("language_model.lm_head",),  # 0 when tied to the embeddings
    },
}
LLM_ROWS = ("LLM embeddings", "LLM decoder layers + norm", "lm_head")
# bf16 autocast over fp32 master weights: fp32 weights, fp32 gradients, AdamW's two fp32 moments
WEIGHT_BYTES, GRAD_BYTES, ADAM_BYTES = 4, 4, 8
STATE_BYTES = WEIGHT_BYTES + GRAD_BYTES + ADAM_BYTES
MEMORY_HEADER = """\
Per-GPU memory of the training state in GB (1e9 bytes): fp32 weights (4 bytes per parameter), fp32 gradients (4)
and AdamW moments (8) under bf16 autocast. Activations are NOT included here: they depend on batch size and
sequence lengths (`--batch B` adds them, measured). Neither are autocast's bf16 weight copies, DDP's gradient
buckets, the CUDA context or allocator slack.
  ddp            every GPU holds all 16 bytes per parameter
  fsdp, blocks   fully_shard per block of the model's _no_split_modules (trimodal: EncoderBlock / DecoderBlock /
                 ConformerBlock / GatedCrossAttention; deepseek_vl: LlamaDecoderLayer / SiglipEncoderLayer /
                 SamVisionLayer) and the root: 16 bytes / N, plus the root unit (everything outside blocks:
                 embeddings, heads, necks, adaptors) gathered with its gradient through the step, plus the largest
                 block gathered twice (itself and the next, prefetched) and its gradient before the reduce-scatter
  fsdp, one unit fully_shard on the root only, as trimodal/training/distributed.py wraps a step that does not keep
                 ranks in lockstep: 16 bytes / N, plus the whole model and its gradient gathered for the step
  1 GPU          one process, nothing wrapped: 16 bytes per parameter"""


def preset_config(preset: str) -> PreTrainedConfig:
    """The preset's config (either family); a vocabulary left to the tokenizer is the tokenizer's default size."""
    settings = read_preset(preset)
    if "vocab_size" in settings.get("text", settings):
        return build_config(settings)
    return build_config(settings, vocab_size=yaml.safe_load(TOKENIZER_DEFAULTS.read_text())["vocab_size"])


def meta_model(preset: str) -> PreTrainedModel:
    config = preset_config(preset)
    with torch.device("meta"):
        return model_class(config)(config)


def parameter_counts(preset: str) -> dict[str, int]:
    model = meta_model(preset)
    named = list(model.named_parameters())  # each shared (tied) tensor once
    counts = {name: sum(p.numel() for n, p in named if any(n == path or n.startswith(path + ".") for path in paths))
              for name, paths in COMPONENTS[family_of(read_preset(preset))].items()}
    counts["total"] = sum(p.numel() for _, p in named)
    return counts


@dataclass(frozen=True)
class Units:
    """A preset's parameters grouped as per-block FSDP units would hold them."""

    total: int
    root: int  # outside every block: what the root unit gathers
    largest_block: int


def fsdp_units(preset: str) -> Units:
    model = meta_model(preset)
    blocks = [sum(p.numel() for p in m.parameters()) for m in model_blocks(model)]
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


GPU_BYTES, USABLE = 80e9, 0.9  # an 80 GB GPU; 10% left to the CUDA context, allocator slack and buffers
ACTIVATION_HEADER = """\
Per-GPU totals in GB under `fsdp, blocks`: the training state above plus the activations of a fine-tuning step at
{batch} samples per GPU ({lengths}), measured by model/activations.py (the preset's widths, one layer per stack,
on CPU in fp32, scaled by depth and batch; bf16 = half the fp32 bytes, a few percent low: LayerNorm and softmax
statistics stay fp32), without and with activation checkpointing (trainer.activation_checkpointing). `largest
batch`: samples per GPU that fit in {usable:.0f} GB of an 80 GB GPU on the most GPUs listed."""


def activation_table(presets: list[str], gpus: list[int], batch: int, lengths: Lengths) -> list[str]:
    text = f"text {lengths.text} tokens, audio {lengths.audio_seconds:g} s, decoder {lengths.decoder} tokens"
    lines = [ACTIVATION_HEADER.format(batch=batch, lengths=text, usable=GPU_BYTES * USABLE / 1e9), "",
             "| preset | checkpointing | activations per sample | " +
             " | ".join(f"{n} GPU{'s' * (n > 1)}" for n in gpus) + f" | largest batch, {max(gpus)} GPUs |",
             "| --- | --- | ---: |" + " ---: |" * (len(gpus) + 1)]
    for preset in presets:
        units, measured = fsdp_units(preset), measure(preset, lengths)
        for checkpointing in (False, True):
            sample = measured.bytes(1, checkpointing, bf16=True)
            cells = " | ".join(f"{(fsdp_block_bytes(units, n) + sample * batch) / 1e9:.2f}" for n in gpus)
            largest = max(0, int((GPU_BYTES * USABLE - fsdp_block_bytes(units, max(gpus))) // sample))
            lines.append(f"| {preset} | {'yes' if checkpointing else 'no'} | {sample / 1e9:.3f} | {cells} | "
                         f"{largest} |")
    return lines


def named_size(preset: str) -> float | None:
    """The size a preset's name gives, in parameters: deepseek_vl_1.3b -> 1.3e9; None for a name without one."""
    match = re.search(r"_(\d+(?:\.\d+)?)b$", preset)
    return float(match.group(1)) * 1e9 if match else None


def seed_size_line(preset: str, counts: dict[str, int]) -> str:
    llm = sum(counts[row] for row in LLM_ROWS)
    layers = counts["LLM decoder layers + norm"]
    return (f"{preset}: the paper's {named_size(preset) / 1e9:g}B names the LLM; measured LLM {llm / 1e9:.2f}B "
            f"({layers / 1e9:.2f}B in its decoder layers, {(llm - layers) / 1e9:.2f}B in embeddings + lm_head), "
            f"total with both vision towers and the adaptor {counts['total'] / 1e9:.2f}B")


def count_table(presets: list[str]) -> list[str]:
    """One family's presets side by side (and, for DeepSeek-VL, the named sizes against the measured)."""
    table = {p: parameter_counts(p) for p in presets}
    lines = ["| component | " + " | ".join(presets) + " |", "| --- |" + " ---: |" * len(presets)]
    for name in next(iter(table.values())):
        lines.append(f"| {name} | " + " | ".join(f"{table[p][name] / 1e6:.2f} M" for p in presets) + " |")
    named = [p for p in presets if family_of(read_preset(p)) == DEEPSEEK_VL and named_size(p)]
    return lines + ([""] + [seed_size_line(p, table[p]) for p in named] if named else [])


def by_family(presets: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for preset in presets:
        groups.setdefault(family_of(read_preset(preset)), []).append(preset)
    return groups


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trimodal.model.sizes", description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help="conf/model presets of either family (default: all of both)")
    parser.add_argument("--memory", action="store_true", help="per-GPU memory of the training state")
    parser.add_argument("--gpus", nargs="+", default=["1", "2", "4", "8"])
    parser.add_argument("--batch", type=int, help="with --memory: add a step's activations at this batch per GPU")
    parser.add_argument("--text-tokens", type=int, default=Lengths.text,
                        help="text tokens per sample (DeepSeek-VL: per chat turn)")
    parser.add_argument("--audio-seconds", type=float, default=Lengths.audio_seconds)
    parser.add_argument("--decoder-tokens", type=int, default=Lengths.decoder)
    args = parser.parse_args(argv)
    # `--gpus 1 2 full`: nargs="+" swallows the presets that follow the counts too
    gpus = [int(v) for v in args.gpus if v.isdigit()]
    presets = [*args.presets, *(v for v in args.gpus if not v.isdigit())] or [p for ps in PRESETS.values() for p in ps]
    if args.memory:
        print("\n".join(memory_table(presets, gpus)))
        if args.batch:
            lengths = Lengths(args.text_tokens, args.audio_seconds, args.decoder_tokens)
            print("\n" + "\n".join(activation_table(presets, gpus, args.batch, lengths)))
        return
    print("\n\n".join("\n".join(count_table(group)) for group in by_family(presets).values()))


if __name__ == "__main__":
    main()
