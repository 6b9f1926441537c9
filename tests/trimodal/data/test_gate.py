import math

import pandas as pd
import pytest

from trimodal.data.gate import GateLimits, features_summary_metrics, run_gate

NAN = math.nan
LIMITS = GateLimits(max_reject_fraction=0.2, min_side=16, max_pixels=1_000_000, max_seconds=10.0,
                    max_caption_chars=64)


def accepted(i, **features):
    row = {"id": f"r{i}", "status": "accepted", "reason": "", "has_image": True, "has_audio": False,
           "has_text": True, "image_width": 32.0, "image_height": 24.0, "audio_seconds": NAN, "text_chars": 5.0,
           "caption_chars": NAN}
    return row | features


def rejected(i, reason="image fetch failed: 404"):
    return accepted(i, status="rejected", reason=reason, image_width=NAN, image_height=NAN)


def table(n_accepted=8, n_rejected=2, extra=()):
    """10 rows by default: 2 rejected, exactly at the 0.2 limit; accepted rows cover every modality."""
    rows = [accepted(i) for i in range(n_accepted)]
    rows[0] |= {"has_audio": True, "audio_seconds": 2.5, "caption_chars": 12.0}
    rows[1] |= {"has_image": False, "image_width": NAN, "image_height": NAN}
    rows += [rejected(n_accepted + i) for i in range(n_rejected)]
    return pd.DataFrame(rows + list(extra))


def gate(features, tmp_path, limits=LIMITS):
    return run_gate(features, limits, docs_dir=tmp_path / "docs", context_dir=tmp_path / "gx")


def fail_lines(result):
    return [line for line in result.summary.splitlines() if line.startswith("  expected")]


@pytest.fixture(scope="module")
def passing(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    return root, gate(table(), root)


def test_passing_table_passes_and_builds_data_docs(passing):
    root, result = passing
    assert result.success, result.summary
    assert result.suites == {"batch": True, "records": True}
    assert "PASS batch" in result.summary and "PASS records" in result.summary
    assert result.docs_index == (root / "docs" / "index.html").resolve()
    assert "<html" in result.docs_index.read_text().lower()
    assert list((root / "docs" / "validations").rglob("*.html"))
    assert not fail_lines(result)


def test_rerun_in_same_context_and_zero_rejects_allowed(passing):
    root, _ = passing
    strict = GateLimits(**(vars(LIMITS) | {"max_reject_fraction": 0.0}))
    result = gate(table(), root, strict)
    assert result.suites == {"batch": False, "records": True}
    assert "reject fraction 0.2 > allowed 0 (2 of 10 rows rejected)" in result.summary
    assert result.docs_index.exists()


def test_too_many_rejects_fail_batch_with_observed_fraction(tmp_path):
    result = gate(table(n_accepted=13, n_rejected=7), tmp_path)
    assert not result.success
    assert result.suites == {"batch": False, "records": True}
    assert "FAIL batch" in result.summary
    assert "reject fraction 0.35 > allowed 0.2 (7 of 20 rows rejected)" in result.summary, result.summary


def test_small_image_and_duplicate_ids_fail_records(tmp_path):
    small = accepted(20, id="small", image_width=8.0)
    dupes = [accepted(21, id="twice"), accepted(22, id="twice")]
    result = gate(table(n_accepted=12, n_rejected=0, extra=[small, *dupes]), tmp_path)
    assert result.suites == {"batch": True, "records": False}
    lines = fail_lines(result)
    assert len(lines) == 2, result.summary
    width = next(line for line in lines if "image_width" in line)
    assert "min_side 16" in width and "'small'" in width and "8.0" in width
    unique = next(line for line in lines if "unique" in line)
    assert "'twice'" in unique


def test_all_rejected_fails_cleanly(tmp_path):
    result = gate(pd.DataFrame([rejected(i) for i in range(4)]), tmp_path)
    assert not result.success and result.suites["batch"] is False
    assert "no row has status 'accepted'" in result.summary
    assert "reject fraction 1 > allowed 0.2 (4 of 4 rows rejected)" in result.summary
    assert result.docs_index is not None and result.docs_index.exists()


def test_features_summary_metrics():
    duplicate = {**rejected(31, reason="duplicate content: same image, audio, text and question as x"),
                 "status": "duplicate"}
    features = table(extra=[rejected(30, reason="duplicate id: first seen at a.jsonl line 1"), duplicate])
    assert features_summary_metrics(features) == {
        "n_rows": 12,
        "n_accepted": 8,
        "n_rejected": 3,  # a duplicate is quarantined, not rejected: it does not count against the gate
        "n_duplicates": 1,
        "reject_fraction": 3 / 12,
        "accepted_by_modality": {"image": 7, "audio": 1, "text": 8},
        "rejected_by_reason": {"duplicate content": 1, "duplicate id": 1, "image fetch failed": 2},
    }
    assert features_summary_metrics(pd.DataFrame())["n_rows"] == 0


def test_duplicates_do_not_count_as_rejections(tmp_path):
    duplicates = [{**rejected(40 + i, reason="near duplicate: image within 1.20 as x"), "status": "duplicate"}
                  for i in range(5)]
    result = gate(table(extra=duplicates), tmp_path)  # 2 rejected of 15 rows, 5 duplicates: 7 quarantined
    assert result.success, result.summary
    assert not gate(table(n_rejected=3), tmp_path).success  # the limit still bites on real rejections
