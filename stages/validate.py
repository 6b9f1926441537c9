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

Memory is flat in the number of rows (issues 12, 33): every row's outcome, the content dedup compares and the
fingerprints wait on disk (a `Ledger`: sqlite and files in data/cache/validate-state) until dedup has seen every
record; near duplicates come from an exact search whose cost grows linearly with the records (trimodal/data/dedup.py
near_pairs). Decoded media are kept in data/cache/validate.sqlite by the sha256 of the payload and the decoding
settings (trimodal/data/cache.py), and the media tars are written from there.

Incremental (issue 33, docs/data.md "Incremental runs"): the ledger stays in data/cache between runs, so a grown
manifest keeps the outcomes and near pairs of its unchanged prefix of rows (same lines, same raw tars, same
settings and code) and validates, decodes and searches the rest; media tars holding the same members as before are
linked from data/cache/validate-shards (trimodal/data/shardstore.py). The outputs are the same bytes either way.
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import json
import shutil
import sqlite3
import sys
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import PIL
import soundfile as sf
import soxr
from tqdm import tqdm

from trimodal.atomic import atomic_dir, atomic_open, write_json
from trimodal.config_errors import run_main
from trimodal.data import dedup as dedup_module
from trimodal.data import limits as media_limits
from trimodal.data import media as media_module
from trimodal.data import records as records_module
from trimodal.data.cache import BlobCache
from trimodal.data.dedup import (
    AUDIO_BLOCK,
    AUDIO_GRID,
    FINGERPRINT_WIDTH,
    IMAGE_BLOCK,
    IMAGE_GRID,
    Groups,
    NearStats,
    audio_fingerprint,
    digest,
    image_fingerprint,
    near_pairs,
    normalise_text,
    resumed_index,
)
from trimodal.data.gate import GateLimits, features_summary_metrics, run_gate
from trimodal.data.media import Rejected, decode_audio, decode_image
from trimodal.data.records import INPUT_FIELDS, META_FIELDS, SPLITS, TARGET_FIELDS, record_key, unsafe_id_reason
from trimodal.data.shardstore import ShardStore
from trimodal.data.spool import RowFile
from trimodal.data.tars import TarMembers, write_tar
from trimodal.params import ValidateParams, load_params

RECORDS_PER_MEDIA_TAR = 1000
KINDS = ("image", "audio")  # the media a record may carry, in the order its manifest entry lists conversions


@dataclass(slots=True)
class Media:
    """One decoded medium as validate keeps it: the normalised bytes (PNG or float WAV), what the feature table and
    the manifest say of it, and its near-duplicate fingerprint (trimodal/data/dedup.py)."""
    data: bytes
    features: dict  # image_width and image_height, or audio_seconds
    converted: list[str]
    fingerprint: np.ndarray
    digest: str = ""  # sha256 of `data`: what exact dedup compares
    key: str = ""  # its entry in the decode cache, where the output tars take `data` from

    def __post_init__(self):
        self.digest = self.digest or digest(self.data)


@dataclass(slots=True)
class Outcome:
    """What validation made of one input row: an accepted record or a quarantine entry, plus features."""

    features: dict
    row_key: str = ""
    accepted: dict | None = None
    rejected: dict | None = None
    media: dict[str, Media] = field(default_factory=dict)  # of an accepted record, until the ledger has it


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


def check_fields(entry: dict, first_seen: SeenIds, params: ValidateParams) -> None:
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


def decoding_settings(params: ValidateParams) -> str:
    """Everything a decoded medium depends on besides its bytes: the limits, the decoding and fingerprint code and
    the libraries under it. Part of every decode-cache key, so a change to any of them decodes everything again."""
    code = [Path(m.__file__).read_bytes() for m in (media_module, dedup_module)]
    return json.dumps({"min_side": params.min_side, "max_pixels": params.max_pixels, "sample_rate": params.sample_rate,
                       "max_seconds": params.max_seconds, "code": [digest(c) for c in code],
                       "libraries": [PIL.__version__, np.__version__, sf.__version__, soxr.__version__]})


