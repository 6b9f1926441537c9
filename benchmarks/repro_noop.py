"""Fresh clone -> `dvc repro` (the data DAG on the default demo) -> second `dvc repro` (must be a no-op, < 5 s).

Usage: python benchmarks/repro_noop.py [--out benchmarks/results/repro_noop.json] [--target shard]
Clones the committed HEAD (not the working tree), so commit first.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GX_ANALYTICS_ENABLED": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/repro_noop.json"))
    parser.add_argument("--target", default="shard", help="dvc.yaml stage to reproduce (with its upstream)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        dvc = [sys.executable, "-m", "dvc"]
        first_s, first_out = timed([*dvc, "repro", args.target], clone)
        noop_s, noop_out = timed([*dvc, "repro", args.target], clone)
        status_s, _ = timed([*dvc, "status"], clone)
    result = {
        "target": args.target,
        "first_repro_s": round(first_s, 2),
        "stages_run_first": first_out.count("Running stage"),
        "noop_repro_s": round(noop_s, 2),
        "stages_run_noop": noop_out.count("Running stage"),
        "dvc_status_s": round(status_s, 2),
        "noop_under_5s": noop_s < 5.0,
        "cpu_count": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
