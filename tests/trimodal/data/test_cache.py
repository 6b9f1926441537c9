"""The sqlite blob cache ingest and validate keep between runs (trimodal/data/cache.py)."""
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