def _decode(kind: str, payload: bytes, params: ValidateParams) -> Media:
    if kind == "image":
        image = decode_image(payload, min_side=params.min_side, max_pixels=params.max_pixels)
        return Media(image.png, {"image_width": float(image.width), "image_height": float(image.height)},
                     [f"image {image.converted_from}->RGB"] if image.converted_from else [],
                     image_fingerprint(image.rgb))
    audio = decode_audio(payload, sample_rate=params.sample_rate, max_seconds=params.max_seconds)
    return Media(audio.wav, {"audio_seconds": audio.seconds}, [f"audio {c}" for c in audio.converted],
                 audio_fingerprint(audio.samples, audio.rate))


def decoded(kind: str, payload: bytes, params: ValidateParams, settings: str, cache: BlobCache) -> Media:
    """`payload` decoded, from the cache when these bytes were decoded before with these settings (a rejection too).
    Raises Rejected."""
    key = digest(f"{kind}\n{settings}\n".encode() + payload)
    if hit := cache.get(key):
        if "rejected" in hit.meta:
            raise Rejected(hit.meta["rejected"])
        size = 4 * FINGERPRINT_WIDTH[kind]
        return Media(hit.data[size:], hit.meta["features"], hit.meta["converted"],
                     np.frombuffer(hit.data[:size], dtype=np.float32), hit.meta["digest"], key)
    try:
        media = _decode(kind, payload, params)
    except Rejected as e:
        cache.put(key, {"rejected": str(e)}, b"")
        raise
    cache.put(key, {"features": media.features, "converted": media.converted, "digest": media.digest},
              media.fingerprint.astype(np.float32).tobytes() + media.data)
    media.key = key
    return media


def decoded_bytes(cache: BlobCache, kind: str, key: str, sha: str) -> bytes:
    """The normalised medium `decoded` kept under `key`; raises StaleState when it is gone or not `sha`."""
    entry = cache.get(key)
    data = entry.data[4 * FINGERPRINT_WIDTH[kind]:] if entry else None
    if data is None or digest(data) != sha:
        raise StaleState(f"decoded {kind} {key} is not in {cache.path}")
    return data


def validate_row(entry: dict, media: TarMembers, first_seen: SeenIds, params: ValidateParams, settings: str,
                 cache: BlobCache) -> Outcome:
    """An accepted row's outcome carries its decoded media (Outcome.media) for the ledger."""
    features = _empty_features(entry)
    outcome = Outcome(features=features, row_key=entry["row_key"])
    try:
        check_fields(entry, first_seen, params)
        fields = entry["fields"]
        key = record_key(fields["id"])
        record = {name: fields.get(name) for name in ("id", "text", *TARGET_FIELDS, *META_FIELDS)}
        record.update(key=key, source=entry["source"], row=entry["line"], image=None, audio=None, converted=[])
        for kind, suffix in (("image", "png"), ("audio", "wav")):
            if fields.get(f"{kind}_url"):
                outcome.media[kind] = medium = decoded(kind, _payload(entry, kind, media), params, settings, cache)
                record[kind] = f"{key}.{suffix}"
                record["converted"].extend(medium.converted)
                features.update(medium.features)
    except Rejected as e:
        features["reason"] = str(e)
        fields = entry.get("fields") or {}
        outcome.rejected = {"id": fields.get("id"), "reason": str(e), "source": entry["source"],
                            "line": entry["line"], "row_key": entry["row_key"]}
        outcome.media = {}
        return outcome
    features["status"] = "accepted"
    outcome.accepted = record
    return outcome


