"""The sqlite blob cache ingest and validate keep between runs (trimodal/data/cache.py)."""
import hashlib
import sqlite3
import time

from trimodal.data.cache import BlobCache


def test_entries_survive_reopening_and_a_put_replaces(tmp_path):
    path = tmp_path / "cache" / "c.sqlite"  # the folder is made on first use
    before = time.time()
    with BlobCache(path) as cache:
        cache.put("http://x/a.png", {"n": 1}, b"\x00bytes")
        cache.put("http://x/b.png", {}, b"")
        assert cache.get("nope") is None and cache.stored_at("nope") is None
    with BlobCache(path) as cache:
        entry = cache.get("http://x/a.png")
        assert entry.meta == {"n": 1} and entry.data == b"\x00bytes" and before <= entry.stored_at <= time.time()
        assert cache.stored_at("http://x/b.png") >= before and cache.get("http://x/b.png").data == b""
        cache.put("http://x/a.png", {"n": 2}, b"new")
        assert cache.get("http://x/a.png").data == b"new"
        assert (cache.hits, cache.misses) == (3, 0)



def test_identity_without_reading_the_bytes_and_for_a_cache_made_before_it(tmp_path):
    path = tmp_path / "c.sqlite"
    old = sqlite3.connect(path)  # the table as it was before the sha256 and size columns
    old.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, meta TEXT, data BLOB, stored_at REAL)")
    old.execute("INSERT INTO entries VALUES ('http://x/old.png', '{}', ?, 0)", (b"old bytes",))
    old.commit()
    old.close()
    with BlobCache(path) as cache:
        assert cache.identity("http://x/old.png") == (hashlib.sha256(b"old bytes").hexdigest(), 9)
        cache.put("http://x/new.png", {}, b"new")
        assert cache.identity("http://x/new.png") == (hashlib.sha256(b"new").hexdigest(), 3)
        assert cache.identity("nope") is None
