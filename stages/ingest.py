"""Stage `ingest`: every row of every source table -> data/raw/ (canonical media shards + manifest).

Images are fetched by img2dataset through a loopback HTTP server (trimodal/data/fileserver.py) that fetches
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

import asyncio
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
from tqdm import tqdm

from trimodal.atomic import atomic_dir, write_json, write_jsonl
from trimodal.config_errors import run_main
from trimodal.data.fetch import Fetched, fetch_async
from trimodal.data.fileserver import LoopbackServer
from trimodal.data.sources import SourceError, SourceRow, read_table, resolve_url, scheme_of, untracked_table
from trimodal.data.spool import Spool, spool_beside
from trimodal.data.tars import write_tar
from trimodal.params import IngestParams, load_params

FETCHABLE = ("", "file", "http", "https", "s3")
LOOPBACK_SLACK_S = 5  # img2dataset waits this much longer than the loopback server's own fetch may take


def plan_fetches(rows: list[SourceRow], column: str) -> tuple[dict[str, str], dict[str, str]]:
    """row_key -> absolute URL to fetch, and row_key -> why it cannot be fetched (unsupported scheme)."""
    todo: dict[str, str] = {}
    failed: dict[str, str] = {}
    for row in rows:
        url = (row.fields or {}).get(column)
        if not url:
            continue
        absolute = resolve_url(url, row.source)
        if scheme_of(absolute) not in FETCHABLE:
            failed[row.row_key] = f"unsupported URL scheme {scheme_of(absolute)!r}"
        else:
            todo[row.row_key] = absolute
    return todo, failed


def img2dataset_args(url_list: Path, out: Path, params: IngestParams) -> dict:
    """img2dataset.download's arguments for a parquet `url_list` (columns url, row_key): every image as fetched,
    into parquet shards (the bytes in column `jpg`, whatever the format: read back in bulk by pyarrow; tar shards
    cost ingest ~0.2 ms an image to parse again). benchmarks/data_throughput.py runs img2dataset alone with these."""
    return dict(
        url_list=str(url_list),
        input_format="parquet",
        url_col="url",
        save_additional_columns=["row_key"],
        output_folder=str(out),
        output_format="parquet",
        processes_count=params.processes,
        thread_count=params.threads,
        timeout=math.ceil(params.fetch_timeout_s) + LOOPBACK_SLACK_S,
        retries=0,  # the loopback server retries, within the budget
        disable_all_reencoding=True,  # keep the original bytes: validate decides what is an image
        compute_hash=None,
        extract_exif=False,
        number_sample_per_shard=max(params.shard_size, 1),
        enable_wandb=False,
        incremental_mode="incremental",  # "overwrite" deletes the _tmp dir it just made (1.47.0)
    )


def fetch_images(todo: dict[str, str], params: IngestParams, workdir: Path, spool: Spool) -> dict[str, str]:
    """Download images with img2dataset into `spool`; returns row_key -> why not, for every other key of `todo`."""
    if not todo:
        return {}
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import img2dataset
    import pandas as pd
    import pyarrow.parquet as pq

    with LoopbackServer(list(todo.values()), params) as server:
        url_list = workdir / "img2dataset-input.parquet"
        pd.DataFrame({"url": [server.url_for(u) for u in todo.values()], "row_key": list(todo)}).to_parquet(url_list)
        out = workdir / "img2dataset-output"
        img2dataset.download(**img2dataset_args(url_list, out, params))
    errors: dict[str, str] = {}
    for table in sorted(out.glob("*.parquet")):
        # a batch at a time: a shard of large images need not fit in memory at once
        for batch in pq.ParquetFile(table).iter_batches(batch_size=64, columns=["row_key", "status", "error_message",
                                                                                "jpg"]):
            for rec in batch.to_pylist():
                key = rec["row_key"]
                if rec["status"] == "success" and rec["jpg"] is not None:
                    spool.add(key, rec["jpg"])
                elif rec["status"] == "success":
                    errors[key] = "download failed: missing from img2dataset shard"
                else:  # the loopback server knows why, img2dataset saw a 502
                    reason = server.errors.get(todo[key])
                    errors[key] = reason or f"download failed: {rec['error_message'] or rec['status']}"
    for key in todo:  # img2dataset can drop a row entirely (e.g. a crashed shard): never lose it silently
        if key not in spool and key not in errors:
            errors[key] = "download failed: no result from img2dataset"
    return errors


def fetch_audio(todo: dict[str, str], params: IngestParams, spool: Spool) -> dict[str, str]:
    """Fetch audio into `spool`, each result as it comes, `threads` at a time on one event loop (http(s) through one
    aiohttp session: trimodal/data/fetch.py); returns row_key -> why not, for every other key of `todo`."""
    async def fetch_all() -> dict[str, str]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max(params.threads, 1)))  # local, s3
        gate, errors = asyncio.Semaphore(max(params.threads, 1)), {}
        async with aiohttp.ClientSession() as session:
            async def one(key: str, url: str) -> None:
                async with gate:
                    fetched = too_large(await fetch_async(session, url, params), params.max_audio_bytes)
                if fetched.data is None:
                    errors[key] = fetched.error or "download failed: no reason given"
                else:
                    spool.add(key, fetched.data)

            done = asyncio.as_completed([one(key, url) for key, url in todo.items()])
            for next_done in tqdm(done, total=len(todo), desc="ingest: audio", unit="file", disable=not todo):
                await next_done
        return errors

    return asyncio.run(fetch_all())


def too_large(fetched: Fetched, max_bytes: int) -> Fetched:
    if fetched.data is not None and len(fetched.data) > max_bytes:
        return Fetched(error=f"download failed: {len(fetched.data)} bytes > max_audio_bytes {max_bytes}")
    return fetched


def write_media_shards(out_dir: Path, prefix: str, payloads: Mapping[str, bytes], size: int) -> dict[str, str]:
    """Canonical shards of the payloads, one shard in memory at a time; returns row_key -> 'shard.tar:member'."""
    keys = sorted(payloads)
    locations = {}
    for start in range(0, len(keys), size):
        name = f"{prefix}-{start // size:06d}.tar"
        chunk = keys[start:start + size]
        write_tar(out_dir / name, {k: payloads[k] for k in chunk})
        locations.update({k: f"{name}:{k}" for k in chunk})
    return locations


def manifest_rows(rows: list[SourceRow], media: dict[str, tuple[dict[str, str], dict[str, str]]]) -> Iterator[dict]:
    """One entry per row; `media`: kind -> (row_key -> why not fetched, row_key -> 'shard.tar:member')."""
    for row in rows:
        entry: dict = {"row_key": row.row_key, "source": row.source, "line": row.line,
                       "fields": row.fields, "table_error": row.table_error}
        for kind, (errors, locations) in media.items():
            entry[kind] = locations.get(row.row_key)
            entry[f"{kind}_error"] = errors.get(row.row_key)
        yield entry


def run(sources: Sequence[str], out_dir: Path, params: IngestParams, tracked: Path) -> dict:
    """`tracked`: ingest's dvc.yaml dep (paths.sources); a local table must lie in it to be hashed."""
    if not sources:
        raise SystemExit("ingest: params data.sources is empty: list at least one table (csv, parquet or jsonl)")
    if refused := [reason for source in sources if (reason := untracked_table(source, tracked))]:
        raise SystemExit("ingest: " + "\n  ".join(refused))
    try:
        rows = [row for i, source in enumerate(sources) for row in read_table(source, i)]
    except SourceError as e:
        raise SystemExit(f"ingest: {e}") from e
    image_todo, image_failed = plan_fetches(rows, "image_url")
    audio_todo, audio_failed = plan_fetches(rows, "audio_url")
    print(f"ingest: {len(rows)} rows from {len(sources)} sources; "
          f"fetching {len(image_todo)} images, {len(audio_todo)} audio files")
    with (atomic_dir(out_dir) as tmp, spool_beside(out_dir) as work,
          tempfile.TemporaryFile(dir=work) as image_file, tempfile.TemporaryFile(dir=work) as audio_file):
        images, audio = Spool(image_file), Spool(audio_file)  # trimodal/data/spool.py: memory flat in the rows
        with ThreadPoolExecutor(1) as beside:  # audio meanwhile: img2dataset leaves a core idle much of the time
            audio_job = beside.submit(fetch_audio, audio_todo, params, audio)
            image_errors = {**fetch_images(image_todo, params, Path(work), images), **image_failed}
            audio_errors = {**audio_job.result(), **audio_failed}
        media = {
            "image": (image_errors, write_media_shards(tmp, "images", images, params.shard_size)),
            "audio": (audio_errors, write_media_shards(tmp, "audio", audio, params.shard_size)),
        }
        write_jsonl(tmp / "manifest.jsonl", manifest_rows(rows, media))
        summary = {
            "rows": len(rows),
            "malformed_lines": sum(r.table_error is not None for r in rows),
            "images_fetched": len(images),
            "images_failed": len(image_errors),
            "audio_fetched": len(audio),
            "audio_failed": len(audio_errors),
            "sources": list(sources),
        }
        write_json(tmp / "summary.json", summary)
    print("ingest: " + ", ".join(f"{k} {v}" for k, v in summary.items() if k != "sources"))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else argv)
    run(params.data.sources, Path(params.paths.raw), params.ingest, Path(params.paths.sources))


if __name__ == "__main__":
    run_main(main)