class SeenIds:
    """Record id -> where it was first seen ("source line n"), in the ledger's database, with the row that saw it."""

    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        self._db = ledger.db

    def __contains__(self, record_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM seen WHERE id = ?", (record_id,)).fetchone() is not None

    def __getitem__(self, record_id: str) -> str:
        return self._db.execute("SELECT at FROM seen WHERE id = ?", (record_id,)).fetchone()[0]

    def __setitem__(self, record_id: str, where: str) -> None:
        self._db.execute("INSERT INTO seen VALUES (?, ?, ?)", (record_id, where, self._ledger.rows))


class StaleState(Exception):
    """What an earlier run left in the cache does not hold up: validate starts again from nothing."""


class Ledger:
    """validate's state that grows with the rows, in files under `folder` (issue 33: memory flat in the rows): every
    row's outcome and each accepted record's content (digests, normalised text, where the decoded media are in the
    decode cache) in sqlite, the fingerprints in one RowFile per kind, the near pairs found. An accepted record's
    position `pos` counts accepted records in input order.

    The folder is kept in `paths.cache` between runs (docs/data.md "Incremental runs"): a row's outcome depends only
    on its manifest line, its payloads' bytes, the rows before it and `key` (the settings and the code), so a run
    keeps the longest prefix of rows whose lines and raw tars are unchanged (`keep_prefix`) and validates the rest;
    the near pairs among kept records stand (the search is exact: trimodal/data/dedup.py). The claim that the folder
    is whole lives in the decode cache: it is withdrawn when a run starts and made again when its outputs are
    written, so a killed run, a deleted folder or a deleted cache leave nothing to trust."""

    def __init__(self, folder: Path, cache: BlobCache, key: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.cache, self.key = folder, cache, key
        claim = cache.get(CLAIM)
        cache.put(CLAIM, {}, b"")
        cache.commit()
        claim = claim.meta if claim and claim.meta.get("key") == key else {}
        if not claim:
            for path in folder.iterdir():
                path.unlink()
        self.db = sqlite3.connect(folder / "ledger.sqlite")
        self.db.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, at TEXT, idx INTEGER);
            CREATE TABLE IF NOT EXISTS rows (idx INTEGER PRIMARY KEY, pos INTEGER, row_key TEXT, line TEXT,
                                             image_tar TEXT, audio_tar TEXT, features TEXT, accepted TEXT,
                                             rejected TEXT);
            CREATE TABLE IF NOT EXISTS content (pos INTEGER PRIMARY KEY, id TEXT, source TEXT, row INTEGER,
                                                split TEXT, image TEXT, audio TEXT, text TEXT, question TEXT,
                                                image_key TEXT, image_size INTEGER, audio_key TEXT,
                                                audio_size INTEGER);
            CREATE TABLE IF NOT EXISTS pairs (i INTEGER, j INTEGER, kind TEXT, distance REAL, near INTEGER);
            CREATE INDEX IF NOT EXISTS pairs_by_j ON pairs (j, i);
            CREATE TABLE IF NOT EXISTS raw (name TEXT PRIMARY KEY, sha256 TEXT);
        """)
        self.seen = SeenIds(self)
        self.fingerprints = {kind: (RowFile(_opened(folder / f"{kind}.rows"), width), _positions(folder, kind))
                             for kind, width in FINGERPRINT_WIDTH.items()}
        self.indexes: dict = {}
        self.kept = claim.get("rows", 0) if self._whole(claim) else 0  # rows of the earlier run that may stand
        self.rows = self.accepted = 0
        self.searched = dict.fromkeys(KINDS, 0)  # fingerprints whose near pairs are in `pairs`

    def _whole(self, claim: dict) -> bool:
        """The cheap check: the files hold as many rows and fingerprints as the claim says."""
        if not claim:
            return False
        counts = {kind: (len(rows), len(positions)) for kind, (rows, positions) in self.fingerprints.items()}
        return (self.db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == claim["rows"]
                and all(counts[kind] == (n, n) for kind, n in claim["fingerprints"].items()))

    def keep_prefix(self, manifest: Path, raw_dir: Path) -> int:
        """Keep the rows of the earlier run up to the first whose manifest line changed or whose raw tar's bytes did;
        drop the rest. Returns how many were kept."""
        tars = {path.name: _file_sha256(path) for path in sorted(raw_dir.glob("*.tar"))}
        limit = self.kept
        if changed := [name for name, sha in self.db.execute("SELECT name, sha256 FROM raw") if tars.get(name) != sha]:
            marks = ", ".join("?" * len(changed))
            first = self.db.execute(f"SELECT MIN(idx) FROM rows WHERE image_tar IN ({marks}) OR audio_tar IN "
                                    f"({marks})", changed + changed).fetchone()[0]
            if first is not None:
                limit = min(limit, first)
        kept = 0
        with open(manifest, encoding="utf-8") as f:
            lines = (line for line in f if line.strip())
            for line, (stored,) in zip(lines, self.db.execute("SELECT line FROM rows ORDER BY idx"), strict=False):
                if kept >= limit or digest(line.encode()) != stored:
                    break
                kept += 1
        self._truncate(kept)
        self.db.execute("DELETE FROM raw")
        self.db.executemany("INSERT INTO raw VALUES (?, ?)", tars.items())
        return kept

    def _truncate(self, rows: int) -> None:
        accepted = self.db.execute("SELECT COUNT(pos) FROM rows WHERE idx < ?", (rows,)).fetchone()[0]
        for statement in ("DELETE FROM rows WHERE idx >= :rows", "DELETE FROM seen WHERE idx >= :rows",
                          "DELETE FROM content WHERE pos >= :accepted",
                          "DELETE FROM pairs WHERE j >= :accepted OR near = 0"):
            self.db.execute(statement, {"rows": rows, "accepted": accepted})
        for kind, (fingerprints, positions) in self.fingerprints.items():
            keep = bisect.bisect_left(positions, accepted)
            fingerprints.truncate(keep)
            del positions[keep:]
            self.searched[kind] = keep
        self.rows, self.accepted = rows, accepted

    def add(self, outcome: Outcome, line: str, entry: dict) -> None:
        pos = self.accepted if outcome.accepted else None
        if outcome.accepted:
            record, media = outcome.accepted, outcome.media
            self.db.execute("INSERT INTO content VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                pos, record["id"], record["source"], record["row"], record.get("split"),
                *(media[k].digest if k in media else None for k in KINDS),
                normalise_text(record.get("text")), normalise_text(record.get("question")),
                *(value for k in KINDS for value in ((media[k].key, len(media[k].data)) if k in media
                                                     else (None, None)))))
            for kind, medium in media.items():
                rows, positions = self.fingerprints[kind]
                rows.append(medium.fingerprint)
                positions.append(pos)
            self.accepted += 1
        self.db.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            self.rows, pos, outcome.row_key, digest(line.encode()),
            *((entry.get(kind) or "").partition(":")[0] or None for kind in KINDS),
            json.dumps(outcome.features), _json(outcome.accepted), _json(outcome.rejected)))
        self.rows += 1

    def content(self, pos: int) -> tuple:
        """(id, source, row, split, image, audio, text, question) of accepted record `pos`."""
        return self.db.execute("SELECT id, source, row, split, image, audio, text, question FROM content "
                               "WHERE pos = ?", (pos,)).fetchone()

    def members(self, first: int, last: int) -> dict[int, tuple]:
        """pos -> (image digest, size, cache key, audio digest, size, cache key) of accepted records first..last."""
        return {pos: rest for pos, *rest in self.db.execute(
            "SELECT pos, image, image_size, image_key, audio, audio_size, audio_key FROM content WHERE pos BETWEEN ? "
            "AND ?", (first, last))}

    def near_index(self, kind: str):
        """The near-duplicate index of `kind` kept by the earlier run, cut to the fingerprints kept and holding
        every fingerprint now (trimodal/data/dedup.py resumed_index)."""
        rows, _ = self.fingerprints[kind]
        self.indexes[kind] = resumed_index(self.folder / f"{kind}.index", rows, *NEAR_INDEX[kind])
        return self.indexes[kind]

    def save(self) -> None:
        """Make the claim that the folder is whole (after the outputs are written)."""
        self.db.commit()
        import faiss

        for kind, (rows, positions) in self.fingerprints.items():
            rows.flush()
            with open(self.folder / f"{kind}.pos", "wb") as f:
                positions.tofile(f)
            if kind in self.indexes:
                faiss.write_index(self.indexes[kind], str(self.folder / f"{kind}.index"))
            else:
                (self.folder / f"{kind}.index").unlink(missing_ok=True)
        self.cache.put(CLAIM, {"key": self.key, "rows": self.rows,
                               "fingerprints": {kind: len(rows) for kind, (rows, _) in self.fingerprints.items()}},
                       b"")
        self.cache.commit()

    def close(self) -> None:
        self.db.close()
        for rows, _ in self.fingerprints.values():
            rows.close()


CLAIM = "ledger"  # the decode cache's entry saying which run's ledger state (paths.cache/validate-state) is whole


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _opened(path: Path):
    return open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 - closed with the ledger


def _positions(folder: Path, kind: str) -> array:
    positions = array("q")
    if (path := folder / f"{kind}.pos").exists():
        positions.frombytes(path.read_bytes())
    return positions


def _json(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value)


def _limits(params: ValidateParams) -> dict[str, float]:
    return {"image": params.near_duplicate_image_rms, "audio": params.near_duplicate_audio_db}


NEAR_INDEX = {"image": (IMAGE_GRID, IMAGE_BLOCK), "audio": (AUDIO_GRID, AUDIO_BLOCK)}  # what near_pairs indexes


def find_pairs(ledger: Ledger, params: ValidateParams) -> dict[str, dict]:
    """Fill the ledger's `pairs`: records whose `kind` media are the same (each with the first record holding those
    bytes, distance 0) or near (every pair within the threshold: the kept records' pairs stand, the new fingerprints
    are searched against all); returns what each kind's search holds (fingerprints, near pairs: the same whether
    or not a run kept rows) and prints what this run's cost."""
    db, costs = ledger.db, {}
    for kind, limit in _limits(params).items():
        db.execute(f"INSERT INTO pairs SELECT first, pos, ?, 0.0, 0 FROM (SELECT pos, MIN(pos) OVER (PARTITION BY "
                   f"{kind}) AS first FROM content WHERE {kind} IS NOT NULL) WHERE first != pos", (kind,))
        rows, positions = ledger.fingerprints[kind]
        stats = NearStats()
        if len(rows) >= 2 and limit > 0:
            index = ledger.near_index(kind)
            db.executemany("INSERT INTO pairs VALUES (?, ?, ?, ?, 1)", (
                (positions[i], positions[j], kind, d) for i, j, d in near_pairs(
                    rows, limit, *NEAR_INDEX[kind], stats, start=ledger.searched[kind], index=index)))
        found = db.execute("SELECT COUNT(*) FROM pairs WHERE kind = ? AND near = 1", (kind,)).fetchone()[0]
        costs[kind] = {"fingerprints": len(rows), "near_pairs": found}
        print(f"validate: {kind} near duplicates: searched {len(rows) - ledger.searched[kind]} of {len(rows)} "
              f"fingerprints, {stats.compared} distances, {stats.candidates} candidates, {stats.found} new pairs")
    return costs


