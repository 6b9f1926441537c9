"""Stage `ingest`: every row of every source table -> data/raw/ (canonical media shards + manifest).

Images are fetched by img2dataset through a loopback HTTP server (trimodal/data/fileserver.py) that fetches
each source, local or remote, within `ingest.fetch_timeout_s`; audio through the same bounded fetch with a
thread pool; text is inline. Nothing is
judged here beyond "could it be fetched": decoding and rejection are validate's job, so every input row
appears in data/raw/manifest.jsonl with its payload location or the reason it could not be fetched.

Incremental (issue 33): remote media fetched before are taken from data/cache/ingest.sqlite by URL
(trimodal/data/cache.py) until `ingest.media_ttl_s` has passed since their fetch (0: never), or refetched all with
`ingest.force_ingest`; so a grown table fetches its new URLs only, and a row whose URL changed fetches the new one.
A canonical shard whose members (row keys and payload hashes) were written before is linked from
data/cache/ingest-shards (trimodal/data/shardstore.py) instead of being read and written again. The outputs are the
same bytes either way. The rows and the fetch plan wait in sqlite, the payloads in the cache or
a scratch spool: memory is flat in the rows.

Outputs (rewritten canonically so identical inputs give identical bytes and DVC hashes):
  data/raw/manifest.jsonl        one line per input row, in source order
  data/raw/images-NNNNNN.tar     raw image bytes, member name = row_key
  data/raw/audio-NNNNNN.tar      raw audio bytes, member name = row_key
  data/raw/summary.json          counts
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
from tqdm import tqdm

from trimodal.atomic import atomic_dir, write_json, write_jsonl
from trimodal.config_errors import run_main
from trimodal.data.cache import BlobCache
from trimodal.data.fetch import fetch_async
from trimodal.data.fileserver import LoopbackServer
from trimodal.data.shardstore import ShardStore
from trimodal.data.sources import SourceError, SourceRow, iter_table, resolve_url, scheme_of, untracked_table
from trimodal.data.spool import Spool, spool_beside
from trimodal.data.tars import write_tar
from trimodal.params import IngestParams, load_params

FETCHABLE = ("", "file", "http", "https", "s3")
LOOPBACK_SLACK_S = 5  # img2dataset waits this much longer than the loopback server's own fetch may take
KINDS = ("image", "audio")  # the fetched media, in the order a manifest entry lists them


class Plan:
    """Every source row and what to fetch for it, in sqlite under the stage's scratch folder (issue 33: memory flat
    in the rows): rows by row_key (source order), each medium's absolute URL or why it cannot be fetched. The media
    cache is attached, so that what it holds of every URL comes in one query, not one per URL."""

    def __init__(self, work: Path, cache: BlobCache):
        self.db = sqlite3.connect(work / "plan.sqlite")
        self.db.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE rows (row_key TEXT PRIMARY KEY, source TEXT, line INTEGER, fields TEXT, table_error TEXT,
                               image_url TEXT, image_error TEXT, audio_url TEXT, audio_error TEXT);
        """)
        self.db.execute("ATTACH DATABASE ? AS cache", (str(cache.path),))  # after the pragmas, which are for this one

    def add(self, row: SourceRow) -> None:
        media = [value for kind in KINDS for value in _fetch_of(row, f"{kind}_url")]
        self.db.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (row.row_key, row.source, row.line, json.dumps(row.fields), row.table_error, *media))

    def urls(self, kind: str) -> list[tuple[str, float | None]]:
        """The distinct URLs of `kind` to fetch, sorted, each with when the media cache stored it (None: never)."""
        self.db.commit()  # a new read of the cache, which the fetches write through their own connection
        return self.db.execute(f"SELECT DISTINCT {kind}_url, stored_at FROM rows LEFT JOIN cache.entries ON "
                               f"key = {kind}_url WHERE {kind}_url IS NOT NULL ORDER BY {kind}_url").fetchall()

    def rows(self) -> Iterator[tuple]:
        """Every row in row_key order with (sha256, size) of each medium's cache entry, NULLs where none."""
        self.db.commit()
        return self.db.execute(
            "SELECT row_key, source, line, fields, table_error, image_url, image_error, audio_url, audio_error, "
            "image.sha256, image.size, audio.sha256, audio.size FROM rows "
            "LEFT JOIN cache.entries AS image ON image.key = image_url "
            "LEFT JOIN cache.entries AS audio ON audio.key = audio_url ORDER BY row_key")

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]


