"""Stage `validate`: decode every sample; each input row lands in exactly one of two files.

  data/validated/manifest.jsonl     accepted records (normalised media in media-NNNNNN.tar)
  data/validated/quarantine.jsonl   rejected rows: id, reason (+ source, line, row_key to find them)
  data/validated/features.parquet   the per-record feature table the Great Expectations gate checks
  data/validated/limits.json        the decoding limits (min_side, max_pixels, max_seconds), which shard and pretrain
                                    carry into every model trained on this data (trimodal/data/limits.py)
  metrics/validate.json             counts and reject fractions (DVC metrics)
  reports/validate/                 Great Expectations Data Docs

Record-level problems quarantine one row; the Great Expectations suites then judge the batch and
fail the stage (non-zero exit, readable summary) when, e.g., too many rows were rejected.

Duplicates (trimodal/data/dedup.py): a record whose inputs (image, audio, text and question) are the same content
as an earlier accepted record's, or near duplicates of them with the rest equal, is quarantined with status
"duplicate" and `duplicate_of` naming the kept record (duplicates do not count as rejections). Records that share
an image or a sound (exact or near) but differ otherwise are kept, with one `content_group` (the id of the group's
first record), so that shard puts them in one split: no test media in train.

Memory is flat in the number of rows (issue 12): converted media wait in a scratch file (`Spool`) in the temp output
dir until dedup has seen every record, and memory keeps per record only what dedup compares (digests, fingerprints)
and the manifest and feature rows.
"""
from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from trimodal.atomic import atomic_dir, write_json, write_jsonl
from trimodal.config_errors import run_main
from trimodal.data import limits as media_limits
from trimodal.data.dedup import Groups, audio_fingerprint, digest, image_fingerprint, near_pairs, normalise_text
from trimodal.data.gate import GateLimits, features_summary_metrics, run_gate
from trimodal.data.media import DecodedAudio, DecodedImage, Rejected, decode_audio, decode_image
from trimodal.data.records import INPUT_FIELDS, META_FIELDS, SPLITS, TARGET_FIELDS, record_key, unsafe_id_reason
from trimodal.data.spool import Spool
from trimodal.data.tars import TarMembers, write_tar
from trimodal.params import ValidateParams, load_params

RECORDS_PER_MEDIA_TAR = 1000


@dataclass(slots=True)
class Content:
    """What dedup compares of one accepted record."""
    image: str | None  # sha256 of the normalised PNG
    audio: str | None  # sha256 of the normalised WAV
    text: str | None  # normalised
    question: str | None
    image_fp: np.ndarray | None
    audio_fp: np.ndarray | None


@dataclass(slots=True)
class Outcome:
    """What validation made of one input row: an accepted record or a quarantine entry, plus features."""

    features: dict
    row_key: str = ""
    accepted: dict | None = None
    rejected: dict | None = None
    content: Content | None = None  # of an accepted record, until dedup has compared it


def _empty_features(entry: dict) -> dict:
    fields = entry.get("fields") or {}
    return {
        "id": fields.get("id"),
        "status": "rejected",
        "reason": "",
        "has_image": bool(fields.get("image_url")),
        "has_audio": bool(fields.get("audio_url")),
        "has_text": fields.get("text") is not None,
        "image_width": float("nan"),
        "image_height": float("nan"),
        "audio_seconds": float("nan"),
        "text_chars": float(len(fields["text"])) if fields.get("text") is not None else float("nan"),
        "caption_chars": float(len(fields["caption"])) if fields.get("caption") is not None else float("nan"),
    }


