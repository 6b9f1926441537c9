"""ingest + validate on the hostile corpus: every row accounted for once, with the right reason."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from tests import hostile_corpus
from tests.stage_runner import make_project, run_stage, snapshot
from trimodal.atomic import read_jsonl
from trimodal.data.tars import read_tar

pytestmark = pytest.mark.slow  # ingest + validate of the hostile corpus

OUTPUT_ROOTS = ("data/raw/", "data/cache/", "data/validated/", "metrics/", "reports/")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("hostile"))
    corpus = hostile_corpus.build(root)
    before = snapshot(root)
    sources = "data.sources=[" + ",".join(corpus.tables) + "]"
    run_stage("ingest", root, sources, *hostile_corpus.OVERRIDES)
    proc = run_stage("validate", root, *hostile_corpus.OVERRIDES)
    return root, corpus, before, proc


def test_every_row_lands_in_exactly_one_file(hostile):
    root, corpus, _, _ = hostile
    accepted = read_jsonl(root / "data/validated/manifest.jsonl")
    quarantined = read_jsonl(root / "data/validated/quarantine.jsonl")
    assert len(accepted) + len(quarantined) == corpus.n_rows
    raw = read_jsonl(root / "data/raw/manifest.jsonl")
    assert len(raw) == corpus.n_rows
    keys = [q["row_key"] for q in quarantined]
    assert len(set(keys)) == len(keys)
    assert {(a["source"], a["row"]) for a in accepted}.isdisjoint({(q["source"], q["line"]) for q in quarantined})
    features = pd.read_parquet(root / "data/validated/features.parquet")
    assert len(features) == corpus.n_rows and (features.status == "accepted").sum() == len(accepted)


def test_the_limits_it_decoded_with_are_written_beside_the_records(hostile):
    root = hostile[0]
    # hostile_corpus.OVERRIDES: the run's own values, which shard and pretrain carry into the models
    assert json.loads((root / "data/validated/limits.json").read_text()) == {
        "min_side": 16, "max_pixels": 1000000, "max_seconds": 2.0}


def test_outcome_and_reason_per_record(hostile):
    root, corpus, _, _ = hostile
    accepted = {a["id"]: a for a in read_jsonl(root / "data/validated/manifest.jsonl")}
    reasons = {q["id"]: q["reason"] for q in read_jsonl(root / "data/validated/quarantine.jsonl") if q["id"]}
    for rid, expected in corpus.expected.items():
        if expected.startswith("accepted"):
            assert rid in accepted, f"{rid} should be accepted, got {reasons.get(rid)}"
            if ":" in expected:
                assert expected.split(":", 1)[1] in accepted[rid]["converted"], (rid, accepted[rid]["converted"])
        else:
            assert rid not in accepted, f"{rid} should be rejected ({expected})"
            assert reasons[rid].startswith(expected + ":"), (rid, reasons[rid])


def test_unkeyed_rows_are_quarantined_with_reasons(hostile):
    root, _, _, _ = hostile
    categories = Counter(q["reason"].split(":")[0] for q in read_jsonl(root / "data/validated/quarantine.jsonl"))
    assert categories["malformed table line"] == 3  # bad JSON, JSON array, csv row with extra cells
    assert categories["missing id"] == 1
    assert categories["duplicate id"] == 1
    assert categories["unsafe id"] == 3


def test_accepted_media_is_normalised(hostile):
    root, _, _, _ = hostile
    media = {}
    for tar in sorted((root / "data/validated").glob("media-*.tar")):
        media.update(read_tar(tar))
    accepted = read_jsonl(root / "data/validated/manifest.jsonl")
    for record in accepted:
        if record["image"]:
            img = Image.open(__import__("io").BytesIO(media[record["image"].split(":", 1)[1]]))
            assert img.mode == "RGB" and min(img.size) >= 16
        if record["audio"]:
            samples, rate = sf.read(__import__("io").BytesIO(media[record["audio"].split(":", 1)[1]]), always_2d=True)
            assert rate == 16000 and samples.shape[1] == 1 and samples.shape[0] <= 2 * 16000
            assert np.isfinite(samples).all()


def test_no_writes_outside_outputs_and_gate_passes(hostile):
    root, _, before, proc = hostile
    after = snapshot(root)
    changed = {p for p in after if before.get(p) != after[p]}
    outside = {p for p in changed if not p.startswith(OUTPUT_ROOTS)}
    assert not outside, outside
    assert set(before) <= set(after), "a source file was removed"
    assert (root / "reports/validate/index.html").exists()
    assert "PASS" in proc.stdout


def test_gate_failure_exits_nonzero_with_a_readable_summary(hostile, tmp_path):
    root, _, _, _ = hostile
    strict = make_project(tmp_path)
    shutil.copytree(root / "data/raw", strict / "data/raw")
    overrides = [o for o in hostile_corpus.OVERRIDES if not o.startswith("validate.max_reject_fraction")]
    proc = run_stage("validate", strict, *overrides, "validate.max_reject_fraction=0.2", check=False)
    assert proc.returncode != 0
    assert "FAIL batch" in proc.stdout and "> allowed 0.2" in proc.stdout
    assert "data gate failed" in proc.stderr
    # the quarantine is still written, so the failure can be inspected
    assert (strict / "data/validated/quarantine.jsonl").stat().st_size > 0


def test_validate_twice_gives_byte_identical_outputs(hostile, tmp_path):
    """Same raw input, same commit -> the same bytes in every file of data/validated (the float WAVs and the
    quarantine reasons were the two that differed: a PEAK chunk with the wall-clock time, object addresses)."""
    root, _, _, _ = hostile

    def sha256s(project: Path) -> dict[str, str]:
        out = project / "data/validated"
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*")
                if p.is_file()}

    first = sha256s(root)
    again = make_project(tmp_path)
    shutil.copytree(root / "data/raw", again / "data/raw")
    time.sleep(1.1)  # the PEAK chunk's timestamp has a resolution of one second
    run_stage("validate", again, *hostile_corpus.OVERRIDES)
    assert any(p.endswith(".tar") for p in first) and "quarantine.jsonl" in first
    assert sha256s(again) == first
