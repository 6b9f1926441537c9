"""trimodal/alignment/pairs.py: the preference pairs table, written and read against a real shards folder."""
from __future__ import annotations

import json

import pytest

from tests.shard_fixtures import sharded
from trimodal.alignment.pairs import read_pairs, reasons, write_pairs
from trimodal.data.loader import read_index, read_meta


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    # sharded() returns the root it built; the shards are in root/shards
    return str(sharded(tmp_path_factory.mktemp("pairs") / "data", n=12) / "shards")


@pytest.fixture(scope="module")
def ids_by_split(shards) -> dict[str, list[str]]:
    return {split: [meta["id"] for meta in read_meta(shards, split)] for split in read_index(shards)["splits"]}


def pair(pair_id: str, inputs: str, **fields) -> dict:
    return {"id": pair_id, "inputs": inputs, "prompt": "Describe it.", "chosen": "a red circle",
            "rejected": "a blue square", **fields}


def write_lines(path, lines: list) -> None:
    """Each item: a dict (dumped as JSON) or a raw line of text."""
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines), encoding="utf-8")


def test_the_fixture_shards_have_every_split(ids_by_split):
    assert {"train", "val", "test"} <= set(ids_by_split)
    assert all(ids_by_split[split] for split in ("train", "val", "test"))


def test_write_then_read_pairs_groups_them_by_the_records_split(tmp_path, shards, ids_by_split):
    train, val, test = ids_by_split["train"], ids_by_split["val"], ids_by_split["test"]
    pairs = [pair("p1", train[0], task="caption", source="corruption"),
             pair("p2", val[0], chosen="café ☕", rejected="tea"),
             pair("p3", train[1]),
             pair("p4", test[0])]
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    by_split, quarantined = read_pairs(tmp_path / "pairs.jsonl", shards)
    assert quarantined == []
    assert by_split == {"train": [{**pairs[0], "split": "train"}, {**pairs[2], "split": "train"}],
                        "val": [{**pairs[1], "split": "val"}],
                        "test": [{**pairs[3], "split": "test"}]}


def test_the_records_split_decides_even_when_a_row_claims_another(tmp_path, shards, ids_by_split):
    write_pairs(tmp_path / "pairs.jsonl", [pair("p1", ids_by_split["train"][0], split="test")])
    by_split, _ = read_pairs(str(tmp_path / "pairs.jsonl"), shards)
    assert list(by_split) == ["train"]
    assert by_split["train"][0]["split"] == "train"


@pytest.mark.parametrize(("line", "reason"), [
    ('{"id": "broken", "inputs": ', "not JSON: "),
    ("[1, 2, 3]", "not a JSON object (list)"),
    ({"id": "b", "inputs": "@train", "prompt": "Describe it.", "chosen": "red"},
     "rejected is missing, empty or not a string"),
    ({"id": "b", "inputs": "@train", "prompt": "   ", "chosen": "red", "rejected": "blue"},
     "prompt is missing, empty or not a string"),
    ({"id": "b", "inputs": "@train", "prompt": "Describe it.", "chosen": 5, "rejected": "blue"},
     "chosen is missing, empty or not a string"),
    ({"id": "b", "inputs": "@train", "prompt": "Describe it.", "chosen": "red", "rejected": " red "},
     "chosen and rejected are the same response"),
    ({"id": "good", "inputs": "@train", "prompt": "Other.", "chosen": "red", "rejected": "blue"},
     "id 'good' appears twice"),
    ({"id": "b", "inputs": "no-such-record", "prompt": "Describe it.", "chosen": "red", "rejected": "blue"},
     "inputs 'no-such-record' is not a record of the shards"),
], ids=["invalid-json", "json-list", "missing-rejected", "empty-prompt", "non-string-chosen", "chosen-equals-rejected",
        "duplicate-id", "unknown-inputs"])
def test_a_bad_row_is_quarantined_with_its_line_and_reason_and_good_rows_are_kept(tmp_path, shards, ids_by_split,
                                                                                  line, reason):
    train = ids_by_split["train"]
    if isinstance(line, dict) and line["inputs"] == "@train":
        line = {**line, "inputs": train[1]}
    write_lines(tmp_path / "pairs.jsonl", [pair("good", train[0]), "", line, pair("after", train[2])])
    by_split, quarantined = read_pairs(tmp_path / "pairs.jsonl", shards)
    assert [p["id"] for p in by_split["train"]] == ["good", "after"]
    assert sum(len(v) for v in by_split.values()) == 2
    assert len(quarantined) == 1
    assert quarantined[0]["line"] == 3  # 1-based, the blank line counted
    assert quarantined[0]["reason"].startswith(reason)


