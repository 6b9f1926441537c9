"""Trainer vs a bare PyTorch loop on the same model and batches; loader-only rate; achieved FLOP/s vs peak.

Usage: python benchmarks/train_throughput.py [--steps 100] [--out benchmarks/results/train_throughput.json]
Builds synthetic shards (all modality subsets) in a temp dir, then, side by side in one process:
  loader       batches/s of make_loader alone (decode + collate, no model)
  bare         a plain loop: pretraining_losses -> backward -> AdamW step, over the trainer's batches, pre-loaded
  trainer      stages.common.trainer.train on the same shards (loader, checkpoint at the end, logging)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from model.objectives import pretraining_losses  # noqa: E402
from stages.common.params import Params  # noqa: E402
from stages.common.trainer import data_stream, measured_peak_flops, model_inputs, train  # noqa: E402
from stages.pretrain import build_model, pretrain_step  # noqa: E402
from stages.shard import run as shard  # noqa: E402
from tests.shard_fixtures import build_validated, shard_params  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/train_throughput.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        root = Path(tmp)
        build_validated(root, n=400)
        shard(root / "validated", root / "tokenizer", root / "shards", shard_params(image_size=64, n_mels=64,
                                                                                    samples_per_shard=64))
        from transformers import AutoTokenizer

        params = Params()
        params.model = {}
        params.pretrain.shards, params.pretrain.batch_size = str(root / "shards"), args.batch_size
        params.pretrain.steps, params.pretrain.checkpoint_every = args.steps, args.steps
        params.pretrain.log_every = args.steps
        tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")

        # exactly the batches the trainer will draw (same shuffle, seed and epoch): a mixed-modality batch
        # costs more than a single-modality one, so unshuffled batches would flatter the bare loop
        start = time.perf_counter()
        stream = data_stream(params.pretrain, 0, 0, 0)
        batches = [next(stream)[2] for _ in range(args.steps)]
        loader_s = time.perf_counter() - start

        model = build_model(params, params.pretrain.shards, tokenizer)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        sum(pretraining_losses(model, model_inputs(batches[0]), g).values()).backward()  # warm-up, untimed
        optimizer.zero_grad()
        start = time.perf_counter()
        for b in batches:
            losses = pretraining_losses(model, model_inputs(b), g)
            sum(losses.values()).backward()
            optimizer.step()
            optimizer.zero_grad()
        bare_s = time.perf_counter() - start

        model = build_model(params, params.pretrain.shards, tokenizer)
        start = time.perf_counter()
        train(model, pretrain_step, params.pretrain, 0, root / "ckpt", desc="bench")
        trainer_s = time.perf_counter() - start
        n_params = sum(p.numel() for p in model.parameters())
        positions = sum(int(b["image_present"].sum()) * model.config.num_patches + int(b["text_mask"].sum())
                        + int(b["mel_lengths"].sum()) // 4 for b in batches)
    peak = measured_peak_flops(1024, 10)
    samples = args.steps * args.batch_size
    result = {
        "steps": args.steps, "batch_size": args.batch_size, "parameters": n_params,
        "loader_samples_per_s": round(samples / loader_s, 1),
        "bare_loop_samples_per_s": round(samples / bare_s, 1),
        "trainer_samples_per_s": round(samples / trainer_s, 1),
        "trainer_vs_bare_ratio": round(bare_s / trainer_s, 3),
        "loader_vs_trainer_consumption": round((samples / loader_s) / (samples / trainer_s), 2),
        "achieved_flops_bare": round(6 * n_params * positions / bare_s / 1e9, 2),
        "matmul_peak_gflops": round(peak / 1e9, 2),
        "mfu_bare": round(6 * n_params * positions / bare_s / peak, 4),
        "cpu_count": os.cpu_count(), "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    result["achieved_gflops_bare"] = result.pop("achieved_flops_bare")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
