"""An s3:// source (table + media in a bucket) through a real local S3 server (moto, 127.0.0.1)."""
import json

import pytest
import s3fs

from tests.stage_runner import make_project, run_stage

pytestmark = pytest.mark.slow  # demo + two ingests, one through a local S3 server


def test_s3_source_is_ingested_like_a_local_one(s3_server, tmp_path):
    local = make_project(tmp_path / "local")
    run_stage("demo", local, "demo.n_records=14", "demo.n_fusion=3", "demo.n_corpus=2",
              "demo.n_ood_questions=0", "demo.n_ood_renders=0")
    fs = s3fs.S3FileSystem()
    fs.mkdir("scrape")
    fs.put(str(local / "data/sources/demo") + "/", "scrape/demo/", recursive=True)
    run_stage("ingest", local, "data.sources=[data/sources/demo/records.jsonl]")

    remote = make_project(tmp_path / "remote")
    run_stage("ingest", remote, "data.sources=[s3://scrape/demo/records.jsonl]")
    rows = [json.loads(line) for line in open(remote / "data/raw/manifest.jsonl")]
    assert len(rows) == 14 + 3
    assert all(r["image_error"] is None and r["audio_error"] is None for r in rows), rows
    assert sum(r["image"] is not None for r in rows) > 0 and sum(r["audio"] is not None for r in rows) > 0
    # same payload bytes as the local ingest of the same files
    for name in ("images-000000.tar", "audio-000000.tar"):
        assert (remote / "data/raw" / name).read_bytes() == (local / "data/raw" / name).read_bytes()
