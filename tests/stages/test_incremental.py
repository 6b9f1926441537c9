"""ingest + validate on a grown or edited table reuse what they fetched, decoded, validated and wrote before
(data/cache), and write the same bytes as a from-scratch run on the new table (issue 33).

The media come from a real HTTP server on 127.0.0.1 that logs every GET, so "reused" means "never asked for". Raw
shards of 4 rows (SHARD), so that an appended row leaves the first shards as they were.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageDraw

from tests.stage_runner import make_project, run_stage

pytestmark = pytest.mark.slow  # a dozen ingest and validate runs, four ingest runs

TABLE = "data/sources/grow/records.jsonl"
OUTPUTS = ("data/raw", "data/validated", "metrics/validate.json")
SHARD = "ingest.shard_size=4"


def logging_handler(server_gets: list[str], directory: str):
    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            server_gets.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    return partial(Handler, directory=directory)


@contextmanager
def serve(root: Path) -> Iterator[tuple[str, list[str]]]:
    gets: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), logging_handler(gets, str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", gets
    finally:
        server.shutdown()
        server.server_close()


def write_media(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        image = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 256, 3)))
        ImageDraw.Draw(image).rectangle((4, 4, 4 + i, 20), fill=(0, 0, 0))
        image.save(folder / f"{i}.png")
        buf = io.BytesIO()
        t = np.arange(4000) / 8000
        sf.write(buf, (0.3 * np.sin(2 * np.pi * (200 + 60 * i) * t)).astype(np.float32), 8000, format="WAV",
                 subtype="PCM_16")
        (folder / f"{i}.wav").write_bytes(buf.getvalue())


def rows(base: str, n: int) -> list[dict]:
    return [{"id": f"r{i}", "image_url": f"{base}/{i}.png", "audio_url": f"{base}/{i}.wav",
             "caption": f"picture {i}", "label": "x"} for i in range(n)]


def ingest(root: Path, table: list[dict], *overrides: str) -> str:
    (root / TABLE).parent.mkdir(parents=True, exist_ok=True)
    (root / TABLE).write_text("".join(json.dumps(r) + "\n" for r in table))
    return run_stage("ingest", root, f"data.sources=[{TABLE}]", "ingest.retries=0", SHARD, *overrides).stdout


def run(root: Path, table: list[dict], *overrides: str) -> tuple[str, str]:
    return ingest(root, table, *overrides), run_stage("validate", root).stdout


def digests(root: Path) -> dict[str, str]:
    files = [p for out in OUTPUTS for p in ([root / out] if (root / out).is_file() else (root / out).rglob("*"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)
            if p.is_file()}


def from_scratch(tmp: Path, table: list[dict]) -> dict[str, str]:
    root = make_project(tmp)
    run(root, table)
    return digests(root)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    write_media(media, 16)
    near = Image.open(media / "2.png")
    near.convert("RGB").save(media / "2-again.jpg", quality=95)  # a near duplicate of 2.png
    with serve(media) as (base, gets):
        yield base, gets, tmp_path_factory, media


@pytest.fixture(scope="module")
def grown(served):
    """A project run on 10 rows, then on the same table with 2 rows appended: (root, GETs of the second run, logs)."""
    base, gets, tmp, _ = served
    root = make_project(tmp.mktemp("grown"))
    run(root, rows(base, 10))
    gets.clear()
    logs = run(root, rows(base, 12))
    return root, sorted(gets), logs


def test_appended_rows_fetch_and_decode_only_the_new_media_and_match_a_fresh_run(served, grown):
    base, _, tmp, _ = served
    root, gets, (ingest_log, validate_log) = grown
    assert gets == ["/10.png", "/10.wav", "/11.png", "/11.wav"]  # the old URLs were never asked for
    assert "reusing 10 and 10 fetched before" in ingest_log
    assert "2 shards written, 4 the same as before" in ingest_log  # the third of each kind grew
    # rows 0-7 stand (their shards did not change); 8 and 9 come from the decode cache, 10 and 11 are decoded
    assert "8 rows as the run before" in validate_log and "decoded 4 payloads, reused 4 decoded before" in validate_log
    assert "image near duplicates: searched 4 of 12 fingerprints" in validate_log
    after = digests(root)
    assert any(name.startswith("data/validated/media-") for name in after)
    assert after == from_scratch(tmp.mktemp("scratch-grown"), rows(base, 12))


def test_a_changed_row_is_redone_never_served_from_the_cache(served, grown):
    base, gets, tmp, _ = served
    root = tmp.mktemp("edited") / "project"
    shutil.copytree(grown[0], root)  # its cache too
    edited = rows(base, 12)
    edited[9]["image_url"] = f"{base}/13.png"  # same id, another picture
    edited[5]["caption"] = "another caption"  # same id and media, another target
    gets.clear()
    _, validate_log = run(root, edited)
    assert gets == ["/13.png"]
    assert "5 rows as the run before" in validate_log  # row 5 changed: it and every row after it are validated
    assert "decoded 1 payloads, reused 13 decoded before" in validate_log
    manifest = {r["id"]: r for r in map(json.loads, (root / "data/validated/manifest.jsonl").open())}
    assert manifest["r5"]["caption"] == "another caption"
    assert digests(root) == from_scratch(tmp.mktemp("scratch-edited"), edited)


def test_force_ingest_and_an_expired_ttl_fetch_again_and_the_cache_may_go(served):
    base, gets, tmp, _ = served
    root = make_project(tmp.mktemp("forced"))
    table = rows(base, 3)
    ingest(root, table)
    before = digests(root)
    for overrides, fetched in ((["ingest.force_ingest=true"], 6), (["ingest.media_ttl_s=0.001"], 6),
                               (["ingest.media_ttl_s=3600"], 0)):
        gets.clear()
        ingest(root, table, *overrides)
        assert len(gets) == fetched, overrides
    shutil.rmtree(root / "data/cache")  # always safe to delete: the next run fetches again
    gets.clear()
    ingest(root, table)
    assert len(gets) == 6 and digests(root) == before


def test_new_bytes_under_an_old_url_are_validated_again(served):
    """force_ingest fetches new bytes for a URL: the manifest line is the same, the raw shard is not."""
    base, _, tmp, media = served
    shutil.copy(media / "14.png", media / "14.png.kept")
    table = rows(base, 6)
    table[1]["image_url"] = f"{base}/14.png"
    root = make_project(tmp.mktemp("refetched"))
    try:
        run(root, table)
        before = digests(root)
        shutil.copy(media / "15.png", media / "14.png")  # the remote object changed
        _, validate_log = run(root, table, "ingest.force_ingest=true")
        assert "0 rows as the run before" in validate_log  # row 1's shard holds rows 0-3
        after = digests(root)
        assert after["data/raw/manifest.jsonl"] == before["data/raw/manifest.jsonl"]
        assert after["data/validated/media-000000.tar"] != before["data/validated/media-000000.tar"]
        assert after == from_scratch(tmp.mktemp("scratch-refetched"), table)
    finally:
        shutil.move(media / "14.png.kept", media / "14.png")


def test_appended_duplicates_point_at_the_old_records_and_a_broken_cache_is_not_used(served, grown):
    """An appended row repeating an old id, and one whose picture is a near duplicate of an old one (same sound):
    quarantined naming the old rows, as from scratch. Then the cache, damaged three ways, is never trusted."""
    base, _, tmp, _ = served
    root = tmp.mktemp("duplicates") / "project"
    shutil.copytree(grown[0], root)
    table = rows(base, 12) + [{**rows(base, 5)[4], "caption": "again"},
                              {**rows(base, 3)[2], "id": "r12", "image_url": f"{base}/2-again.jpg"}]
    _, validate_log = run(root, table)
    assert "12 rows as the run before" in validate_log  # the new rows start a new shard
    quarantine = {q["id"]: q for q in map(json.loads, (root / "data/validated/quarantine.jsonl").open())}
    assert quarantine["r4"]["reason"].startswith("duplicate id: first seen at") and quarantine["r4"]["line"] == 13
    assert quarantine["r12"]["duplicate_of"] == "r2"
    assert "near duplicate: image within" in quarantine["r12"]["reason"]
    expected = from_scratch(tmp.mktemp("scratch-duplicates"), table)
    assert digests(root) == expected
    cache = root / "data/cache"
    for damage, told in ((lambda: shutil.rmtree(cache / "validate-state"), "0 rows as the run before"),  # no files
                         (lambda: (cache / "validate.sqlite").unlink(), "0 rows as the run before"),  # no claim
                         (lambda: [p.write_bytes(p.read_bytes()[:-512]) for p in (cache / "validate-shards").glob(
                             "*.tar")], "1 media tars written, 0 the same as before")):  # a truncated store
        damage()
        assert told in run_stage("validate", root).stdout
        assert digests(root) == expected