def check_fields(entry: dict, first_seen: dict[str, str], params: ValidateParams) -> None:
    """Record-level checks that need no decoding. Raises Rejected with the first failure."""
    if entry.get("table_error"):
        raise Rejected(entry["table_error"])
    fields = entry["fields"]
    record_id = fields.get("id")
    if record_id is None or not record_id.strip():
        raise Rejected("missing id: the row has no id")
    if reason := unsafe_id_reason(record_id):
        raise Rejected(reason)
    where = f"{entry['source']} line {entry['line']}"
    if record_id in first_seen:
        raise Rejected(f"duplicate id: first seen at {first_seen[record_id]}")
    first_seen[record_id] = where
    if not any(fields.get(name) is not None for name in INPUT_FIELDS):
        raise Rejected("no input: none of image_url, audio_url, text")
    if fields.get("split") is not None and fields["split"] not in SPLITS:
        raise Rejected(f"unknown split: {fields['split']!r}; a record may pin one of {', '.join(SPLITS)}")
    if fields.get("text") is not None and not fields["text"].strip():
        raise Rejected("empty text: text is only whitespace")
    caption = fields.get("caption")
    if caption is not None and len(caption) > params.max_caption_chars:
        raise Rejected(f"caption too long: {len(caption)} chars > max_caption_chars {params.max_caption_chars}")


def _payload(entry: dict, kind: str, media: TarMembers) -> bytes:
    if error := entry.get(f"{kind}_error"):
        if error.startswith("fetch timed out: "):  # its own category: a stalled server, not a missing object
            raise Rejected(f"fetch timed out: {kind}, {error.removeprefix('fetch timed out: ')}")
        prefix = "unsupported URL" if "unsupported URL scheme" in error else f"{kind} fetch failed"
        raise Rejected(f"{prefix}: {error}")
    if not entry.get(kind):
        raise Rejected(f"{kind} fetch failed: ingest recorded neither a payload nor an error")
    return media.get(entry[kind])


def validate_row(entry: dict, media: TarMembers, first_seen: dict[str, str], params: ValidateParams,
                 spool: Spool) -> Outcome:
    """An accepted row's converted media go to `spool`; the outcome keeps what dedup compares of them."""
    features = _empty_features(entry)
    outcome = Outcome(features=features, row_key=entry["row_key"])
    image = audio = None
    try:
        check_fields(entry, first_seen, params)
        fields = entry["fields"]
        key = record_key(fields["id"])
        record = {name: fields.get(name) for name in ("id", "text", *TARGET_FIELDS, *META_FIELDS)}
        record.update(key=key, source=entry["source"], row=entry["line"], image=None, audio=None, converted=[])
        if fields.get("image_url"):
            image = decode_image(_payload(entry, "image", media), min_side=params.min_side,
                                 max_pixels=params.max_pixels)
            record["image"] = f"{key}.png"
            if image.converted_from:
                record["converted"].append(f"image {image.converted_from}->RGB")
            features.update(image_width=float(image.width), image_height=float(image.height))
        if fields.get("audio_url"):
            audio = decode_audio(_payload(entry, "audio", media), sample_rate=params.sample_rate,
                                 max_seconds=params.max_seconds)
            record["audio"] = f"{key}.wav"
            record["converted"].extend(f"audio {c}" for c in audio.converted)
            features["audio_seconds"] = audio.seconds
    except Rejected as e:
        features["reason"] = str(e)
        fields = entry.get("fields") or {}
        outcome.rejected = {"id": fields.get("id"), "reason": str(e), "source": entry["source"],
                            "line": entry["line"], "row_key": entry["row_key"]}
        return outcome
    features["status"] = "accepted"
    outcome.accepted = record
    outcome.content = content_of(record, image, audio)
    if image:
        spool.add(record["image"], image.png)
    if audio:
        spool.add(record["audio"], audio.wav)
    return outcome


def content_of(record: dict, image: DecodedImage | None, audio: DecodedAudio | None) -> Content:
    return Content(digest(image.png) if image else None, digest(audio.wav) if audio else None,
                   normalise_text(record.get("text")), normalise_text(record.get("question")),
                   image_fingerprint(image.rgb) if image else None,
                   audio_fingerprint(audio.samples, audio.rate) if audio else None)


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _limits(params: ValidateParams) -> dict[str, float]:
    return {"image": params.near_duplicate_image_rms, "audio": params.near_duplicate_audio_db}


