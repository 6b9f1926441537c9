"""Data stages at scale: ingest images/s vs img2dataset alone, validate and shard records/s, peak RSS at two sizes.

Usage: python benchmarks/data_throughput.py [--records 10000] [--small 1000] [--out PATH] [--keep DIR]
       [--corpus distinct|similar] [--incremental] [--no-reference]
Generates --records distinct records (a 64x64 PNG shape in a random colour, a 0.5 s WAV of tone pulses at a random
pitch, text, caption, question, answer, label: stages/demo.py's drawing and synthesis) and serves them from a
threaded http.server on 127.0.0.1. For each size (--small first, then --records, the small table being the first
rows of the large one), in a scratch project whose params.yaml is conf/ composed with data.sources naming the
table, it runs `python -m stages.<name>` as dvc.yaml does, from a copy of the working tree taken at the start:
img2dataset alone on the image URLs (with the arguments stages/ingest.py fetch_images passes), ingest on the same rows
without their audio (the same URL list: `ingest_vs_img2dataset`, the goal), ingest on the whole rows
(`ingest_with_audio_vs_img2dataset`), img2dataset alone again (the two bracket the ingests, so load that comes and
goes hits both sides; their mean is the reference),
validate, tokenizer (untimed in the ratios: shard needs its output) and shard. Each process is timed by wall clock,
start-up and imports included; records/s = input rows / seconds. Peak memory per stage, two ways: `peak_rss_mb`, the
ru_maxrss that wait4 reports (the largest single process of the tree: img2dataset spawns a worker and a logger), and
`tree_peak_rss_mb`, the sum of RSS over the process tree sampled every 0.1 s with psutil (shared pages counted once
per process). The goals (issue 12) are judged at --records; `--keep DIR` keeps the scratch projects there (to
profile a stage in place).

Issue 33: `near_duplicates` per size is what validate's near-duplicate search holds (fingerprints, near pairs; a
run's search cost is in its log, since an incremental run searches less, and in benchmarks/near_duplicates.py).
`--corpus similar` draws every picture on one background with two small objects (nearly equal norms and thumbnails:
what made norm-sorted tiles quadratic) and plants a near duplicate every 100th record (the picture of 50 records
before as JPEG, its sound and text): `planted` says how many validate found. `--incremental` appends 1% new rows to
the --records table, reruns ingest and validate in that project (data/cache warm: media, decoded media, shards,
validate's ledger), then both from scratch on the grown table in a fresh project, and compares every output file
byte for byte. `--no-reference` skips img2dataset alone and the image-only ingest.
"""
from __future__ import annotations

import argparse
import colorsys
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import psutil  # installed with dvc
import soundfile as sf
from PIL import Image, ImageDraw
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.demo import ALL_SHAPES, draw_shape, rng_for, synthesize_audio  # noqa: E402
from stages.ingest import img2dataset_args  # noqa: E402
from tests.s3_server import free_port  # noqa: E402
from tests.test_pipeline_e2e import clone_worktree  # noqa: E402
from trimodal.atomic import write_jsonl  # noqa: E402
from trimodal.params import load_params  # noqa: E402

TABLE = "data/sources/bench/records.jsonl"  # ingest reads tables under data/sources/ only
SAMPLE_RATE, AUDIO_SECONDS, IMAGE_SIZE = 16000, 0.5, 64
GOALS = {"ingest_vs_img2dataset": 0.8, "validate_vs_ingest": 1.0, "shard_vs_ingest": 1.0, "rss_large_vs_small": 1.3}
IMG2DATASET = "import json, sys, img2dataset; img2dataset.download(**json.loads(sys.argv[1]))"