def test_every_bad_row_is_quarantined_with_its_own_line_number(tmp_path, shards, ids_by_split):
    train = ids_by_split["train"]
    lines = [pair("p1", train[0]),                      # 1
             "{not json",                               # 2
             "",                                        # 3 (blank: skipped)
             '"a string"',                              # 4
             pair("p2", train[1], rejected=""),          # 5
             "   ",                                     # 6 (blank: skipped)
             pair("p1", train[2]),                      # 7 duplicate id
             pair("p3", "nowhere"),                     # 8
             pair("p4", ids_by_split["val"][0])]        # 9
    write_lines(tmp_path / "pairs.jsonl", lines)
    by_split, quarantined = read_pairs(tmp_path / "pairs.jsonl", shards)
    assert [q["line"] for q in quarantined] == [2, 4, 5, 7, 8]
    assert all(q["reason"] for q in quarantined)
    assert {split: [p["id"] for p in v] for split, v in by_split.items()} == {"train": ["p1"], "val": ["p4"]}


def test_blank_lines_alone_give_no_pairs_and_no_quarantine(tmp_path, shards):
    (tmp_path / "pairs.jsonl").write_text("\n   \n\t\n", encoding="utf-8")
    assert read_pairs(tmp_path / "pairs.jsonl", shards) == ({}, [])


def test_read_pairs_of_a_missing_file_says_to_run_dvc_repro_preferences(tmp_path, shards):
    with pytest.raises(FileNotFoundError, match="dvc repro preferences") as raised:
        read_pairs(tmp_path / "absent.jsonl", shards)
    assert "absent.jsonl" in str(raised.value)


def test_reasons_counts_quarantine_reasons_by_kind():
    quarantined = [{"line": 1, "reason": "id 'a' appears twice"},
                   {"line": 2, "reason": "id 'b' appears twice"},
                   {"line": 3, "reason": "not a JSON object (list)"},
                   {"line": 4, "reason": "not a JSON object (int)"},
                   {"line": 5, "reason": "inputs 'x' is not a record of the shards"},
                   {"line": 6, "reason": "chosen and rejected are the same response"}]
    assert reasons(quarantined) == {"id ... appears twice": 2, "not a JSON object": 2,
                                    "inputs ... is not a record of the shards": 1,
                                    "chosen and rejected are the same response": 1}
    assert reasons([]) == {}


def test_reasons_of_read_pairs_quarantine_add_up_to_the_quarantined_rows(tmp_path, shards, ids_by_split):
    train = ids_by_split["train"]
    write_lines(tmp_path / "pairs.jsonl", [pair("p1", train[0]), pair("p1", train[1]), pair("p1", train[2]),
                                           "[]", pair("p2", "nowhere")])
    _, quarantined = read_pairs(tmp_path / "pairs.jsonl", shards)
    assert reasons(quarantined) == {"id ... appears twice": 2, "not a JSON object": 1,
                                    "inputs ... is not a record of the shards": 1}


def test_reasons_names_the_field_of_each_missing_field_problem():
    counts = reasons([{"line": 1, "reason": "prompt is missing, empty or not a string"},
                      {"line": 2, "reason": "chosen is missing, empty or not a string"}])
    assert counts == {"prompt is missing, empty or not a string": 1, "chosen is missing, empty or not a string": 1}


def test_write_pairs_leaves_no_temp_file_and_replaces_the_old_table(tmp_path):
    path = tmp_path / "tables" / "pairs.jsonl"
    write_pairs(path, [pair("old", "r")])
    write_pairs(path, [pair("p1", "r"), pair("p2", "s", chosen="é")])
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["p1", "p2"]
    assert "é" in path.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes


def test_write_pairs_that_fails_midway_keeps_the_old_table_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, [pair("old", "r")])
    with pytest.raises(TypeError):
        write_pairs(path, [pair("p1", "r"), {"id": object()}])
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]
    assert json.loads(path.read_text(encoding="utf-8"))["id"] == "old"
