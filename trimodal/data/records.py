"""The record contract (docs/data.md "Use your own data": a source row's columns) and the keys derived from a
record id."""
from __future__ import annotations

import hashlib

MODALITIES = ("image", "audio", "text")  # the inputs a record may carry, in the order every report lists them
INPUT_FIELDS = ("image_url", "audio_url", "text")
TARGET_FIELDS = ("caption", "question", "answer", "label")
TEXT_FIELDS = ("text", "caption", "question", "answer", "label")
# optional: `group`, an evaluation row of its own (e.g. "fusion"), carried to the shards; `split`, the split the
# record must land in (e.g. a held-out test set), instead of its hash's
META_FIELDS = ("group", "split")
ALL_FIELDS = ("id", *INPUT_FIELDS, *TARGET_FIELDS, *META_FIELDS)

SPLITS = ("train", "val", "test")


def record_key(record_id: str) -> str:
    """A dot-free, filesystem-safe key for shard members (webdataset splits keys at the first dot)."""
    return hashlib.sha1(record_id.encode("utf-8")).hexdigest()[:20]


def record_split(record: dict, val_fraction: float, test_fraction: float) -> str:
    """A validated record's split: the one it pins (`split`; validate gives a pin to the record's whole content
    group), else that of its content group (validate names the group by its first record), so records sharing an
    image or a sound land in one split. Records from before content groups use their id."""
    if record.get("split"):
        return record["split"]
    return split_of(record.get("content_group") or record["id"], val_fraction, test_fraction)


def split_of(record_id: str, val_fraction: float, test_fraction: float) -> str:
    """Assign a split from a hash of the id: stable across runs, machines and source order."""
    u = int(hashlib.sha256(record_id.encode("utf-8")).hexdigest()[:12], 16) / 16**12
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def unsafe_id_reason(record_id: str) -> str | None:
    """Why an id cannot be used as a file key, or None if it can."""
    if record_id in (".", "..") or ".." in record_id.split("/") or ".." in record_id.split("\\"):
        return "unsafe id: '..' path component"
    if "/" in record_id or "\\" in record_id:
        return "unsafe id: contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in record_id):
        return "unsafe id: contains control characters"
    if len(record_id.encode("utf-8")) > 200:
        return "unsafe id: longer than 200 bytes"
    return None
