"""ingest on a small demo: every row in the manifest, canonical (byte-stable) shards across runs."""
import hashlib
import json
import tarfile

import pytest

from tests.stage_runner import make_project, run_stage
from trimodal.data.tars import FIXED_MTIME

DEMO = ["demo.n_records=21", "demo.n_fusion=6", "demo.n_corpus=4", "demo.n_ood_questions=2",
        "demo.n_ood_renders=3"]


def digest_tree(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("ingest"))
    run_stage("demo", root, *DEMO)
    run_stage("ingest", root)
    first = digest_tree(root / "data/raw")
    run_stage("ingest", root)
    return root, first


@pytest.mark.slow
def test_every_row_is_in_the_manifest_with_its_payloads(ingested):
    root, _ = ingested
    rows = [json.loads(line) for line in open(root / "data/raw/manifest.jsonl")]
    assert len(rows) == 21 + 6 + 2 + 3 + 4
    for row in rows:
        for kind in ("image", "audio"):
            wanted = row["fields"].get(f"{kind}_url") is not None
            assert (row[kind] is not None) == wanted and row[f"{kind}_error"] is None, row
    summary = json.loads((root / "data/raw/summary.json").read_text())
    assert summary["images_failed"] == summary["audio_failed"] == 0


@pytest.mark.slow
def test_rerun_gives_byte_identical_outputs(ingested):
    root, first = ingested
    assert digest_tree(root / "data/raw") == first


@pytest.mark.slow
def test_shards_are_canonical(ingested):
    root, _ = ingested
    for shard in sorted((root / "data/raw").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {m.mtime for m in members} == {FIXED_MTIME}


def test_missing_sources_give_a_clear_error(tmp_path):
    root = make_project(tmp_path)
    proc = run_stage("ingest", root, "data.sources=[data/sources/nowhere/t.jsonl]", check=False)
    assert proc.returncode != 0 and "cannot read table" in proc.stderr
    assert not (root / "data/raw").exists()


@pytest.mark.parametrize("where", ["elsewhere/t.jsonl", "{outside}/t.jsonl", "file://{outside}/t.jsonl"])
def test_local_tables_outside_data_sources_are_refused(tmp_path, where):
    """DVC hashes data/sources/ (ingest's dep) only: rows appended to a table elsewhere would go unseen."""
    root = make_project(tmp_path / "project")
    outside = tmp_path / "outside"
    for folder in (outside, root / "elsewhere"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "t.jsonl").write_text('{"id": "a", "text": "x"}\n')
    source = where.format(outside=outside)
    proc = run_stage("ingest", root, f"data.sources=[{source}]", check=False)
    assert proc.returncode != 0 and "outside data/sources/, so DVC does not track it" in proc.stderr, proc.stderr
    assert not (root / "data/raw").exists()
