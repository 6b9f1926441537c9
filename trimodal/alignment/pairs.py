"""The preference pairs table: JSON lines, one pair per line, written by `preferences` and read by `align`, the
same whether the pairs come from the data or from people (docs/alignment.md):

    id        the pair's name (unique)
    inputs    the id of a record in the shards: its image, audio and text input are what the model reads; the
              record's split decides the pair's (train pairs teach, val pairs measure, test pairs are not used)
    prompt    the instruction, after the record's text input (trimodal/alignment/instructions.py `content`)
    chosen    the preferred response
    rejected  the other one
    task, source   optional: what was asked (caption, vqa, ...) and where `rejected` came from (sample, corruption)

A row that breaks the contract (not an object, a field missing or empty or not a string, chosen == rejected, an
id seen before, inputs naming no record of the shards) is not used: it is quarantined with its line number and
the reason, and `align` reports how many and why.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from trimodal.atomic import atomic_open
from trimodal.data.loader import read_index, read_meta

REQUIRED = ("id", "inputs", "prompt", "chosen", "rejected")


def write_pairs(path: Path, pairs: list[dict]) -> None:
    with atomic_open(Path(path), "w") as f:
        for pair in pairs:
            f.write(json.dumps(pair, ensure_ascii=False) + "\n")


def record_splits(shards: str) -> dict[str, str]:
    """record id -> its split, over every split of the shards."""
    return {meta["id"]: split for split in read_index(shards)["splits"] for meta in read_meta(shards, split)}


def problem(row, splits: dict[str, str], seen: set[str]) -> str | None:
    """Why a parsed row cannot be used (None: it can)."""
    if not isinstance(row, dict):
        return f"not a JSON object ({type(row).__name__})"
    for field in REQUIRED:
        if not isinstance(row.get(field), str) or not row[field].strip():
            return f"{field} is missing, empty or not a string"
    if row["chosen"].strip() == row["rejected"].strip():
        return "chosen and rejected are the same response"
    if row["id"] in seen:
        return f"id {row['id']!r} appears twice"
    if row["inputs"] not in splits:
        return f"inputs {row['inputs']!r} is not a record of the shards"
    return None


def read_pairs(path: str | Path, shards: str) -> tuple[dict[str, list[dict]], list[dict]]:
    """({split: [pair, with its "split"]}, [{"line", "reason"}]): the usable pairs by their record's split, and
    the quarantined rows."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"preference pairs {path} not found: run `dvc repro preferences`, or point "
                                "align.pairs at your own table (JSON lines: id, inputs, prompt, chosen, rejected)")
    splits, seen = record_splits(shards), set()
    by_split: dict[str, list[dict]] = {}
    quarantined = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            quarantined.append({"line": number, "reason": f"not JSON: {e.msg}"})
            continue
        reason = problem(row, splits, seen)
        if reason:
            quarantined.append({"line": number, "reason": reason})
            continue
        seen.add(row["id"])
        split = splits[row["inputs"]]
        by_split.setdefault(split, []).append({**row, "split": split})
    return by_split, quarantined


def reasons(quarantined: list[dict]) -> dict[str, int]:
    """How many rows each kind of problem quarantined (the reason with its quoted values and details elided)."""
    return dict(Counter(re.sub(r"'[^']*'", "...", re.sub(r"[(:].*$", "", q["reason"])).strip() for q in quarantined))