def _shared(db: sqlite3.Connection) -> Iterator[tuple[int, int, dict[str, float]]]:
    """(i, j, kind -> distance) of every pair of records sharing media, by j then i."""
    rows = db.execute("SELECT i, j, kind, MIN(distance) FROM pairs GROUP BY j, i, kind ORDER BY j, i")
    for (i, j), group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        yield i, j, {kind: distance for _, _, kind, distance in group}


@dataclass
class Verdicts:
    """What dedup decided for the accepted records, by position."""
    duplicate_of: dict[int, tuple[int, str | None]]  # position -> (kept position, what was near; None: exact)
    roots: list[int]  # position -> the first position of its content group
    pins: dict[int, str]  # group root -> the split its first pinning record names: the whole group goes there
    moved: int = 0  # records moved to their group's pinned split (counted as they are written)


def deduplicate(ledger: Ledger, params: ValidateParams) -> Verdicts:
    """Which accepted records duplicate an earlier one, and the content groups of the rest (find_pairs first)."""
    db = ledger.db
    duplicate_of: dict[int, tuple[int, str | None]] = {}
    text_only = "" if params.dedup_text_only else "WHERE image IS NOT NULL OR audio IS NOT NULL"  # templated corpora
    for pos, first in db.execute(f"SELECT pos, MIN(pos) OVER (PARTITION BY image, audio, text, question) FROM content "
                                 f"{text_only}"):
        if first != pos:
            duplicate_of[pos] = (first, None)
    for i, j, found in _shared(db):
        a, b = ledger.content(i)[4:], ledger.content(j)[4:]  # image, audio, text, question
        if j in duplicate_of or a[2:] != b[2:]:
            continue
        distances = {kind: 0.0 if a[k] == b[k] else found.get(kind) for k, kind in enumerate(KINDS) if a[k] or b[k]}
        if all(d is not None for d in distances.values()):
            kept = duplicate_of.get(i, (i, None))[0]
            duplicate_of[j] = (kept, ", ".join(f"same {kind}" if a[KINDS.index(kind)] == b[KINDS.index(kind)] else
                                              f"{kind} within {d:.2f}" for kind, d in distances.items())
                               + ", same text and question")
    groups = Groups(ledger.accepted)
    for i, j, _ in _shared(db):
        if i not in duplicate_of and j not in duplicate_of:
            groups.join(i, j)
    roots = groups.roots()
    pins: dict[int, str] = {}
    for pos, split in db.execute("SELECT pos, split FROM content WHERE split IS NOT NULL ORDER BY pos"):
        if pos not in duplicate_of:
            pins.setdefault(roots[pos], split)
    return Verdicts(duplicate_of, roots, pins)