def _fetch_of(row: SourceRow, column: str) -> tuple[str | None, str | None]:
    """(absolute URL to fetch, why it cannot be fetched) of one medium of a row; (None, None) when it has none."""
    url = (row.fields or {}).get(column)
    if not url:
        return None, None
    absolute = resolve_url(url, row.source)
    if scheme_of(absolute) not in FETCHABLE:
        return None, f"unsupported URL scheme {scheme_of(absolute)!r}"
    return absolute, None


class Payloads:
    """Fetched bytes by URL: remote ones in the media cache (trimodal/data/cache.py: reused by the next run until
    `ingest.media_ttl_s` has passed, or never with `ingest.force_ingest`), local files in a scratch Spool (read again
    each run: they are cheap, and DVC hashes them), failures by URL. `put` may run in the audio thread."""

    def __init__(self, cache: BlobCache, spool: Spool, params: IngestParams):
        self.cache, self.spool, self.params = cache, spool, params
        self.errors: dict[str, str] = {}
        self.reused = 0

    @staticmethod
    def cacheable(url: str) -> bool:
        return url.partition(":")[0].lower() in ("http", "https", "s3")  # scheme_of's answer, without urlparse's cost

    def todo(self, urls: list[tuple[str, float | None]]) -> list[str]:
        """The URLs of `urls` ((URL, when cached) pairs) to fetch: all but the cached ones still fresh."""
        now, ttl = time.time(), self.params.media_ttl_s
        fresh = [not self.params.force_ingest and self.cacheable(u) and when is not None
                 and (ttl <= 0 or now - when < ttl) for u, when in urls]
        self.reused += sum(fresh)
        return [u for (u, _), ok in zip(urls, fresh, strict=True) if not ok]

    def put(self, url: str, data: bytes) -> None:
        if self.cacheable(url):
            self.cache.put(url, {}, data)
        else:
            self.spool.add(url, data)

    def get(self, url: str) -> bytes | None:
        if url in self.errors:
            return None
        if url in self.spool:
            return self.spool[url]
        entry = self.cache.get(url) if self.cacheable(url) else None
        return entry.data if entry else None

    def identity(self, url: str, cached: tuple[str | None, int | None]) -> tuple[str, int] | None:
        """(sha256, size) of what `url` fetched, without reading the bytes of a cached one; None if nothing.
        `cached`: what Plan.rows found in the cache (None where an entry is older than those columns, or absent)."""
        if url in self.errors:
            return None
        if url in self.spool:
            data = self.spool[url]
            return hashlib.sha256(data).hexdigest(), len(data)
        if not self.cacheable(url):
            return None
        return cached if cached[0] is not None else self.cache.identity(url)


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


def fetch_images(urls: list[str], params: IngestParams, workdir: Path, payloads: Payloads) -> None:
    """Download images with img2dataset into `payloads` (the URL's position in `urls` rides along as its key);
    every URL that yields no bytes gets its reason in payloads.errors."""
    if not urls:
        return
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import img2dataset
    import pandas as pd
    import pyarrow.parquet as pq

    with LoopbackServer(urls, params) as server:
        url_list = workdir / "img2dataset-input.parquet"
        pd.DataFrame({"url": [server.url_for(u) for u in urls], "row_key": [str(i) for i in range(len(urls))]}
                     ).to_parquet(url_list)
        out = workdir / "img2dataset-output"
        img2dataset.download(**img2dataset_args(url_list, out, params))
    done = set()
    for table in sorted(out.glob("*.parquet")):
        # a batch at a time: a shard of large images need not fit in memory at once
        for batch in pq.ParquetFile(table).iter_batches(batch_size=64, columns=["row_key", "status", "error_message",
                                                                                "jpg"]):
            for rec in batch.to_pylist():
                url = urls[int(rec["row_key"])]
                done.add(url)
                if rec["status"] == "success" and rec["jpg"] is not None:
                    payloads.put(url, rec["jpg"])
                elif rec["status"] == "success":
                    payloads.errors[url] = "download failed: missing from img2dataset shard"
                else:  # the loopback server knows why, img2dataset saw a 502
                    reason = server.errors.get(url)
                    payloads.errors[url] = reason or f"download failed: {rec['error_message'] or rec['status']}"
    for url in urls:  # img2dataset can drop a row entirely (e.g. a crashed shard): never lose it silently
        if url not in done:
            payloads.errors[url] = "download failed: no result from img2dataset"


