"""A corpus of awkward and hostile inputs, each row tagged with the outcome validate must give it.

`expected` maps id -> "accepted" | "accepted:<conversion>" | "<rejection category>" (reason prefix).
Rows with no usable id are listed in `expected_unkeyed` by (table name, line) instead.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

SR = 16000
# validate params the corpus is built against (pass as overrides)
OVERRIDES = ["validate.min_side=16", "validate.max_pixels=1000000", "validate.sample_rate=16000",
             "validate.max_seconds=2.0", "validate.max_caption_chars=40", "validate.max_reject_fraction=1.0",
             "ingest.timeout_s=2", "ingest.retries=0", "ingest.threads=4",
             # its images are one picture in many formats: near duplicates by design (dedup has its own test)
             "validate.near_duplicate_image_rms=0", "validate.near_duplicate_audio_db=0"]


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def wav(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def images() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected outcome)."""
    rgb = Image.new("RGB", (32, 24), (200, 30, 30))
    cmyk = io.BytesIO()
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(cmyk, format="JPEG")
    sixteen = Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16))
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(jpeg, format="JPEG")
    return {
        "ok.png": (png(rgb), "accepted"),
        "cmyk.jpg": (cmyk.getvalue(), "accepted:image CMYK->RGB"),
        "sixteen.png": (png(sixteen), "accepted:image I;16->RGB"),
        "palette.png": (png(palette, transparency=0), "accepted:image P->RGB"),
        "rgba.png": (png(Image.new("RGBA", (20, 20), (0, 0, 255, 128))), "accepted:image RGBA->RGB"),
        "gray.png": (png(Image.new("L", (20, 20), 128)), "accepted:image L->RGB"),
        "garbage.png": (b"this is not an image at all", "image undecodable"),
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "image truncated"),
        "empty.png": (b"", "image empty"),
        "sound.png": (wav(tone(0.1, SR), SR), "image undecodable"),
        "bomb.png": (png(Image.new("1", (2000, 1000), 0)), "decompression bomb"),
        "tiny.png": (png(Image.new("RGB", (8, 40))), "image too small"),
    }


def audios() -> dict[str, tuple[bytes, str]]:
    nan = tone(0.2, SR)
    nan[10] = np.nan
    return {
        "ok.wav": (wav(tone(0.5, SR), SR), "accepted"),
        "stereo44k.wav": (wav(tone(0.5, 44100, 2), 44100), "accepted:audio resampled 44100->16000"),
        "eightk.flac": (wav(tone(0.5, 8000), 8000, "FLAC"), "accepted:audio resampled 8000->16000"),
        "long.ogg": (wav(tone(3.0, SR), SR, "OGG", "VORBIS"), "accepted:audio cropped 3.0s->2.0s"),
        "garbage.wav": (b"RIFF....not really a wave file", "audio undecodable"),
        "empty.wav": (b"", "audio empty"),
        "noframes.wav": (wav(np.zeros(0, dtype=np.float32), SR), "audio empty"),
        "nan.wav": (wav(nan, SR, subtype="FLOAT"), "audio non-finite"),
    }


@dataclass
class Corpus:
    tables: list[str]
    expected: dict[str, str] = field(default_factory=dict)
    n_rows: int = 0


def build(root: Path) -> Corpus:
    """Write media + three tables (jsonl, csv, parquet) under root/data/sources/hostile/."""
    src = root / "data/sources/hostile"
    (src / "media").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    expected: dict[str, str] = {}
    for name, (data, outcome) in images().items():
        (src / "media" / name).write_bytes(data)
        rid = f"img-{name.replace('.', '_')}"
        rows.append({"id": rid, "image_url": f"media/{name}", "caption": "a thing"})
        expected[rid] = outcome
    for name, (data, outcome) in audios().items():
        (src / "media" / name).write_bytes(data)
        rid = f"aud-{name.replace('.', '_')}"
        rows.append({"id": rid, "audio_url": f"media/{name}", "label": "tone"})
        expected[rid] = outcome
    cases = [
        ({"id": "txt-ok", "text": "hello world", "caption": "hi"}, "accepted"),
        ({"id": "all-three", "text": "red", "image_url": "media/ok.png", "audio_url": "media/ok.wav"}, "accepted"),
        ({"id": "img-missing", "image_url": "media/does-not-exist.png"}, "image fetch failed"),
        ({"id": "img-refused", "image_url": "http://127.0.0.1:9/x.png"}, "image fetch failed"),
        ({"id": "img-ftp", "image_url": "ftp://example.invalid/x.png"}, "unsupported URL"),
        ({"id": "aud-missing", "audio_url": "media/nope.wav"}, "audio fetch failed"),
        ({"id": "aud-gopher", "audio_url": "gopher://x/y.wav"}, "unsupported URL"),
        ({"id": "no-input", "caption": "only a target"}, "no input"),
        ({"id": "blank-text", "text": "   \t "}, "empty text"),
        ({"id": "long-caption", "text": "x", "caption": "c" * 41}, "caption too long"),
        ({"id": "txt-ok", "text": "second use of an id"}, "duplicate id"),
        ({"id": "../escape", "text": "x"}, "unsafe id"),
        ({"id": "a/b", "text": "x"}, "unsafe id"),
        ({"id": "ctl\x01id", "text": "x"}, "unsafe id"),
        ({"text": "no id here"}, "missing id"),
    ]
    jsonl_lines = [json.dumps(r) for r in rows]
    for row, outcome in cases:
        jsonl_lines.append(json.dumps(row))
        if "id" in row and outcome != "duplicate id":
            expected[row["id"]] = outcome
    jsonl_lines += ["{not json", "[1, 2, 3]"]
    (src / "records.jsonl").write_text("\n".join(jsonl_lines) + "\n", encoding="utf-8")

    with open(src / "extra.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        writer.writerow(["csv-ok", "from a csv", "7"])
        writer.writerow(["csv-bad", "too", "many", "cells"])
    expected["csv-ok"] = "accepted"
    pd.DataFrame({"id": ["pq-ok", "pq-gray"], "text": ["from parquet", None],
                  "image_url": [None, "media/gray.png"]}).to_parquet(src / "more.parquet")
    expected["pq-ok"] = "accepted"
    expected["pq-gray"] = "duplicate content"  # the same picture as img-gray_png, no other input: kept once
    n_rows = len(jsonl_lines) + 2 + 2
    tables = [str(src / "records.jsonl"), str(src / "extra.csv"), str(src / "more.parquet")]
    return Corpus(tables=tables, expected=expected, n_rows=n_rows)
