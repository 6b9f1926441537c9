"""Loader work per rank for 1 and 2 training processes: samples decoded, shard bytes read, seconds per epoch.

Usage: python benchmarks/loader_per_rank.py [--records 800] [--batch-size 16] [--out PATH]
(default benchmarks/results/loader_per_rank.json). Builds synthetic shards (all modality subsets, 32 samples per
shard) in a temp dir, then runs one training epoch of make_loader exactly as the trainer configures it (global
batch --batch-size split over the ranks, shuffle, drop_last, each rank's own share of the shards) for world sizes
1 and 2, rank by rank in one process. Before issue 10, every rank decoded the whole global batch and kept its
rows, so per-rank work did not shrink at all.
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

from stages.shard import run as shard  # noqa: E402
from tests.shard_fixtures import build_validated, shard_params  # noqa: E402
from trimodal.data.loader import make_loader, rank_share, read_index  # noqa: E402

SHUFFLE = 256


def one_epoch(root: Path, batch_size: int, rank: int, world: int) -> dict:
    index = read_index(str(root))
    share, _ = rank_share(index["splits"]["train"]["shards"], rank, world, seed=0, epoch=0, shuffle=True)
    start = time.perf_counter()
    loader = make_loader(str(root), "train", batch_size // world, shuffle=SHUFFLE, seed=0, epoch=0, drop_last=True,
                         rank=rank, world=world)
    decoded = sum(len(batch["ids"]) for batch in loader)
    return {"samples_decoded": decoded, "seconds": round(time.perf_counter() - start, 3),
            "shards": len(share), "shard_bytes": sum(s["bytes"] for s in share)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/loader_per_rank.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        root = Path(tmp)
        build_validated(root, n=args.records)
        shard(root / "validated", root / "tokenizer", root / "shards",
              shard_params(image_size=64, n_mels=64, samples_per_shard=32))
        one_epoch(root / "shards", args.batch_size, 0, 1)  # warm-up: imports, page cache
        runs = {world: [one_epoch(root / "shards", args.batch_size, r, world) for r in range(world)]
                for world in (1, 2)}
        train_records = read_index(str(root / "shards"))["splits"]["train"]["count"]
    single, pair = runs[1][0], runs[2]
    result = {
        "train_records": train_records, "global_batch": args.batch_size, "per_rank": runs,
        "decoded_per_rank_2_vs_1": round(max(r["samples_decoded"] for r in pair) / single["samples_decoded"], 3),
        "seconds_per_rank_2_vs_1": round(max(r["seconds"] for r in pair) / single["seconds"], 3),
        "steps_per_epoch": {w: runs[w][0]["samples_decoded"] // (args.batch_size // w) for w in runs},
        "cpu_count": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
