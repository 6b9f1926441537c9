"""What a data stage keeps between runs so that a grown source costs in proportion to its new rows (issue 33,
docs/data.md "Incremental runs"): ingest's fetched media by URL (with the time of the fetch, for a TTL), validate's
decoded media by the sha256 of the payload and the decoding settings.

One sqlite file per stage under `paths.cache` (data/cache/), outside every DVC output: `dvc repro` deletes a stage's
outputs before it runs, not this. It only ever saves work: what a stage writes is the same with an empty cache
(tests/stages/test_incremental.py), and a key that changed (another URL, other bytes, other settings) misses.
Deleting the folder is always safe.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    meta: dict
    data: bytes
    stored_at: float  # time.time() when put


class BlobCache:
    """key -> (JSON-able meta, bytes, when stored), in one sqlite file; puts are committed by `commit` (and on
    close), so a killed run loses at most what it had not committed, never a half-written entry."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self._db = sqlite3.connect(path, check_same_thread=False)  # ingest puts from its audio thread too
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit: a power cut may lose the last puts only
        self._db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, meta TEXT, data BLOB, "
                         "stored_at REAL, sha256 TEXT, size INTEGER)")
        if "sha256" not in {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}:  # made before them
            self._db.execute("ALTER TABLE entries ADD COLUMN sha256 TEXT")
            self._db.execute("ALTER TABLE entries ADD COLUMN size INTEGER")
        self._pending = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> Entry | None:
        with self._lock:
            row = self._db.execute("SELECT meta, data, stored_at FROM entries WHERE key = ?", (key,)).fetchone()
            self.hits += row is not None
            self.misses += row is None
        return Entry(json.loads(row[0]), bytes(row[1]), row[2]) if row else None

    def stored_at(self, key: str) -> float | None:
        """When `key` was put, without reading its bytes; None if absent."""
        with self._lock:
            row = self._db.execute("SELECT stored_at FROM entries WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def identity(self, key: str) -> tuple[str, int] | None:
        """(sha256 hex, size) of `key`'s bytes, without reading them (an entry put before these columns existed is
        hashed once); None if absent."""
        with self._lock:
            row = self._db.execute("SELECT sha256, size FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] is not None:
            return row
        data = self.get(key).data
        identity = (hashlib.sha256(data).hexdigest(), len(data))
        with self._lock:
            self._db.execute("UPDATE entries SET sha256 = ?, size = ? WHERE key = ?", (*identity, key))
        return identity

    def put(self, key: str, meta: dict, data: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                             (key, json.dumps(meta, sort_keys=True), data, time.time(),
                              hashlib.sha256(data).hexdigest(), len(data)))
            self._pending += 1
        if self._pending >= 1000:
            self.commit()

    def commit(self) -> None:
        with self._lock:
            self._db.commit()
            self._pending = 0

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> BlobCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
