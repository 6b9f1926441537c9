"""validate's near-duplicate search alone (trimodal/data/dedup.py near_pairs) at several sizes, on two corpora.

Usage: python benchmarks/near_duplicates.py [--sizes 10000 100000] [--out PATH]
For each corpus (`distinct`: data_throughput.py's pictures, a shape in its own colour on its own background;
`similar`: one grey background, two small discs, every 100th picture a planted JPEG copy of the one 50 before) and
size, a fresh process fingerprints the pictures as validate does, spills them to a RowFile and runs near_pairs:
seconds of the search, its peak RSS (ru_maxrss of that process, fingerprinting included), pairs found, candidates
checked, distances the index computed, planted pairs found, and `tiles_would_compare`: the fingerprint pairs the
norm-sorted tiles used before issue 33 compared (blocks of 1024 rows sorted by norm, cut where norms differ by more
than the threshold allows), counted from the norms without comparing them.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_throughput import (  # noqa: E402
    PLANT_BACK,
    PLANT_EVERY,
    distinct_picture,
    planted_copy,
    similar_picture,
)
from trimodal.data.dedup import (  # noqa: E402
    FINGERPRINT_WIDTH,
    IMAGE_BLOCK,
    IMAGE_GRID,
    NearStats,
    image_fingerprint,
    near_pairs,
)
from trimodal.data.spool import RowFile  # noqa: E402

THRESHOLD = 4.0  # validate.near_duplicate_image_rms's default


def picture(corpus: str, i: int) -> Image.Image:
    if corpus == "distinct":
        return distinct_picture(i)[0]
    if i % PLANT_EVERY == PLANT_EVERY - 1:
        return Image.open(io.BytesIO(planted_copy(similar_picture(i - PLANT_BACK)[0]))).convert("RGB")
    return similar_picture(i)[0]


def tiles_would_compare(norms: np.ndarray, reach: float, block: int = 1024) -> int:
    """Pairs the norm-sorted tiles compared: each block of rows against the columns up to the first whose norm
    exceeds the block's last by more than `reach`."""
    norms = np.sort(norms)
    total = 0
    for start in range(0, len(norms), block):
        stop = min(start + block, len(norms))
        end = int(np.searchsorted(norms, norms[stop - 1] + reach, side="right"))
        total += (stop - start) * (end - start)
    return total


def measure(corpus: str, n: int) -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryFile() as scratch:
        rows = RowFile(scratch, FINGERPRINT_WIDTH["image"])
        norms = np.empty(n)
        for i in range(n):
            fingerprint = image_fingerprint(picture(corpus, i))
            norms[i] = np.linalg.norm(fingerprint.astype(np.float64))
            rows.append(fingerprint)
        fingerprinted = time.perf_counter()
        stats = NearStats()
        pairs = {(i, j) for i, j, _ in near_pairs(rows, THRESHOLD, IMAGE_GRID, IMAGE_BLOCK, stats)}
        searched = time.perf_counter()
    plants = {(i - PLANT_BACK, i) for i in range(n) if i % PLANT_EVERY == PLANT_EVERY - 1} if corpus == "similar" \
        else set()
    return {"corpus": corpus, "records": n, "fingerprint_s": round(fingerprinted - started, 1),
            "search_s": round(searched - fingerprinted, 2), "near_pairs": stats.found, "candidates": stats.candidates,
            "compared": stats.compared, "compared_per_record": round(stats.compared / n, 1),
            "tiles_would_compare": tiles_would_compare(norms, THRESHOLD * np.sqrt(FINGERPRINT_WIDTH["image"])),
            "planted": len(plants), "planted_found": len(plants & pairs),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/near_duplicates.json"))
    parser.add_argument("--one", nargs=2, metavar=("CORPUS", "N"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    results = []
    for corpus in ("distinct", "similar"):
        for n in args.sizes:
            child = subprocess.run([sys.executable, __file__, "--one", corpus, str(n)], capture_output=True, text=True,
                                   check=True)
            results.append(json.loads(child.stdout.splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
