"""Stage `shard`: validated records -> WebDataset shards data/shards/{train,val,test}-NNNNNN.tar + index.json.

Per sample (key = the record's dot-free key; members only for what the record has):
  json         {"id", "modalities", "caption", "question", "answer", "label", "label_index", "group"}
  image.npy    uint8 [S, S, 3]                   (stages.common.features.image_to_array)
  mel.npy      float32 [n_mels, frames] log-Mel  (stages.common.features.log_mel)
  text.npy, caption.npy, question.npy, answer.npy   int32 token ids, <s> ... </s>, <= max_text_tokens

Splits come from a hash of the record's content group (stages/common/records.record_split: stable across runs
and source order; records sharing media stay together). Shards are written with a fixed
mtime in manifest order, so identical inputs give identical bytes; index.json records per-split counts
and each shard's sample count, size and sha256 (the loader checks counts against it).
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from PIL import Image
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from stages.common.atomic import atomic_dir, read_jsonl, write_json
from stages.common.features import image_to_array, log_mel, mel_filters
from stages.common.params import Params, ShardParams, load_params
from stages.common.records import SPLITS, record_split
from stages.common.tars import FIXED_MTIME, TarMembers

VALIDATED_DIR = Path("data/validated")
TOKENIZER_DIR = Path("artifacts/tokenizer")
OUT_DIR = Path("data/shards")
TOKEN_FIELDS = ("text", "caption", "question", "answer")


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class Featurizer:
    def __init__(self, params: ShardParams, sample_rate: int | None, tokenizer: PreTrainedTokenizerBase,
                 labels: list[str]):
        self.params, self.sample_rate, self.tokenizer = params, sample_rate, tokenizer
        self.label_index = {label: i for i, label in enumerate(labels)}
        self.filters = mel_filters(sample_rate, params.n_fft, params.n_mels) if sample_rate else None

    def tokens(self, text: str) -> np.ndarray:
        ids = self.tokenizer(text, truncation=True, max_length=self.params.max_text_tokens)["input_ids"]
        return np.asarray(ids, dtype=np.int32)

    def sample(self, record: dict, media: TarMembers) -> dict[str, bytes | str]:
        modalities = [m for m in ("image", "audio", "text") if record.get(m)]
        meta = {name: record.get(name) for name in ("id", "caption", "question", "answer", "label", "group")}
        meta.update(modalities=modalities, label_index=self.label_index.get(record.get("label"), -1))
        sample: dict[str, bytes | str] = {"__key__": record["key"], "json": json.dumps(meta, sort_keys=True).encode()}
        if record.get("image"):
            image = Image.open(io.BytesIO(media.get(record["image"])))
            sample["image.npy"] = npy(image_to_array(image, self.params.image_size))
        if record.get("audio"):
            waveform, rate = sf.read(io.BytesIO(media.get(record["audio"])), dtype="float32")
            if rate != self.sample_rate:
                raise ValueError(f"{record['id']}: audio at {rate} Hz, the other validated clips at "
                                 f"{self.sample_rate} Hz")
            mel = log_mel(waveform, rate, self.params.n_mels, self.params.n_fft, self.params.hop_length, self.filters)
            sample["mel.npy"] = npy(mel)
        for name in TOKEN_FIELDS:
            if record.get(name):
                sample[f"{name}.npy"] = npy(self.tokens(record[name]))
        return sample


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_split(out_dir: Path, split: str, samples: Iterator[dict], count: int, per_shard: int) -> list[dict]:
    shards = []
    for number, chunk in enumerate(chunks(list(range(count)), per_shard)):
        path = out_dir / f"{split}-{number:06d}.tar"
        with open(path, "wb") as f, wds.TarWriter(f, encoder=False, mtime=FIXED_MTIME, user="trimodal",
                                                   group="trimodal") as writer:
            for _ in chunk:
                writer.write(next(samples))
        shards.append({"name": path.name, "count": len(chunk), "bytes": path.stat().st_size, "sha256": sha256_of(path)})
    return shards


def data_sample_rate(records: list[dict], media: TarMembers) -> int | None:
    """The sample rate of the validated audio (validate writes every clip at one rate; Featurizer checks each);
    None when no record has audio."""
    first = next((r for r in records if r.get("audio")), None)
    return sf.info(io.BytesIO(media.get(first["audio"]))).samplerate if first else None


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """One intra-op thread while featurising: per-clip STFTs are too small to split, and torch's spinning
    worker threads slow them several-fold when the cores are shared (2.5 s clip, 2 busy cores: 4.3 -> 1.4 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(validated_dir: Path, tokenizer_dir: Path, out_dir: Path, params: Params) -> dict:
    manifest = validated_dir / "manifest.jsonl"
    for needed, stage in ((manifest, "validate"), (tokenizer_dir / "tokenizer.json", "tokenizer")):
        if not needed.exists():
            raise SystemExit(f"shard: {needed} not found: run `dvc repro {stage}` first")
    sp = params.shard
    records = read_jsonl(manifest)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    labels = sorted({r["label"] for r in records if r.get("label")})
    # the rate validate resampled every clip to, read from the data itself (shard reads its own params only)
    media = TarMembers(validated_dir)
    sample_rate = data_sample_rate(records, media)
    featurizer = Featurizer(sp, sample_rate, tokenizer, labels)
    fractions = params.split
    by_split = {s: [r for r in records if record_split(r, fractions.val_fraction, fractions.test_fraction) == s]
                for s in SPLITS}

    def featurized(split: str, progress: tqdm) -> Iterator[dict]:
        for record in by_split[split]:
            yield featurizer.sample(record, media)
            progress.update()

    index = {"splits": {}, "labels": labels, "image_size": sp.image_size, "n_mels": sp.n_mels,
             "sample_rate": sample_rate, "hop_length": sp.hop_length, "n_fft": sp.n_fft,
             "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    with atomic_dir(out_dir) as tmp, tqdm(total=len(records), desc="shard", unit="record") as progress, \
            single_torch_thread():
        for split in SPLITS:
            samples = featurized(split, progress)
            shards = write_split(tmp, split, samples, len(by_split[split]), sp.samples_per_shard)
            index["splits"][split] = {"count": len(by_split[split]), "shards": shards}
        write_json(tmp / "index.json", index)
    counts = ", ".join(f"{s} {index['splits'][s]['count']}" for s in SPLITS)
    print(f"shard: {len(records)} records -> {counts} ({len(labels)} labels) -> {out_dir}")
    return index


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else argv)
    run(VALIDATED_DIR, TOKENIZER_DIR, OUT_DIR, params)


if __name__ == "__main__":
    main()