def judged(ledger: Ledger, verdicts: Verdicts) -> Iterator[tuple[int | None, dict, dict | None, dict | None]]:
    """Every row in input order as (pos, features, accepted, rejected) after dedup: duplicates quarantined naming the
    kept record, the others with their `content_group` and their group's pinned split."""
    for pos, row_key, features, accepted, rejected in ledger.db.execute(
            "SELECT pos, row_key, features, accepted, rejected FROM rows ORDER BY idx"):
        features, accepted, rejected = json.loads(features), _loads(accepted), _loads(rejected)
        if pos is not None and pos in verdicts.duplicate_of:
            kept, near = verdicts.duplicate_of[pos]
            kept_id, kept_source, kept_row = ledger.content(kept)[:3]
            what = (f"near duplicate: {near}" if near else "duplicate content: same image, audio, text and question")
            reason = f"{what} as {kept_id} ({kept_source} line {kept_row}); the first is kept"
            features.update(status="duplicate", reason=reason)
            rejected = {"id": accepted["id"], "reason": reason, "source": accepted["source"],
                        "line": accepted["row"], "row_key": row_key, "duplicate_of": kept_id}
            accepted = None
        elif pos is not None:
            root = verdicts.roots[pos]
            accepted["content_group"] = accepted["id"] if root == pos else ledger.content(root)[0]
            if (pin := verdicts.pins.get(root)) and accepted.get("split") != pin:
                verdicts.moved += 1  # it shares media with a record pinned elsewhere: both in one split, or one leaks
                accepted["split"] = pin
        yield pos, features, accepted, rejected