def fetch_audio(urls: list[str], params: IngestParams, payloads: Payloads) -> None:
    """Fetch audio into `payloads`, each result as it comes, `threads` at a time on one event loop (http(s) through
    one aiohttp session: trimodal/data/fetch.py); every URL that yields no bytes gets its reason in payloads.errors.
    `threads` workers take the next URL when done: one task per URL up front would hold ~1.5 KB each until its
    turn (155 MB at 100k URLs), memory that grows with the scrape."""
    async def fetch_all() -> None:
        workers = max(params.threads, 1)
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(workers))  # local, s3
        todo = iter(urls)  # shared by the workers: one event loop, so no two take the same URL
        with tqdm(total=len(urls), desc="ingest: audio", unit="file", disable=not urls) as bar:
            async with aiohttp.ClientSession() as session:
                async def worker() -> None:
                    for url in todo:
                        fetched = await fetch_async(session, url, params)
                        if fetched.data is None:
                            payloads.errors[url] = fetched.error or "download failed: no reason given"
                        else:
                            payloads.put(url, fetched.data)
                        bar.update()

                await asyncio.gather(*(worker() for _ in range(workers)))

    asyncio.run(fetch_all())


def too_large(size: int, max_bytes: int) -> str | None:
    if size > max_bytes:
        return f"download failed: {size} bytes > max_audio_bytes {max_bytes}"
    return None


class ShardWriter:
    """Canonical shards `<prefix>-NNNNNN.tar` of `size` members each, filled in row_key order. A shard's members are
    known by URL and identity until it is full: then it is restored from the shard store (the same members were
    written before: trimodal/data/shardstore.py) or built from the payloads, one shard's bytes in memory."""

    def __init__(self, out_dir: Path, prefix: str, size: int, payloads: Payloads, store: ShardStore):
        self.out_dir, self.prefix, self.size, self.payloads, self.store = out_dir, prefix, size, payloads, store
        self.members: list[tuple[str, str, str, int]] = []  # row_key, url, sha256, size
        self.written = 0

    def add(self, row_key: str, url: str, identity: tuple[str, int]) -> str:
        """Returns the member's 'shard.tar:member' location."""
        name = f"{self.prefix}-{self.written // self.size:06d}.tar"
        self.members.append((row_key, url, *identity))
        self.written += 1
        if len(self.members) == self.size:
            self.flush()
        return f"{name}:{row_key}"

    def flush(self) -> None:
        if not self.members:
            return
        path = self.out_dir / f"{self.prefix}-{(self.written - 1) // self.size:06d}.tar"
        listed = [(row_key, sha, size) for row_key, _, sha, size in self.members]
        if not self.store.restore(listed, path):
            write_tar(path, {row_key: self._bytes(url, sha) for row_key, url, sha, _ in self.members})
            self.store.keep(listed, path)
        self.members = []

    def _bytes(self, url: str, sha: str) -> bytes:
        data = self.payloads.get(url)
        if data is None or hashlib.sha256(data).hexdigest() != sha:  # the cache changed under this run
            raise SystemExit(f"ingest: the payload of {url} changed during the run: run ingest again")
        return data


