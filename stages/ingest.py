"""Stage `ingest`: every row of every source table -> data/raw/ (canonical media shards + manifest).

Images are fetched by img2dataset through a loopback HTTP server (stages/common/fileserver.py) that fetches
each source, local or remote, within `ingest.fetch_timeout_s`; audio through the same bounded fetch with a
thread pool; text is inline. Nothing is
judged here beyond "could it be fetched": decoding and rejection are validate's job, so every input row
appears in data/raw/manifest.jsonl with its payload location or the reason it could not be fetched.

Outputs (rewritten canonically so identical inputs give identical bytes and DVC hashes):
  data/raw/manifest.jsonl        one line per input row, in source order
  data/raw/images-NNNNNN.tar     raw image bytes, member name = row_key
  data/raw/audio-NNNNNN.tar      raw audio bytes, member name = row_key
  data/raw/summary.json          counts
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from stages.common.atomic import atomic_dir, write_json, write_jsonl
from stages.common.fetch import Fetched, fetch_one
from stages.common.fileserver import LoopbackServer
from stages.common.params import IngestParams, load_params
from stages.common.sources import SourceError, SourceRow, read_table, resolve_url, scheme_of, untracked_table
from stages.common.tars import write_tar

OUT_DIR = Path("data/raw")
TRACKED_TABLES = Path("data/sources")  # ingest's dvc.yaml dep: local tables must live here to be hashed
FETCHABLE = ("", "file", "http", "https", "s3")
LOOPBACK_SLACK_S = 5  # img2dataset waits this much longer than the loopback server's own fetch may take


def plan_fetches(rows: list[SourceRow], column: str) -> tuple[dict[str, str], dict[str, Fetched]]:
    """row_key -> absolute URL to fetch, and row_key -> immediate failure (unsupported scheme)."""
    todo: dict[str, str] = {}
    failed: dict[str, Fetched] = {}
    for row in rows:
        url = (row.fields or {}).get(column)
        if not url:
            continue
        absolute = resolve_url(url, row.source)
        if scheme_of(absolute) not in FETCHABLE:
            failed[row.row_key] = Fetched(error=f"unsupported URL scheme {scheme_of(absolute)!r}")
        else:
            todo[row.row_key] = absolute
    return todo, failed


def fetch_images(todo: dict[str, str], params: IngestParams, workdir: Path) -> dict[str, Fetched]:
    """Download images with img2dataset; returns row_key -> Fetched for every key in `todo`."""
    if not todo:
        return {}
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import img2dataset
    import pandas as pd
    import pyarrow.parquet as pq

    from stages.common.tars import iter_tar

    with LoopbackServer(list(todo.values()), lambda url: fetch_one(url, params)) as server:
        url_list = workdir / "img2dataset-input.parquet"
        pd.DataFrame({"url": [server.url_for(u) for u in todo.values()], "row_key": list(todo)}).to_parquet(url_list)
        out = workdir / "img2dataset-output"
        img2dataset.download(
            url_list=str(url_list),
            input_format="parquet",
            url_col="url",
            save_additional_columns=["row_key"],
            output_folder=str(out),
            output_format="webdataset",
            processes_count=params.processes,
            thread_count=params.threads,
            timeout=math.ceil(params.fetch_timeout_s) + LOOPBACK_SLACK_S,
            retries=0,  # the loopback server's fetch_one retries, within the budget
            disable_all_reencoding=True,  # keep the original bytes: validate decides what is an image
            compute_hash=None,
            extract_exif=False,
            number_sample_per_shard=max(params.shard_size, 1),
            enable_wandb=False,
            incremental_mode="incremental",  # "overwrite" deletes the _tmp dir it just made (1.47.0)
        )
    results: dict[str, Fetched] = {}
    for table in sorted(out.glob("*.parquet")):
        for rec in pq.read_table(table).to_pylist():
            if rec.get("status") != "success":
                reason = server.errors.get(todo[rec["row_key"]])  # the loopback server knows why, img2dataset saw a 502
                reason = reason or f"download failed: {rec.get('error_message') or rec.get('status')}"
                results[rec["row_key"]] = Fetched(error=reason)
        tar = table.with_suffix(".tar")
        if tar.exists():
            by_sample = dict(iter_tar(tar))
            for rec in pq.read_table(table).to_pylist():
                if rec.get("status") == "success":
                    data = by_sample.get(f"{rec['key']}.jpg")
                    missing = Fetched(error="download failed: missing from img2dataset shard")
                    results[rec["row_key"]] = Fetched(data=data) if data is not None else missing
    for key in todo:  # img2dataset can drop a row entirely (e.g. a crashed shard): never lose it silently
        results.setdefault(key, Fetched(error="download failed: no result from img2dataset"))
    return results


def fetch_audio(todo: dict[str, str], params: IngestParams) -> dict[str, Fetched]:
    with ThreadPoolExecutor(max_workers=max(params.threads, 1)) as pool:
        futures = {key: pool.submit(fetch_one, url, params) for key, url in todo.items()}
        progress = tqdm(futures.items(), desc="ingest: audio", unit="file", disable=not futures)
        return {key: too_large(f.result(), params.max_audio_bytes) for key, f in progress}


def too_large(fetched: Fetched, max_bytes: int) -> Fetched:
    if fetched.data is not None and len(fetched.data) > max_bytes:
        return Fetched(error=f"download failed: {len(fetched.data)} bytes > max_audio_bytes {max_bytes}")
    return fetched


def write_media_shards(out_dir: Path, prefix: str, fetched: dict[str, Fetched], size: int) -> dict[str, str]:
    """Canonical shards of the fetched payloads; returns row_key -> 'shard.tar:member'."""
    keys = sorted(k for k, f in fetched.items() if f.data is not None)
    locations = {}
    for start in range(0, len(keys), size):
        name = f"{prefix}-{start // size:06d}.tar"
        chunk = keys[start:start + size]
        write_tar(out_dir / name, {k: fetched[k].data for k in chunk})  # type: ignore[misc]
        locations.update({k: f"{name}:{k}" for k in chunk})
    return locations


def manifest_rows(rows: list[SourceRow], media: dict[str, tuple[dict[str, Fetched], dict[str, str]]]) -> list[dict]:
    out = []
    for row in rows:
        entry: dict = {"row_key": row.row_key, "source": row.source, "line": row.line,
                       "fields": row.fields, "table_error": row.table_error}
        for kind, (fetched, locations) in media.items():
            result = fetched.get(row.row_key)
            entry[kind] = locations.get(row.row_key)
            entry[f"{kind}_error"] = result.error if result is not None else None
        out.append(entry)
    return out


def run(sources: Sequence[str], out_dir: Path, params: IngestParams) -> dict:
    if not sources:
        raise SystemExit("ingest: params data.sources is empty: list at least one table (csv, parquet or jsonl)")
    if refused := [reason for source in sources if (reason := untracked_table(source, TRACKED_TABLES))]:
        raise SystemExit("ingest: " + "\n  ".join(refused))
    try:
        rows = [row for i, source in enumerate(sources) for row in read_table(source, i)]
    except SourceError as e:
        raise SystemExit(f"ingest: {e}") from e
    image_todo, image_failed = plan_fetches(rows, "image_url")
    audio_todo, audio_failed = plan_fetches(rows, "audio_url")
    print(f"ingest: {len(rows)} rows from {len(sources)} sources; "
          f"fetching {len(image_todo)} images, {len(audio_todo)} audio files")
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as work:
        images = {**fetch_images(image_todo, params, Path(work)), **image_failed}
        audio = {**fetch_audio(audio_todo, params), **audio_failed}
        media = {
            "image": (images, write_media_shards(tmp, "images", images, params.shard_size)),
            "audio": (audio, write_media_shards(tmp, "audio", audio, params.shard_size)),
        }
        write_jsonl(tmp / "manifest.jsonl", manifest_rows(rows, media))
        summary = {
            "rows": len(rows),
            "malformed_lines": sum(r.table_error is not None for r in rows),
            "images_fetched": sum(f.data is not None for f in images.values()),
            "images_failed": sum(f.error is not None for f in images.values()),
            "audio_fetched": sum(f.data is not None for f in audio.values()),
            "audio_failed": sum(f.error is not None for f in audio.values()),
            "sources": list(sources),
        }
        write_json(tmp / "summary.json", summary)
    print("ingest: " + ", ".join(f"{k} {v}" for k, v in summary.items() if k != "sources"))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else argv)
    run(params.data.sources, OUT_DIR, params.ingest)


if __name__ == "__main__":
    main()