def _loads(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


class MediaTars:
    """validate's media tars, RECORDS_PER_MEDIA_TAR accepted records each: restored from the shard store when the
    same members were written before (trimodal/data/shardstore.py), else built from the decode cache."""

    def __init__(self, out_dir: Path, ledger: Ledger, store: ShardStore):
        self.out_dir, self.ledger, self.store = out_dir, ledger, store
        self.written = 0

    def write(self, chunk: list[tuple[int, dict]]) -> str:
        """Write the tar of `chunk` ((pos, record) in order); returns its name."""
        name = f"media-{self.written:06d}.tar"
        members, where = [], {}
        content = self.ledger.members(chunk[0][0], chunk[-1][0])
        for pos, record in chunk:
            image, image_size, image_key, audio, audio_size, audio_key = content[pos]
            for kind, sha, size, key in (("image", image, image_size, image_key), ("audio", audio, audio_size,
                                                                                    audio_key)):
                if record[kind]:
                    members.append((record[kind], sha, size))
                    where[record[kind]] = (kind, key, sha)
        if not self.store.restore(members, self.out_dir / name):
            write_tar(self.out_dir / name, {member: decoded_bytes(self.ledger.cache, *where[member])
                                            for member, _, _ in members})
            self.store.keep(members, self.out_dir / name)
        self.written += 1
        return name


def write_outputs(out_dir: Path, ledger: Ledger, verdicts: Verdicts, tars: MediaTars) -> pd.DataFrame:
    """Media tars, manifest, quarantine and feature table, one pass over the ledger; returns the feature table."""
    tables: list[pd.DataFrame] = []
    features: list[dict] = []
    chunk: list[tuple[int, dict]] = []
    with (atomic_open(out_dir / "manifest.jsonl", "w") as manifest,
          atomic_open(out_dir / "quarantine.jsonl", "w") as quarantine):
        def flush() -> None:
            name = tars.write(chunk)
            for _, r in chunk:
                for kind in ("image", "audio"):
                    if r[kind]:
                        r[kind] = f"{name}:{r[kind]}"
                manifest.write(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n")
            chunk.clear()

        for pos, row_features, accepted, rejected in judged(ledger, verdicts):
            features.append(row_features)
            if len(features) == 10000:  # the feature table in pieces: no list of every row's dict
                tables.append(pd.DataFrame(features))
                features.clear()
            if rejected:
                quarantine.write(json.dumps(rejected, sort_keys=True, ensure_ascii=False) + "\n")
            if accepted:
                chunk.append((pos, accepted))
                if len(chunk) == RECORDS_PER_MEDIA_TAR:
                    flush()
        if chunk:
            flush()
    tables.append(pd.DataFrame(features))
    return pd.concat(tables, ignore_index=True)


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def state_key(params: ValidateParams, settings: str) -> str:
    """What every row's outcome and every near pair depends on besides the rows: the parameters, the decoding
    settings and the code that judges a row."""
    code = [Path(m.__file__).read_bytes() for m in (sys.modules[__name__], records_module)]
    return digest(json.dumps([dataclasses.asdict(params), settings, [digest(c) for c in code]]).encode())


def validate_to(raw_dir: Path, out_dir: Path, params: ValidateParams, cache_dir: Path) -> tuple[pd.DataFrame, dict]:
    """Write out_dir (media tars, manifest, quarantine, feature table); return the feature table and duplicate
    counts. The per-row state lives in a Ledger on disk in cache_dir, closed on return, before the gate loads Great
    Expectations. What an earlier run left that does not hold up is dropped and the rows validated again."""
    manifest = raw_dir / "manifest.jsonl"
    if not manifest.exists():
        raise SystemExit(f"validate: {manifest} not found: run the ingest stage first (dvc repro ingest)")
    try:
        return _validate_to(manifest, raw_dir, out_dir, params, cache_dir)
    except StaleState as e:
        print(f"validate: {e}; validating every row again")
        shutil.rmtree(cache_dir / "validate-state", ignore_errors=True)
        return _validate_to(manifest, raw_dir, out_dir, params, cache_dir)


def _validate_to(manifest: Path, raw_dir: Path, out_dir: Path, params: ValidateParams,
                 cache_dir: Path) -> tuple[pd.DataFrame, dict]:
    media = TarMembers(raw_dir)
    settings = decoding_settings(params)
    with (atomic_dir(out_dir) as tmp, BlobCache(cache_dir / "validate.sqlite") as cache,
          closing(Ledger(cache_dir / "validate-state", cache, state_key(params, settings))) as ledger):
        kept = ledger.keep_prefix(manifest, raw_dir)
        cache.hits = cache.misses = 0  # what the rows below decode
        total = count_lines(manifest)
        with open(manifest, encoding="utf-8") as f:
            lines = itertools.islice((line for line in f if line.strip()), kept, None)
            for line in tqdm(lines, desc="validate", unit="row", total=total - kept):
                entry = json.loads(line)
                ledger.add(validate_row(entry, media, ledger.seen, params, settings, cache), line, entry)
        print(f"validate: {kept} rows as the run before ({cache_dir / 'validate-state'}), {total - kept} validated: "
              f"decoded {cache.misses} payloads, reused {cache.hits} decoded before ({cache_dir})")
        costs = find_pairs(ledger, params)
        verdicts = deduplicate(ledger, params)
        tars = MediaTars(tmp, ledger, ShardStore(cache_dir / "validate-shards"))
        features = write_outputs(tmp, ledger, verdicts, tars)
        features.to_parquet(tmp / "features.parquet", index=False)
        media_limits.write(tmp, media_limits.MediaLimits.of(params))
        ledger.save()
        print(f"validate: {tars.store.built} media tars written, {tars.store.linked} the same as before")
    exact = sum(near is None for _, near in verdicts.duplicate_of.values())
    duplicates = {"exact": exact, "near": len(verdicts.duplicate_of) - exact,
                  "records_sharing_media_with_an_earlier_one": sum(
                      1 for i, r in enumerate(verdicts.roots) if i not in verdicts.duplicate_of and r != i),
                  "records_moved_to_a_pinned_split_of_their_group": verdicts.moved,
                  "search": costs}
    return features, duplicates


def run(raw_dir: Path, out_dir: Path, metrics_path: Path, docs_dir: Path, params: ValidateParams,
        cache_dir: Path) -> bool:
    features, duplicates = validate_to(raw_dir, out_dir, params, cache_dir)
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
               Path(paths.validate_report), params.validate, Path(paths.cache)):
        raise SystemExit("validate: the data gate failed (see the summary above); fix the sources or the limits")


if __name__ == "__main__":
    run_main(main)