def distinct_picture(i: int) -> tuple[Image.Image, tuple[str, tuple[int, ...]], np.random.Generator]:
    """Record i's picture: its own shape, colour and background; with (shape, colour) and the generator, which goes
    on to its sound."""
    rng = rng_for(12, 0, i)
    shape, rgb = ALL_SHAPES[i % len(ALL_SHAPES)], tuple(int(v) for v in rng.integers(0, 256, 3))
    return draw_shape(shape, rgb, IMAGE_SIZE, rng), (shape, rgb), rng


def make_record(i: int, media: Path, base_url: str) -> dict:
    """Record i: its own shape, colour, background, pitch and pulse count, so validate's dedup keeps every one."""
    picture, (shape, rgb), rng = distinct_picture(i)
    picture.save(media / f"{i:06d}.png", format="PNG")
    audio = synthesize_audio(int(rng.integers(1, 9)), float(rng.uniform(300, 2400)), SAMPLE_RATE, AUDIO_SECONDS, rng,
                             max_pulses=8)
    sf.write(media / f"{i:06d}.wav", audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return {"id": f"bench-{i:06d}", "image_url": f"{base_url}/{i:06d}.png", "audio_url": f"{base_url}/{i:06d}.wav",
            "text": f"record {i}: a {shape} in rgb{rgb}", "caption": f"a {shape} number {i}",
            "question": "what shape is it?", "answer": shape, "label": shape}


PLANT_EVERY, PLANT_BACK = 100, 50  # --corpus similar: record i = 99 mod 100 repeats record i - 50


def similar_picture(i: int) -> tuple[Image.Image, np.random.Generator]:
    """One grey background, two 10-pixel discs of saturated colours placed at random: every such picture has nearly
    the same norm and thumbnail, yet distinct ones stay > 8 apart (the threshold is 4)."""
    rng = rng_for(13, 0, i)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for _ in range(2):
        x, y = (int(v) for v in rng.integers(0, IMAGE_SIZE - 10, 2))
        rgb = colorsys.hsv_to_rgb(rng.uniform(), 1.0, rng.uniform(0.8, 1.0))
        draw.ellipse((x, y, x + 10, y + 10), fill=tuple(int(255 * v) for v in rgb))
    return image, rng


def planted_copy(picture: Image.Image) -> bytes:
    """A planted near duplicate: the picture re-encoded as JPEG."""
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_similar_record(i: int, media: Path, base_url: str) -> dict:
    """Record i of the similar-pictures corpus (similar_picture); a planted near duplicate (i = 99 mod 100) is
    record i - 50's picture as JPEG, with its sound and text."""
    if i % PLANT_EVERY == PLANT_EVERY - 1:
        original = i - PLANT_BACK
        (media / f"{i:06d}.jpg").write_bytes(planted_copy(Image.open(media / f"{original:06d}.png")))
        return {**similar_fields(original, base_url), "id": f"bench-{i:06d}", "image_url": f"{base_url}/{i:06d}.jpg"}
    image, rng = similar_picture(i)
    image.save(media / f"{i:06d}.png", format="PNG")
    audio = synthesize_audio(int(rng.integers(1, 9)), float(rng.uniform(300, 2400)), SAMPLE_RATE, AUDIO_SECONDS, rng,
                             max_pulses=8)
    sf.write(media / f"{i:06d}.wav", audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return similar_fields(i, base_url)


def similar_fields(i: int, base_url: str) -> dict:
    return {"id": f"bench-{i:06d}", "image_url": f"{base_url}/{i:06d}.png", "audio_url": f"{base_url}/{i:06d}.wav",
            "text": f"record {i}: two discs", "caption": f"discs number {i}", "question": "how many discs?",
            "answer": "two", "label": "discs"}


def planted(rows: list[dict]) -> dict[str, str]:
    """id of each planted near duplicate -> the id of the record it repeats."""
    return {r["id"]: f"bench-{int(r['id'][6:]) - PLANT_BACK:06d}" for r in rows if r["image_url"].endswith(".jpg")}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class FileServer(ThreadingHTTPServer):
    request_queue_size = 128  # 16 img2dataset threads and 16 audio threads connect at once (the default is 5)
    daemon_threads = True


@contextmanager
def serve_python(root: Path):
    """A threaded static file server on loopback (http.server): yields its base URL."""
    server = FileServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


NGINX_CONF = """daemon off; master_process off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


@contextmanager
def serve_nginx(root: Path):
    """nginx serving `root` on loopback, one process, stopped on exit: yields its base URL."""
    with tempfile.TemporaryDirectory(prefix="trimodal-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, root=root))
        proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp], stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/", timeout=2)
                except urllib.error.HTTPError:  # 403/404 for the folder: nginx is up
                    break
                except OSError:
                    assert proc.poll() is None and time.time() < deadline, (Path(tmp) / "error.log").read_text()
                    time.sleep(0.1)
                else:
                    break
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def serve(root: Path, kind: str):
    """The media server: nginx (C, sendfile, keep-alive: next to no CPU, like a remote host) or Python's
    http.server (~0.6 ms of CPU a request on the cores under test, and HTTP/1.0: no connection reuse)."""
    return serve_nginx(root) if kind == "nginx" else serve_python(root)


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def measured(name: str, cmd: list[str], cwd: Path, code: Path) -> dict:
    """Run cmd in cwd with `code` on PYTHONPATH, output to cwd/<name>.log: wall seconds, wait4's ru_maxrss, and the
    polled tree RSS peak."""
    env = {**os.environ, "PYTHONPATH": str(code), "GX_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    log, peak = cwd / f"{name}.log", 0
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while not (waited := os.wait4(proc.pid, os.WNOHANG))[0]:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.1)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(waited[1])  # reaped here, not by Popen
    if proc.returncode:
        sys.exit(f"{name} failed ({proc.returncode}) in {cwd}:\n{log.read_text()[-4000:]}")
    print(f"  {name}: {seconds:.1f} s", flush=True)
    usage = waited[2]  # of the process and its reaped descendants
    return {"seconds": round(seconds, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "tree_peak_rss_mb": round(peak / 2**20, 1)}


def img2dataset_rate(log: Path) -> float | None:
    """The images/s img2dataset itself reports over the whole download (its last `total` line), None if absent."""
    rates = re.findall(r"total .* images per sec: (\d+)", log.read_text())
    return float(rates[-1]) if rates else None


def img2dataset_alone(project: Path, code: Path, urls: list[str], run: int) -> dict:
    """img2dataset straight from the file server, with the arguments stages/ingest.py fetch_images passes."""
    ingest = load_params(str(project / "params.yaml")).ingest
    url_list, out = project / "i2d-urls.parquet", project / f"i2d-out-{run}"
    pd.DataFrame({"url": urls, "row_key": [str(i) for i in range(len(urls))]}).to_parquet(url_list)
    kwargs = img2dataset_args(url_list, out, ingest)
    result = measured(f"img2dataset-{run}", [sys.executable, "-c", IMG2DATASET, json.dumps(kwargs)], project, code)
    result["images"] = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    result["img2dataset_reported_images_per_s"] = img2dataset_rate(project / f"img2dataset-{run}.log")
    shutil.rmtree(out)
    return result


def ingest_images_only(root: Path, code: Path, rows: list[dict]) -> dict:
    """ingest on the same rows without their audio: the very URL list img2dataset alone gets."""
    project = root / f"project-{len(rows)}-images"
    (project / TABLE).parent.mkdir(parents=True)
    write_jsonl(project / TABLE, [{k: v for k, v in row.items() if k != "audio_url"} for row in rows])
    measured("params", [sys.executable, "-m", "stages.common.params", "write", f"data.sources=[{TABLE}]"], project,
             code)
    result = measured("ingest-images-only", [sys.executable, "-m", "stages.ingest"], project, code)
    result["images_per_s"] = round(len(rows) / result["seconds"], 1)
    result["img2dataset_reported_images_per_s"] = img2dataset_rate(project / "ingest-images-only.log")
    shutil.rmtree(project / "data")
    return result


def run_size(root: Path, code: Path, rows: list[dict], reference: bool = True) -> dict:
    """Every stage of `code` on `rows` in a fresh scratch project under root; `reference`: img2dataset alone and the
    image-only ingest too."""
    n, project = len(rows), root / f"project-{len(rows)}"
    (project / TABLE).parent.mkdir(parents=True)
    write_jsonl(project / TABLE, rows)
    stage = [sys.executable, "-m"]
    measured("params", [*stage, "stages.common.params", "write", f"data.sources=[{TABLE}]"], project, code)
    print(f"{n} records:", flush=True)
    urls = [r["image_url"] for r in rows]
    i2d = [img2dataset_alone(project, code, urls, 1)] if reference else []
    images_only = ingest_images_only(root, code, rows) if reference else None
    steps = {"ingest": measured("ingest", [*stage, "stages.ingest"], project, code)}
    if reference:
        i2d.append(img2dataset_alone(project, code, urls, 2))
    for name in ("validate", "tokenizer", "shard"):
        steps[name] = measured(name, [*stage, f"stages.{name}"], project, code)
    for step in steps.values():
        step["records_per_s"] = round(n / step["seconds"], 1)
    steps["ingest"]["images_per_s"] = steps["ingest"]["records_per_s"]  # every record has one image
    steps["ingest"]["img2dataset_reported_images_per_s"] = img2dataset_rate(project / "ingest.log")
    raw = json.loads((project / "data/raw/summary.json").read_text())
    validated = json.loads((project / "metrics/validate.json").read_text())
    result = {
        "records": n,
        **steps,
        "ingest_fetched": {k: raw[k] for k in ("images_fetched", "images_failed", "audio_fetched", "audio_failed")},
        "validated": {k: validated[k] for k in ("n_accepted", "n_rejected", "n_duplicates", "duplicates",
                                                "gate_passed")},
        "near_duplicates": validated["duplicates"].get("search"),
        "validated_equals_input": validated["n_accepted"] == n,
        "validate_vs_ingest": round(steps["ingest"]["seconds"] / steps["validate"]["seconds"], 3),
        "shard_vs_ingest": round(steps["ingest"]["seconds"] / steps["shard"]["seconds"], 3),
    }
    if plants := planted(rows):
        quarantine = (project / "data/validated/quarantine.jsonl").read_text().splitlines()
        found = {q["id"]: q.get("duplicate_of") for q in map(json.loads, quarantine)}
        result["planted"] = {"near_duplicates": len(plants),
                             "found": sum(found.get(dup) == kept for dup, kept in plants.items())}
    if reference:
        i2d_s = sum(r["seconds"] for r in i2d) / len(i2d)
        result.update(img2dataset_alone={"runs": i2d, "images_per_s": round(n / i2d_s, 1)},
                      ingest_images_only=images_only,
                      ingest_vs_img2dataset=round(i2d_s / images_only["seconds"], 3),  # the same URLs, the same job
                      ingest_with_audio_vs_img2dataset=round(i2d_s / steps["ingest"]["seconds"], 3))
    return result


def tree_digests(project: Path) -> dict[str, str]:
    """sha256 of every file ingest and validate write (data/raw, data/validated, metrics/validate.json)."""
    files = [*(project / "data/raw").rglob("*"), *(project / "data/validated").rglob("*"),
             project / "metrics/validate.json"]
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)
            if p.is_file()}


def run_incremental(root: Path, code: Path, rows: list[dict], grown: list[dict]) -> dict:
    """ingest and validate again in the --records project after appending rows (grown = rows + the new ones), then
    both from scratch on `grown` in a fresh project; seconds per stage, ratios and byte identity."""
    project, fresh = root / f"project-{len(rows)}", root / f"project-{len(grown)}-fresh"
    write_jsonl(project / TABLE, grown)
    (fresh / TABLE).parent.mkdir(parents=True)
    write_jsonl(fresh / TABLE, grown)
    measured("params", [sys.executable, "-m", "stages.common.params", "write", f"data.sources=[{TABLE}]"], fresh, code)
    print(f"+{len(grown) - len(rows)} rows, incremental then from scratch:", flush=True)
    steps = {}
    for name in ("ingest", "validate"):
        steps[name] = {"incremental": measured(f"{name}-incremental", [sys.executable, "-m", f"stages.{name}"],
                                               project, code)}
    for name in ("ingest", "validate"):
        steps[name]["from_scratch"] = measured(name, [sys.executable, "-m", f"stages.{name}"], fresh, code)
        steps[name]["incremental_vs_from_scratch"] = round(
            steps[name]["incremental"]["seconds"] / steps[name]["from_scratch"]["seconds"], 4)
    same, other = tree_digests(project), tree_digests(fresh)
    return {"records": len(rows), "appended": len(grown) - len(rows), **steps,
            "outputs_compared": len(other), "byte_identical": same == other,
            "differing": sorted(k for k in set(same) | set(other) if same.get(k) != other.get(k))[:20]}


def verdict(small: dict, large: dict) -> dict:
    rss = {name: {key: round(large[name][key] / small[name][key], 3) for key in ("peak_rss_mb", "tree_peak_rss_mb")}
           for name in ("ingest", "validate", "shard")}
    met = {name: large[name] >= GOALS[name] for name in ("ingest_vs_img2dataset", "validate_vs_ingest",
                                                          "shard_vs_ingest") if name in large}
    met.update({f"rss_flat_{name}": ratio["tree_peak_rss_mb"] <= GOALS["rss_large_vs_small"]
                and ratio["peak_rss_mb"] <= GOALS["rss_large_vs_small"] for name, ratio in rss.items()})
    return {"rss_large_vs_small": rss, "goals": GOALS, "goals_met": met}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--small", type=int, default=1000, help="the size the memory ratio compares against")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/data_throughput.json"))
    parser.add_argument("--keep", help="build the scratch projects in this (new) folder and keep them")
    parser.add_argument("--corpus", choices=["distinct", "similar"], default="distinct",
                        help="distinct pictures (default) or similar ones with planted near duplicates")
    parser.add_argument("--incremental", action="store_true", help="then append 1%% rows and rerun ingest, validate")
    parser.add_argument("--no-reference", action="store_true", help="skip img2dataset alone, image-only ingest")
    parser.add_argument("--server", choices=["nginx", "python"],
                        help="the media server (default: nginx when installed, else python)")
    args = parser.parse_args()
    server = args.server or ("nginx" if shutil.which("nginx") else "python")
    if server == "nginx" and not shutil.which("nginx"):
        sys.exit("--server nginx: nginx is not installed (apt-get install nginx-light)")
    result = {"media_server": server, "corpus": args.corpus, "cpu_count": os.cpu_count(),
              "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        media = Path(tmp) / "media"
        media.mkdir(parents=True)
        code = root / "code"
        code.mkdir(parents=True)
        clone_worktree(code)  # the working tree as it is now: edits made while this runs do not mix in
        with serve(media, server) as base_url:
            make = make_similar_record if args.corpus == "similar" else make_record
            total = args.records + (args.records // 100 if args.incremental else 0)
            rows = [make(i, media, base_url) for i in tqdm(range(total), desc="generate", unit="record")]
            reference = not args.no_reference
            small = run_size(root, code, rows[:args.small], reference)
            large = run_size(root, code, rows[:args.records], reference)
            result.update(small=small, large=large, **verdict(small, large))
            if args.incremental:
                result["incremental"] = run_incremental(root, code, rows[:args.records], rows)
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["total_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
