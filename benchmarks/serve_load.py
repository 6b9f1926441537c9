"""Load test of `trimodal serve`: the FP32 student against the INT8 student, side by side on one server.

    python benchmarks/serve_load.py                      # after `dvc repro`: models/student, models/student-int8
    python benchmarks/serve_load.py --requests 200 --concurrency 8 --rounds 2
Run it from the project root (models/ and data/sources/demo/ are read from the working directory).

One `trimodal serve` process (127.0.0.1, a free port) serves both models; requests are the demo records'
(data/sources/demo/records.jsonl: their image, sound and text, and their question), sent with the official `openai`
client from `--concurrency` threads. The two models take turns, `--rounds` times each (A B A B: this VM's speed
drifts within minutes, so a ratio taken round by round is worth more than two absolute times). Per model: p50 /
p95 / max latency, throughput (requests/s), errors (must be 0), the accuracy of the answers against the records',
and the server's batching (requests per forward pass). Writes benchmarks/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.trimodal.conftest import start_server, stop_server  # noqa: E402 - one way to run the server

DEMO = Path("data/sources/demo")  # relative to the project the DAG ran in (the working directory)
AUDIO_FORMATS = {".wav": "wav", ".mp3": "mp3", ".flac": "flac"}


def requests_from_demo(n: int) -> list[tuple[list[dict], str]]:
    """(content parts, expected answer) for the first n demo records with a question, each sent as the user would:
    its image as a data: URL, its sound as base64, its text, then its question."""
    out = []
    with open(DEMO / "records.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if not record.get("question") or record.get("group") == "fusion":
                continue
            parts = []
            if record.get("image_url"):
                data = base64.b64encode((DEMO / record["image_url"]).read_bytes()).decode()
                parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
            if record.get("audio_url"):
                path = DEMO / record["audio_url"]
                parts.append({"type": "input_audio", "input_audio": {
                    "data": base64.b64encode(path.read_bytes()).decode(), "format": AUDIO_FORMATS[path.suffix]}})
            if record.get("text"):
                parts.append({"type": "text", "text": record["text"]})
            parts.append({"type": "text", "text": record["question"]})
            out.append((parts, record["answer"]))
            if len(out) == n:
                break
    if not out:
        raise SystemExit(f"no demo records with a question in {DEMO}: run `dvc repro demo` first")
    return out


def load(client: openai.OpenAI, model: str, work: list[tuple[list[dict], str]], concurrency: int) -> dict:
    def one(item):
        parts, expected = item
        started = time.perf_counter()
        try:
            reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": parts}])
        except openai.APIError as e:
            return time.perf_counter() - started, None, f"{type(e).__name__}: {e}"
        return time.perf_counter() - started, reply.choices[0].message.content == expected, None

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, work))
    wall = time.perf_counter() - started
    latencies = sorted(r[0] * 1000 for r in results)
    errors = [r[2] for r in results if r[2]]
    answered = [r[1] for r in results if r[2] is None]
    return {"requests": len(work), "wall_s": round(wall, 3), "throughput_rps": round(len(work) / wall, 2),
            "p50_ms": round(statistics.median(latencies), 1),
            "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
            "max_ms": round(latencies[-1], 1), "errors": len(errors), "error_examples": errors[:3],
            "answer_accuracy": round(sum(answered) / len(answered), 4) if answered else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["models/student", "models/student-int8"])
    ap.add_argument("--requests", type=int, default=200, help="per model per round")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/serve_load.json")
    args = ap.parse_args()
    folders = {Path(m).resolve().name: Path(m).resolve() for m in args.models}
    for folder in folders.values():
        if not (folder / "config.json").is_file():
            raise SystemExit(f"{folder}: no model; run `dvc repro` first")
    work = requests_from_demo(args.requests)
    work = list(itertools.islice(itertools.cycle(work), args.requests))
    proc, base = start_server(folders, "--max-batch-size", str(args.max_batch_size),
                              "--max-wait-ms", str(args.max_wait_ms))
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
        for name in folders:  # warm-up: first calls pay for lazy initialisation
            load(client, name, work[: args.concurrency * 2], args.concurrency)
        rounds: dict[str, list[dict]] = {name: [] for name in folders}
        for _ in range(args.rounds):
            for name in folders:
                rounds[name].append(load(client, name, work, args.concurrency))
                print(f"{name}: {json.dumps(rounds[name][-1])}", flush=True)
        batching = httpx.get(f"{base}/health").json()["models"]
    finally:
        stop_server(proc)
    result = {"benchmark": "serve_load", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "models": {name: {"rounds": r, "p50_ms_median": statistics.median(x["p50_ms"] for x in r),
                                "p95_ms_median": statistics.median(x["p95_ms"] for x in r),
                                "throughput_rps_median": statistics.median(x["throughput_rps"] for x in r),
                                "errors": sum(x["errors"] for x in r),
                                "requests_per_batch": round(batching[name]["requests"]
                                                            / max(1, batching[name]["batches"]), 2)}
                         for name, r in rounds.items()}}
    names = list(folders)
    if len(names) == 2:  # B / A per round, the drift-free comparison
        a, b = (rounds[n] for n in names)
        pairs = list(zip(a, b, strict=True))
        result["ratio"] = {"of": f"{names[1]} / {names[0]}",
                           "throughput": [round(y["throughput_rps"] / x["throughput_rps"], 3) for x, y in pairs],
                           "p50": [round(y["p50_ms"] / x["p50_ms"], 3) for x, y in pairs]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=2))
    if any(m["errors"] for m in result["models"].values()):
        raise SystemExit("errors during the load test (see error_examples)")


if __name__ == "__main__":
    main()