def _near(kind: str, a: Content, b: Content, limit: float) -> float | None:
    """None unless `kind` of a and b is the same content or a near duplicate; else the fingerprint distance."""
    da, db = getattr(a, kind), getattr(b, kind)
    if da is None or db is None:
        return 0.0 if da is db else None
    if da == db:
        return 0.0
    distance = _rms(getattr(a, f"{kind}_fp"), getattr(b, f"{kind}_fp"))
    return distance if distance <= limit else None


def _pairs(contents: list[Content], kind: str, limit: float) -> Iterator[tuple[int, int]]:
    """Pairs of records whose `kind` media are the same or near (exact digests first, then fingerprints)."""
    positions = [i for i, c in enumerate(contents) if getattr(c, kind) is not None]
    first: dict[str, int] = {}
    for i in positions:
        key = getattr(contents[i], kind)
        if key in first:
            yield first[key], i
        first.setdefault(key, i)
    if positions and limit > 0:
        fps = np.stack([getattr(contents[i], f"{kind}_fp") for i in positions])
        for a, b in near_pairs(fps, limit):
            yield positions[a], positions[b]


def deduplicate(outcomes: list[Outcome], params: ValidateParams) -> dict[str, int]:
    """Quarantine accepted records that duplicate an earlier one; give the rest their `content_group`. Drops the
    outcomes' contents: nothing after needs them."""
    accepted = [o for o in outcomes if o.accepted]
    contents = [o.content for o in accepted]
    limits = _limits(params)
    exact: dict[tuple, int] = {}
    duplicate_of: dict[int, tuple[int, str | None]] = {}  # position -> (kept position, what was near; None: exact)
    for i, c in enumerate(contents):
        if c.image is None and c.audio is None and not params.dedup_text_only:
            continue  # templated corpora (the demo's) repeat short texts by design
        key = (c.image, c.audio, c.text, c.question)
        if key in exact:
            duplicate_of[i] = (exact[key], None)
        exact.setdefault(key, i)
    shared = {pair for kind, limit in limits.items() for pair in _pairs(contents, kind, limit)}
    for i, j in sorted(shared, key=lambda p: (p[1], p[0])):
        if j in duplicate_of or (a := contents[i]).text != contents[j].text or a.question != contents[j].question:
            continue
        b = contents[j]
        distances = {kind: _near(kind, a, b, limit) for kind, limit in limits.items()
                     if getattr(a, kind) or getattr(b, kind)}
        if all(d is not None for d in distances.values()):
            kept = duplicate_of.get(i, (i, None))[0]
            duplicate_of[j] = (kept, ", ".join(f"same {kind}" if getattr(a, kind) == getattr(b, kind) else
                                              f"{kind} within {d:.2f}" for kind, d in distances.items())
                               + ", same text and question")
    groups = Groups(len(accepted))
    for i, j in shared:
        if i not in duplicate_of and j not in duplicate_of:
            groups.join(i, j)
    roots = groups.roots()
    pins: dict[int, str] = {}  # group root -> the split its first pinning record names: the whole group goes there
    for i, o in enumerate(accepted):
        if i not in duplicate_of and o.accepted.get("split"):
            pins.setdefault(roots[i], o.accepted["split"])
    moved = 0
    for i, o in enumerate(accepted):
        if i in duplicate_of:
            kept, near = duplicate_of[i]
            first = accepted[kept].accepted
            what = (f"near duplicate: {near}" if near else "duplicate content: same image, audio, text and question")
            reason = f"{what} as {first['id']} ({first['source']} line {first['row']}); the first is kept"
            o.features.update(status="duplicate", reason=reason)
            o.rejected = {"id": o.accepted["id"], "reason": reason, "source": o.accepted["source"],
                          "line": o.accepted["row"], "row_key": o.row_key, "duplicate_of": first["id"]}
            o.accepted = None
        else:
            o.accepted["content_group"] = accepted[roots[i]].accepted["id"]
            if (pin := pins.get(roots[i])) and o.accepted.get("split") != pin:
                moved += 1  # it shares media with a record pinned elsewhere: both in one split, or one leaks
                o.accepted["split"] = pin
        o.content = None
    exact_count = sum(near is None for _, near in duplicate_of.values())
    grouped = sum(1 for i, r in enumerate(roots) if i not in duplicate_of and r != i)
    return {"exact": exact_count, "near": len(duplicate_of) - exact_count,
            "records_sharing_media_with_an_earlier_one": grouped,
            "records_moved_to_a_pinned_split_of_their_group": moved}


