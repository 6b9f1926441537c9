"""Shard write records/s, and loader samples/s against a raw sequential read of the same tar bytes.

Usage: python benchmarks/shard_loader.py [--records 512] [--repeats 3] [--out benchmarks/results/shard_loader.json]
Builds a synthetic validated set (all 7 modality subsets, demo-sized media) in a temp dir, runs the
shard stage's core on it, then reads the train split three ways, side by side in one process:
raw tarfile iteration (every member's bytes, no decoding), make_loader with 0 workers, and with 2
(batch 32, shuffle buffer 256, count and member checks on: the training configuration). Best of --repeats.
The loader's extra cost over the raw read is npy decoding, collation into padded tensors and, with workers,
process start-up and inter-process transfer of the batches.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.shard import run as shard  # noqa: E402
from tests.shard_fixtures import build_validated, shard_params  # noqa: E402
from trimodal.data.loader import make_loader  # noqa: E402

BATCH, SHUFFLE = 32, 256


def raw_read(paths: list[Path]) -> tuple[int, int]:
    """Every member of every tar, read sequentially: (samples, bytes)."""
    keys, total = set(), 0
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                total += len(tar.extractfile(member).read())
                keys.add((path.name, member.name.split(".", 1)[0]))
    return len(keys), total


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/shard_loader.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        root = Path(tmp)
        build_validated(root, n=args.records)
        params = shard_params(image_size=64, n_mels=64, samples_per_shard=128)
        write_s, index = best_of(args.repeats, lambda: shard(root / "validated", root / "tokenizer", root / "shards",
                                                             params))
        train = [root / "shards" / s["name"] for s in index["splits"]["train"]["shards"]]
        n_train = index["splits"]["train"]["count"]
        raw_s, (raw_n, raw_bytes) = best_of(args.repeats, lambda: raw_read(train))
        assert raw_n == n_train
        result = {"records": args.records, "train_samples": n_train, "train_bytes": raw_bytes,
                  "train_shards": len(train), "samples_per_shard": params.shard.samples_per_shard,
                  "image_size": params.shard.image_size, "n_mels": params.shard.n_mels,
                  "loader_batch_size": BATCH, "loader_shuffle": SHUFFLE,
                  "shard_write_records_per_s": round(args.records / write_s, 1),
                  "raw_read_samples_per_s": round(n_train / raw_s, 1)}
        for workers in (0, 2):
            def consume(w=workers):
                return sum(len(b["ids"]) for b in make_loader(str(root / "shards"), "train", BATCH, shuffle=SHUFFLE,
                                                              num_workers=w))
            load_s, n = best_of(args.repeats, consume)
            assert n == n_train
            result[f"loader_w{workers}_samples_per_s"] = round(n_train / load_s, 1)
            result[f"loader_w{workers}_vs_raw_read"] = round(raw_s / load_s, 3)
    result["cpu_count"] = os.cpu_count()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
