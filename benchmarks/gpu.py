"""Training throughput, MFU and peak memory of a preset under DDP and FSDP, one process per GPU (run by gpu.sh).

Usage (under torchrun, one process per device): python benchmarks/gpu.py --workdir DIR [--preset base]
    [--steps 60] [--batch-per-device 32] [--strategies ddp fsdp] [--checkpointing] [--out benchmarks/results/gpu.json]
Either family's preset (conf/model/): rank 0 builds synthetic shards (all modality subsets) at the preset's image
size and Mel bins in --workdir; then every strategy trains a fresh model of the preset with the family's fine-tuning
step (trimodal: every supervised objective; DeepSeek-VL: its three chat turns, SAM-B frozen as the recipe has it)
through trimodal.training.trainer.train (bf16 autocast on CUDA; FSDP per block) for --steps steps. samples/s and
MFU are the trainer's own figures (model/flops.py over trimodal/training/mfu.py's peak), averaged over the logged
windows after the first (warm-up: allocator, kernels, loader start).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from stages.pretrain import build_model  # noqa: E402
from stages.shard import run as shard  # noqa: E402
from tests.shard_fixtures import build_validated, shard_params  # noqa: E402
from trimodal.model.families import DEEPSEEK_VL, family_named, family_of, read_preset  # noqa: E402
from trimodal.params import defaults  # noqa: E402
from trimodal.training.distributed import barrier, setup  # noqa: E402
from trimodal.training.mfu import peak_flops  # noqa: E402
from trimodal.training.trainer import TrainJob, train  # noqa: E402


class Recorder:
    """Stands in for dvclive.Live: keeps what the trainer logs."""

    def __init__(self):
        self.step, self.rows, self.summary = 0, [], {}

    def log_metric(self, name: str, value: float) -> None:
        self.rows.append((self.step, name.split("/")[-1], value))

    def make_summary(self) -> None:
        pass

    def series(self, name: str) -> list[float]:
        return [v for _, n, v in self.rows if n == name]


def media_sizes(preset: dict) -> dict:
    """The image side and Mel bins the preset's model reads (DeepSeek-VL: its high-resolution tower's side)."""
    if family_of(preset) == DEEPSEEK_VL:
        return {"image_size": preset["high_vision"]["image_size"], "n_mels": 64}
    return {"image_size": preset["image_size"], "n_mels": preset["n_mels"]}


def build_shards(workdir: Path, preset: dict, records: int, world: int) -> Path:
    build_validated(workdir, n=records)
    per_shard = max(8, records // (4 * world))  # several shards per rank
    shard(workdir / "validated", workdir / "tokenizer", workdir / "shards",
          shard_params(samples_per_shard=per_shard, **media_sizes(preset)))
    return workdir / "shards"


def run(strategy: str, preset_name: str, shards: Path, args, world) -> dict:
    from transformers import AutoTokenizer

    params = defaults([f"model={preset_name}"])  # the family's stage settings too (its finetune's frozen parts)
    settings = replace(params.finetune, shards=str(shards), steps=args.steps,
                       batch_size=args.batch_per_device * world.size,
                       checkpoint_every=args.steps,  # one checkpoint, after the last timed window
                       log_every=max(1, args.steps // 6), num_workers=args.workers, question_noise=0.0)
    tokenizer = AutoTokenizer.from_pretrained(shards.parent / "tokenizer")
    model = build_model(params, str(shards), tokenizer)
    step = family_named(family_of(params.model)).step("finetune", tokenizer)
    if world.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(world.device)
    live = Recorder() if world.main else None
    trainer = replace(params.trainer, devices=world.size, strategy=strategy,
                      activation_checkpointing=args.checkpointing)
    job = TrainJob(strategy, settings, trainer, 0, "",
                   replace(params.paths, checkpoints=str(Path(args.workdir) / "checkpoints")))
    train(model, step, job, live, world=world)
    peak_mem = torch.tensor(float(torch.cuda.max_memory_allocated(world.device)) if world.device.type == "cuda"
                            else 0.0, device=world.device)
    if world.size > 1:
        torch.distributed.all_reduce(peak_mem, op=torch.distributed.ReduceOp.MAX)
    if not world.main:
        return {}
    timed = slice(1, None) if len(live.series("mfu")) > 1 else slice(None)
    return {"samples_per_s": round(statistics.mean(live.series("samples_per_s")[timed]), 2),
            "mfu": round(statistics.mean(live.series("mfu")[timed]), 4),
            "peak_memory_gib_max_rank": round(peak_mem.item() / 2**30, 3),
            "parameters": sum(p.numel() for p in model.parameters()),
            "final_loss": round(live.series("loss")[-1], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-per-device", type=int, default=32)
    parser.add_argument("--records", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp"])
    parser.add_argument("--checkpointing", action="store_true", help="trainer.activation_checkpointing")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/gpu.json"))
    args = parser.parse_args()
    world = setup()
    shards = Path(args.workdir) / "shards"
    if world.main:
        build_shards(Path(args.workdir), read_preset(args.preset), args.records, world.size)
    barrier(world)
    results = {s: run(s, args.preset, shards, args, world) for s in args.strategies}
    if world.main:
        peak, source = peak_flops(world.device)
        device = torch.cuda.get_device_name(world.device) if world.device.type == "cuda" else "cpu"
        out = {"preset": args.preset, "devices": world.size, "device": device, "peak_flops_per_device": peak,
               "peak_source": source, "steps": args.steps, "batch_per_device": args.batch_per_device,
               "activation_checkpointing": args.checkpointing,
               "dtype": "bf16 autocast" if world.device.type == "cuda" else "fp32", "torch": torch.__version__,
               **results}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
