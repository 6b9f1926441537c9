"""ingest + validate on a grown or edited table reuse what they fetched and decoded before (data/cache), and write
the same bytes as a from-scratch run on the new table (issue 33).

The media come from a real HTTP server on 127.0.0.1 that logs every GET, so "reused" means "never asked for".
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

pytestmark = pytest.mark.slow  # five ingest and validate runs, four ingest runs

TABLE = "data/sources/grow/records.jsonl"
OUTPUTS = ("data/raw", "data/validated", "metrics/validate.json")


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
    return run_stage("ingest", root, f"data.sources=[{TABLE}]", "ingest.retries=0", *overrides).stdout


def run(root: Path, table: list[dict]) -> tuple[str, str]:
    return ingest(root, table), run_stage("validate", root).stdout


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
    write_media(media, 14)
    with serve(media) as (base, gets):
        yield base, gets, tmp_path_factory


@pytest.fixture(scope="module")
def grown(served):
    """A project run on 10 rows, then on the same table with 2 rows appended: (root, GETs of the second run, logs)."""
    base, gets, tmp = served
    root = make_project(tmp.mktemp("grown"))
    run(root, rows(base, 10))
    gets.clear()
    logs = run(root, rows(base, 12))
    return root, sorted(gets), logs


def test_appended_rows_fetch_and_decode_only_the_new_media_and_match_a_fresh_run(served, grown):
    base, _, tmp = served
    root, gets, (ingest_log, validate_log) = grown
    assert gets == ["/10.png", "/10.wav", "/11.png", "/11.wav"]  # the old URLs were never asked for
    assert "reusing 10 and 10 fetched before" in ingest_log
    assert "decoded 4 payloads, reused 20 decoded before" in validate_log
    after = digests(root)
    assert any(name.startswith("data/validated/media-") for name in after)
    assert after == from_scratch(tmp.mktemp("scratch-grown"), rows(base, 12))


def test_a_changed_row_is_redone_never_served_from_the_cache(served, grown):
    base, gets, tmp = served
    root = tmp.mktemp("edited") / "project"
    shutil.copytree(grown[0], root)  # its cache too
    edited = rows(base, 12)
    edited[3]["image_url"] = f"{base}/13.png"  # same id, another picture
    edited[5]["caption"] = "another caption"  # same id and media, another target
    gets.clear()
    _, validate_log = run(root, edited)
    assert gets == ["/13.png"]
    assert "decoded 1 payloads, reused 23 decoded before" in validate_log
    manifest = {r["id"]: r for r in map(json.loads, (root / "data/validated/manifest.jsonl").open())}
    assert manifest["r5"]["caption"] == "another caption"
    assert digests(root) == from_scratch(tmp.mktemp("scratch-edited"), edited)


def test_force_ingest_and_an_expired_ttl_fetch_again_and_the_cache_may_go(served):
    base, gets, tmp = served
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