def write_media(out_dir: Path, accepted: list[Outcome], spool: Spool) -> None:
    """Accepted media from the spool into canonical tars; manifest entries get their 'tar:member' locations."""
    for start in range(0, len(accepted), RECORDS_PER_MEDIA_TAR):
        name = f"media-{start // RECORDS_PER_MEDIA_TAR:06d}.tar"
        chunk = accepted[start:start + RECORDS_PER_MEDIA_TAR]
        members = [o.accepted[kind] for o in chunk for kind in ("image", "audio") if o.accepted[kind]]
        write_tar(out_dir / name, spool.only(members))
        for o in chunk:
            for kind in ("image", "audio"):
                if o.accepted[kind]:
                    o.accepted[kind] = f"{name}:{o.accepted[kind]}"


def read_entries(manifest: Path) -> Iterator[dict]:
    """Ingest's manifest one row at a time: rows are needed only while they are validated."""
    with open(manifest, encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def validate_to(raw_dir: Path, out_dir: Path, params: ValidateParams) -> tuple[pd.DataFrame, dict[str, int]]:
    """Write out_dir (media tars, manifest, quarantine, feature table); return the feature table and duplicate
    counts. The records are freed on return, before the gate loads Great Expectations."""
    manifest = raw_dir / "manifest.jsonl"
    if not manifest.exists():
        raise SystemExit(f"validate: {manifest} not found: run the ingest stage first (dvc repro ingest)")
    media = TarMembers(raw_dir)
    first_seen: dict[str, str] = {}
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryFile(dir=tmp) as scratch:  # nameless: a kill -9 leaves no file
        spool = Spool(scratch)
        entries = tqdm(read_entries(manifest), desc="validate", unit="row", total=count_lines(manifest))
        outcomes = [validate_row(e, media, first_seen, params, spool) for e in entries]
        duplicates = deduplicate(outcomes, params)
        accepted = [o for o in outcomes if o.accepted]
        features = pd.DataFrame([o.features for o in outcomes])
        write_media(tmp, accepted, spool)
        write_jsonl(tmp / "manifest.jsonl", (o.accepted for o in accepted))
        write_jsonl(tmp / "quarantine.jsonl", (o.rejected for o in outcomes if o.rejected))
        features.to_parquet(tmp / "features.parquet", index=False)
        media_limits.write(tmp, media_limits.MediaLimits.of(params))
    return features, duplicates


def run(raw_dir: Path, out_dir: Path, metrics_path: Path, docs_dir: Path, params: ValidateParams) -> bool:
    features, duplicates = validate_to(raw_dir, out_dir, params)
    limits = GateLimits(max_reject_fraction=params.max_reject_fraction, min_side=params.min_side,
                        max_pixels=params.max_pixels, max_seconds=params.max_seconds,
                        max_caption_chars=params.max_caption_chars)
    with tempfile.TemporaryDirectory(prefix="trimodal-gx-") as gx_dir:
        gate = run_gate(features, limits, docs_dir=docs_dir.resolve(), context_dir=Path(gx_dir))
    metrics = features_summary_metrics(features)
    metrics["duplicates"] = duplicates
    metrics["gate_passed"] = gate.success
    write_json(metrics_path, metrics)
    print(f"validate: {metrics['n_accepted']} accepted, {metrics['n_rows'] - metrics['n_accepted']} quarantined "
          f"({out_dir / 'quarantine.jsonl'}); data docs: {gate.docs_index}")
    print(gate.summary)
    return gate.success


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else argv)
    paths = params.paths
    if not run(Path(paths.raw), Path(paths.validated), Path(paths.metrics) / "validate.json",
               Path(paths.validate_report), params.validate):
        raise SystemExit("validate: the data gate failed (see the summary above); fix the sources or the limits")


if __name__ == "__main__":
    run_main(main)
