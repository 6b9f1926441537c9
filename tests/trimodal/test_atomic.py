"""Atomic stage outputs (trimodal/atomic.py): swapped in whole, and what killed runs left is removed."""
import pytest

from trimodal.atomic import atomic_dir


def test_a_failed_write_keeps_the_previous_output_and_leaves_no_temp(tmp_path):
    out = tmp_path / "shards"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("second, half written")
        raise RuntimeError("killed")
    assert (out / "a").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_a_success_removes_what_killed_runs_left_beside_it(tmp_path):
    out = tmp_path / "validated"
    for stale in (".validated.k1ll3d.tmp", ".validated.old"):  # what kill -9 mid-write leaves: no cleanup ran
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "media-000000.tar").write_bytes(b"x" * 10)
    (tmp_path / ".validated.half.tmp").write_text("a temp file")
    (tmp_path / ".shards.other.tmp").mkdir()  # another output's temp: not ours to judge
    with atomic_dir(out) as tmp:
        (tmp / "manifest.jsonl").write_text("{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shards.other.tmp", "validated"]
    assert (out / "manifest.jsonl").read_text() == "{}\n"