def manifest_rows(plan: Plan, payloads: dict[str, Payloads], shards: dict[str, ShardWriter], params: IngestParams,
                  counts: dict[str, int]) -> Iterator[dict]:
    """One entry per row in source order, each fetched payload written to its kind's shards on the way; `counts`
    gets <kind>_fetched and <kind>_failed."""
    for row_key, source, line, fields, table_error, *media in plan.rows():
        entry: dict = {"row_key": row_key, "source": source, "line": line, "fields": json.loads(fields),
                       "table_error": table_error}
        for kind, url, error, cached in zip(KINDS, media[0:4:2], media[1:4:2], (media[4:6], media[6:8]), strict=True):
            identity = payloads[kind].identity(url, cached) if url else None
            if url and identity is None:
                error = payloads[kind].errors.get(url, "download failed: no result")
            elif kind == "audio" and identity and (oversize := too_large(identity[1], params.max_audio_bytes)):
                identity, error = None, oversize
            entry[kind] = shards[kind].add(row_key, url, identity) if identity is not None else None
            entry[f"{kind}_error"] = error
            counts[f"{kind}_fetched"] += identity is not None
            counts[f"{kind}_failed"] += error is not None
        yield entry


def run(sources: Sequence[str], out_dir: Path, params: IngestParams, tracked: Path, cache_dir: Path) -> dict:
    """`tracked`: ingest's dvc.yaml dep (paths.sources); a local table must lie in it to be hashed."""
    if not sources:
        raise SystemExit("ingest: params data.sources is empty: list at least one table (csv, parquet or jsonl)")
    if refused := [reason for source in sources if (reason := untracked_table(source, tracked))]:
        raise SystemExit("ingest: " + "\n  ".join(refused))
    with (atomic_dir(out_dir) as tmp, spool_beside(out_dir) as work, BlobCache(cache_dir / "ingest.sqlite") as cache,
          tempfile.TemporaryFile(dir=work) as image_file, tempfile.TemporaryFile(dir=work) as audio_file):
        plan = Plan(Path(work), cache)
        try:
            for i, source in enumerate(sources):
                for row in iter_table(source, i):
                    plan.add(row)
        except SourceError as e:
            raise SystemExit(f"ingest: {e}") from e
        images = Payloads(cache, Spool(image_file), params)
        audio = Payloads(cache, Spool(audio_file), params)  # one spool each: the audio thread writes its own
        image_urls, audio_urls = images.todo(plan.urls("image")), audio.todo(plan.urls("audio"))
        print(f"ingest: {plan.count()} rows from {len(sources)} sources; fetching {len(image_urls)} images and "
              f"{len(audio_urls)} audio files, reusing {images.reused} and {audio.reused} fetched before ({cache_dir})")
        with ThreadPoolExecutor(1) as beside:  # audio meanwhile: img2dataset leaves a core idle much of the time
            audio_job = beside.submit(fetch_audio, audio_urls, params, audio)
            fetch_images(image_urls, params, Path(work), images)
            audio_job.result()
        cache.commit()
        store = ShardStore(cache_dir / "ingest-shards")
        shards = {"image": ShardWriter(tmp, "images", params.shard_size, images, store),
                  "audio": ShardWriter(tmp, "audio", params.shard_size, audio, store)}
        counts = dict.fromkeys(("image_fetched", "image_failed", "audio_fetched", "audio_failed"), 0)
        write_jsonl(tmp / "manifest.jsonl", manifest_rows(plan, {"image": images, "audio": audio}, shards, params,
                                                          counts))
        for writer in shards.values():
            writer.flush()
        summary = {
            "rows": plan.count(),
            "malformed_lines": plan.db.execute("SELECT COUNT(*) FROM rows WHERE table_error IS NOT NULL").fetchone()[0],
            "images_fetched": counts["image_fetched"],
            "images_failed": counts["image_failed"],
            "audio_fetched": counts["audio_fetched"],
            "audio_failed": counts["audio_failed"],
            "sources": list(sources),
        }
        plan.db.close()
        write_json(tmp / "summary.json", summary)
        print(f"ingest: {store.built} shards written, {store.linked} the same as before ({store.root})")
    print("ingest: " + ", ".join(f"{k} {v}" for k, v in summary.items() if k != "sources"))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else argv)
    paths = params.paths
    run(params.data.sources, Path(paths.raw), params.ingest, Path(paths.sources), Path(paths.cache))


if __name__ == "__main__":
    run_main(main)
