"""Trainer vs a bare PyTorch loop on the same model and batches; loader-only rate; achieved FLOP/s vs peak.

Usage: python benchmarks/train_throughput.py [--steps 200] [--rounds 3] [--out benchmarks/results/train_throughput.json]
Builds synthetic shards (all modality subsets) in a temp dir, then, side by side in one process:
  loader       batches/s of make_loader alone (decode + collate, no model)
  bare         a plain loop: pretraining_losses -> backward -> grad clip -> AdamW step, over the trainer's batches,
               pre-loaded
  trainer      trimodal.training.trainer.train on the same shards (loader, checkpoint at the end, logging)
bare and trainer alternate over --rounds rounds; trainer_vs_bare_ratio is the median of the per-round ratios.
FLOPs are counted by model/flops.py on the bare loop (the same model and batches), the peak is
trimodal/training/mfu.py's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from dvclive import Live  # noqa: E402

from stages.pretrain import build_model  # noqa: E402
from stages.shard import run as shard  # noqa: E402
from tests.shard_fixtures import build_validated, shard_params  # noqa: E402
from trimodal.data.batches import model_inputs  # noqa: E402
from trimodal.model.flops import FlopCounter  # noqa: E402
from trimodal.model.trimodal.objectives import pretraining_losses, total_loss  # noqa: E402
from trimodal.model.trimodal.tasks import pretrain_step  # noqa: E402
from trimodal.params import defaults  # noqa: E402
from trimodal.training.distributed import setup  # noqa: E402
from trimodal.training.mfu import peak_flops  # noqa: E402
from trimodal.training.trainer import TrainJob, data_stream, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/trainer rounds")
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes of the trainer")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/train_throughput.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        root = Path(tmp)
        build_validated(root, n=400)
        shard(root / "validated", root / "tokenizer", root / "shards", shard_params(image_size=64, n_mels=64,
                                                                                    samples_per_shard=64))
        from transformers import AutoTokenizer

        params = defaults()
        params.model = {}
        params.pretrain.shards, params.pretrain.batch_size = str(root / "shards"), args.batch_size
        params.pretrain.steps, params.pretrain.checkpoint_every = args.steps, args.steps
        params.pretrain.num_workers = args.workers
        params.pretrain.log_every = 10  # params.yaml's: the trainer's logging cost is part of what is measured
        tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")

        # exactly the batches the trainer will draw (same shuffle, seed and epoch): a mixed-modality batch
        # costs more than a single-modality one, so unshuffled batches would flatter the bare loop
        start = time.perf_counter()
        stream = data_stream(params.pretrain, 0, {"epoch": 0, "consumed": 0}, setup())
        batches = [next(stream)[1] for _ in range(args.steps)]
        loader_s = time.perf_counter() - start

        def bare() -> tuple[float, float]:
            """The training algorithm by hand: forward, backward, gradient clipping at params' grad_clip (part of
            the recipe, not of the trainer), AdamW. No loader, logging, checkpoints or progress bar."""
            model = build_model(params, params.pretrain.shards, tokenizer)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            g = torch.Generator().manual_seed(0)
            counter = FlopCounter()
            start = time.perf_counter()
            for b in batches:
                with counter:
                    total_loss(model, pretraining_losses(model, model_inputs(b), g)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.pretrain.grad_clip)
                optimizer.step()
                optimizer.zero_grad()
            return time.perf_counter() - start, counter.reset()

        def trainer(round_: int) -> float:
            model = build_model(params, params.pretrain.shards, tokenizer)
            start = time.perf_counter()
            job = TrainJob("bench", params.pretrain, params.trainer, 0, "",
                           replace(params.paths, checkpoints=str(root / f"ckpt{round_}")))
            with Live(str(root / f"live{round_}"), save_dvc_exp=False, dvcyaml=None) as live:  # as the stages log
                train(model, pretrain_step, job, live)
            return time.perf_counter() - start

        # one untimed step warms the process (allocator, kernels) for both; then each is timed from a cold model
        model = build_model(params, params.pretrain.shards, tokenizer)
        total_loss(model, pretraining_losses(model, model_inputs(batches[0]), torch.Generator())).backward()
        # rounds alternate bare and trainer so that a noisy neighbour or a clock change hits both alike;
        # the ratio reported is the median of the per-round ratios
        rounds = []
        for r in range(args.rounds):
            bare_s, flops = bare()
            rounds.append({"bare_s": round(bare_s, 2), "trainer_s": round(trainer(r), 2)})
            rounds[-1]["ratio"] = round(rounds[-1]["bare_s"] / rounds[-1]["trainer_s"], 3)
        bare_s = statistics.median(r["bare_s"] for r in rounds)
        trainer_s = statistics.median(r["trainer_s"] for r in rounds)
        n_params = sum(p.numel() for p in build_model(params, params.pretrain.shards, tokenizer).parameters())
    peak, peak_source = peak_flops(torch.device("cpu"))
    samples = args.steps * args.batch_size
    result = {
        "steps": args.steps, "batch_size": args.batch_size, "parameters": n_params,
        "loader_samples_per_s": round(samples / loader_s, 1),
        "bare_loop_samples_per_s": round(samples / bare_s, 1),
        "trainer_samples_per_s": round(samples / trainer_s, 1),
        "trainer_vs_bare_ratio": statistics.median(r["ratio"] for r in rounds),
        "rounds": rounds,
        "loader_vs_trainer_consumption": round((samples / loader_s) / (samples / trainer_s), 2),
        "achieved_gflops_bare": round(flops / bare_s / 1e9, 2),
        "peak_gflops": round(peak / 1e9, 2), "peak_source": peak_source,
        "mfu_bare": round(flops / bare_s / peak, 4),
        "cpu_count": os.cpu_count(), "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
