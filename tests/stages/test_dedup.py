"""Dedup and decontamination on a corpus with planted duplicates: ingest -> validate -> tokenizer -> shard.

Planted: an exact copy of a picture under another id and URL, the same picture re-encoded as JPEG, resized to
twice its size, and a sound re-encoded as 16-bit PCM and at half the level; plus records that share a picture
but ask something else (kept, one content group, one split) and repeated text-only records (kept); records that pin
their split (`split`), one of them sharing a picture with a record the hash puts elsewhere, and one pinning no split.
"""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageDraw

from tests.stage_runner import make_project, run_stage
from trimodal.atomic import read_jsonl
from trimodal.data.records import record_split, split_of

pytestmark = pytest.mark.slow  # ingest, validate, tokenizer and shard stage runs

SPLIT = ["split.val_fraction=0.3", "split.test_fraction=0.3"]


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(150, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = (int(v) for v in rng.integers(0, 70, 2))
        draw.rectangle((x, y, x + 25, y + 25), fill=tuple(int(v) for v in rng.integers(0, 150, 3)))
    return image


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def sound(seed: int, gain: float = 1.0, subtype: str = "FLOAT") -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    wave = sum(np.sin(2 * np.pi * f * t) * (t > s) * (t < s + 0.3) for f, s in zip(
        rng.uniform(200, 900, 3), rng.uniform(0, 0.6, 3), strict=True))
    buf = io.BytesIO()
    sf.write(buf, (gain * 0.3 * wave).astype(np.float32), 16000, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("dedup"))
    media = root / "data/sources/dups/media"
    media.mkdir(parents=True)
    files = {"a.png": encoded(picture(1), "PNG"), "a-copy.png": encoded(picture(1), "PNG"),
             "a.jpg": encoded(picture(1), "JPEG", quality=85),
             "a-big.png": encoded(picture(1).resize((192, 192)), "PNG"),
             "b.png": encoded(picture(2), "PNG"), "s.wav": sound(1), "s16.wav": sound(1, subtype="PCM_16"),
             "s-quiet.wav": sound(1, gain=0.5), "t.wav": sound(2)}
    for name, data in files.items():
        (media / name).write_bytes(data)
    rows = [
        {"id": "a", "image_url": "media/a.png", "caption": "a picture"},
        {"id": "a-copy", "image_url": "media/a-copy.png", "caption": "a picture"},  # exact: same pixels
        {"id": "a-jpeg", "image_url": "media/a.jpg", "caption": "a picture"},  # near: re-encoded
        {"id": "a-big", "image_url": "media/a-big.png", "caption": "a picture"},  # near: resized
        {"id": "a-asked", "image_url": "media/a.png", "question": "what is shown?", "answer": "squares"},  # kept
        {"id": "b", "image_url": "media/b.png", "caption": "another picture"},
        {"id": "s", "audio_url": "media/s.wav", "label": "tones"},
        {"id": "s-pcm16", "audio_url": "media/s16.wav", "label": "tones"},  # near: 16-bit re-encoding
        {"id": "s-quiet", "audio_url": "media/s-quiet.wav", "label": "tones"},  # near: half the level
        {"id": "s-said", "audio_url": "media/s.wav", "text": "three tones"},  # kept, grouped with s
        {"id": "t", "audio_url": "media/t.wav", "label": "tones"},
        *({"id": f"txt-{i}", "text": "a red circle", "caption": "a red circle"} for i in range(3)),  # kept
        {"id": "b-asked", "image_url": "media/b.png", "question": "which colour?", "answer": "blue", "split": "val"},
        {"id": "pinned-text", "text": "a blue square", "caption": "a blue square", "split": "train"},
        {"id": "bad-split", "text": "a green circle", "split": "holdout"},  # quarantined
    ]
    table = root / "data/sources/dups/records.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_stage("ingest", root, f"data.sources=[{table}]", "ingest.retries=0")
    run_stage("validate", root)
    run_stage("tokenizer", root, *SPLIT, "tokenizer.vocab_size=300", "tokenizer.min_frequency=1")
    run_stage("shard", root, *SPLIT, "shard.samples_per_shard=4", "shard.image_size=16", "shard.n_mels=20")
    return root


def test_planted_duplicates_are_quarantined_naming_the_kept_record(project):
    quarantine = {q["id"]: q for q in read_jsonl(project / "data/validated/quarantine.jsonl")}
    assert {rid: q.get("duplicate_of") for rid, q in quarantine.items()} == {
        "a-copy": "a", "a-jpeg": "a", "a-big": "a", "s-pcm16": "s", "s-quiet": "s", "bad-split": None}
    assert quarantine["bad-split"]["reason"] == "unknown split: 'holdout'; a record may pin one of train, val, test"
    assert quarantine["a-copy"]["reason"].startswith("duplicate content: same image, audio, text and question as a ")
    assert quarantine["a-jpeg"]["reason"].startswith("near duplicate: image within ")
    assert quarantine["s-quiet"]["reason"].startswith("near duplicate: audio within ")
    metrics = json.loads((project / "metrics/validate.json").read_text())
    assert metrics["duplicates"]["exact"] == 1 and metrics["duplicates"]["near"] == 4
    assert metrics["n_duplicates"] == 5 and metrics["n_rejected"] == 1
    assert metrics["rejected_by_reason"] == {"duplicate content": 1, "near duplicate": 4, "unknown split": 1}


def test_records_sharing_media_get_one_content_group_and_one_split(project):
    manifest = {r["id"]: r for r in read_jsonl(project / "data/validated/manifest.jsonl")}
    assert sorted(manifest) == ["a", "a-asked", "b", "b-asked", "pinned-text", "s", "s-said", "t", "txt-0", "txt-1",
                                "txt-2"]
    groups = {rid: r["content_group"] for rid, r in manifest.items()}
    assert groups["a-asked"] == groups["a"] == "a" and groups["s-said"] == groups["s"] == "s"
    assert groups["b"] == "b" and groups["txt-1"] == "txt-1"  # shared text alone groups nothing
    split_of_id = {}
    for tar_path in (project / "data/shards").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    split_of_id[json.loads(tar.extractfile(member).read())["id"]] = tar_path.name.split("-")[0]
    assert sorted(split_of_id) == sorted(manifest)
    # by id alone these pairs would be split apart (a: train, a-asked: test; s: test, s-said: train)
    assert split_of_id["a-asked"] == split_of_id["a"] and split_of_id["s-said"] == split_of_id["s"]
    assert all(split_of_id[rid] == record_split(record, 0.3, 0.3) for rid, record in manifest.items())
    assert split_of("a-asked", 0.3, 0.3) != split_of("a", 0.3, 0.3)  # so the line above can fail


def test_a_pinned_split_holds_for_the_record_and_its_content_group(project):
    manifest = {r["id"]: r for r in read_jsonl(project / "data/validated/manifest.jsonl")}
    splits = {rid: record_split(record, 0.3, 0.3) for rid, record in manifest.items()}
    assert splits["pinned-text"] == "train" and split_of("pinned-text", 0.3, 0.3) == "val"
    # b-asked pins val and shares b's picture: b follows it (its group's hash says test), so nothing leaks
    assert manifest["b-asked"]["content_group"] == "b" and split_of("b", 0.3, 0.3) == "test"
    assert splits["b-asked"] == splits["b"] == "val"
    metrics = json.loads((project / "metrics/validate.json").read_text())
    assert metrics["duplicates"]["records_moved_to_a_pinned_split_of_their_group"] == 1
