"""Stage `shard`: validated records -> WebDataset shards data/shards/{train,val,test}-NNNNNN.tar + index.json.

Per sample (key = the record's dot-free key; members only for what the record has):
  json         {"id", "modalities", "caption", "question", "answer", "label", "label_index", "group"}
  image.npy    uint8 [S, S, 3]                   (trimodal.data.features.image_to_array)
  mel.npy      float32 [n_mels, frames] log-Mel  (trimodal.data.features.log_mel)
  text.npy, caption.npy, question.npy, answer.npy   int32 token ids, <s> ... </s>, <= max_text_tokens

Splits come from a hash of the record's content group (trimodal/data/records.record_split: stable across runs
and source order; records sharing media stay together). One pass over the manifest, read line by line, featurises
each record once and writes it to its split's shard (three writers open at once), so memory is flat in the number
of records and each media tar is read once. Shards are written with a fixed mtime in manifest order, so identical
inputs give identical bytes; index.json records per-split counts and each shard's sample count, size and sha256
(the loader checks counts against it), the feature sizes and the media limits validate checked the records with.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import sys
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from itertools import islice
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from PIL import Image
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from trimodal.atomic import atomic_dir, write_json
from trimodal.config_errors import run_main
from trimodal.data import limits as media_limits
from trimodal.data.features import image_to_array, log_mel, mel_filters, token_ids
from trimodal.data.records import SPLITS, record_split
from trimodal.data.tars import FIXED_MTIME
from trimodal.params import Params, ShardParams, load_params

TOKEN_FIELDS = ("text", "caption", "question", "answer")
RECORDS_PER_TOKENIZER_CALL = 256  # a batch of records' texts share one call; the records themselves are small


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class MediaReader:
    """Payloads at 'media-NNNNNN.tar:member' under `root`, read member by member from the one tar open: the pass
    walks the manifest in tar order (validate writes it so), so each tar is opened once and none is held in memory
    (trimodal.data.tars.TarMembers keeps whole tars: two in memory while the next one loads)."""

    def __init__(self, root: Path):
        self.root, self.name = root, None
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}

    def get(self, location: str) -> bytes:
        name, member = location.split(":", 1)
        if name != self.name:
            self.close()
            self.tar, self.name = tarfile.open(self.root / name, mode="r:"), name
            self.members = {info.name: info for info in self.tar}  # TarFile.getmember scans a list per call
        return self.tar.extractfile(self.members[member]).read()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
        self.tar = self.name = None


class Featurizer:
    def __init__(self, params: ShardParams, sample_rate: int | None, tokenizer: PreTrainedTokenizerBase,
                 labels: list[str]):
        self.params, self.sample_rate, self.tokenizer = params, sample_rate, tokenizer
        self.label_index = {label: i for i, label in enumerate(labels)}
        self.filters = mel_filters(sample_rate, params.n_fft, params.n_mels) if sample_rate else None

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        return token_ids(self.tokenizer, texts, self.params.max_text_tokens)

    def tokens(self, text: str) -> np.ndarray:
        return self.token_ids([text])[0]

    def samples(self, records: list[dict], media: MediaReader) -> Iterator[dict[str, bytes | str]]:
        """The records' samples in order, the text fields of all of them tokenised in one call."""
        ids = iter(self.token_ids([r[name] for r in records for name in TOKEN_FIELDS if r.get(name)]))
        for record in records:
            yield self.sample(record, media, {name: next(ids) for name in TOKEN_FIELDS if record.get(name)})

    def sample(self, record: dict, media: MediaReader, tokens: dict[str, np.ndarray]) -> dict[str, bytes | str]:
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
        for name, ids in tokens.items():
            sample[f"{name}.npy"] = npy(ids)
        return sample


def iter_manifest(path: Path) -> Iterator[dict]:
    """The manifest's records one line at a time, so memory stays flat in their number."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def batches(items: Iterable, size: int) -> Iterator[list]:
    items = iter(items)
    while batch := list(islice(items, size)):
        yield batch


def survey(manifest: Path) -> tuple[int, list[str], str | None]:
    """What the first sample already needs from all records, from a pass that keeps none of them: the record count
    (progress), the sorted labels (label_index) and the first audio location (the sample rate)."""
    count, labels, first_audio = 0, set(), None
    for record in iter_manifest(manifest):
        count += 1
        if record.get("label"):
            labels.add(record["label"])
        first_audio = first_audio or record.get("audio")
    return count, sorted(labels), first_audio


def data_sample_rate(first_audio: str | None, media: MediaReader) -> int | None:
    """The sample rate of the validated audio (validate writes every clip at one rate; Featurizer checks each);
    None when no record has audio."""
    return sf.info(io.BytesIO(media.get(first_audio))).samplerate if first_audio else None


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class SplitShards:
    """One split's shards, written as its samples arrive: wds.ShardWriter starts a tar every `per_shard` samples.
    `shards` lists each finished tar for index.json."""

    def __init__(self, out_dir: Path, split: str, per_shard: int):
        self.pattern = str(out_dir / split).replace("%", "%%") + "-%06d.tar"
        self.per_shard = per_shard
        self.writer: wds.ShardWriter | None = None
        self.shards: list[dict] = []

    def write(self, sample: dict) -> None:
        if self.writer is None:  # made on the first sample: it opens a tar at once, and an empty split has none
            self.writer = wds.ShardWriter(self.pattern, maxcount=self.per_shard, maxsize=math.inf,  # count alone
                                          post=self.finished, verbose=0, encoder=False, mtime=FIXED_MTIME,
                                          user="trimodal", group="trimodal")
        self.writer.write(sample)

    def finished(self, name: str) -> None:
        path = Path(name)
        self.shards.append({"name": path.name, "count": self.writer.count, "bytes": path.stat().st_size,
                            "sha256": sha256_of(path)})

    def close(self) -> dict:
        """Finish the last tar; the split's entry in index.json."""
        if self.writer is not None:
            self.writer.close()
        return {"count": sum(s["count"] for s in self.shards), "shards": self.shards}


def write_splits(manifest: Path, featurizer: Featurizer, media: MediaReader, out_dir: Path, params: Params,
                 progress: tqdm) -> dict[str, dict]:
    """One pass in manifest order: each record featurised once and written to its split's shard, the three splits'
    writers open at once. Within a split, samples keep manifest order."""
    fractions = params.split
    writers = {split: SplitShards(out_dir, split, params.shard.samples_per_shard) for split in SPLITS}
    for records in batches(iter_manifest(manifest), RECORDS_PER_TOKENIZER_CALL):
        for record, sample in zip(records, featurizer.samples(records, media), strict=True):
            writers[record_split(record, fractions.val_fraction, fractions.test_fraction)].write(sample)
            progress.update()
    return {split: writer.close() for split, writer in writers.items()}


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
    for needed, stage in ((manifest, "validate"), (validated_dir / media_limits.FILE, "validate"),
                          (tokenizer_dir / "tokenizer.json", "tokenizer")):
        if not needed.exists():
            raise SystemExit(f"shard: {needed} not found: run `dvc repro {stage}` first")
    sp = params.shard
    limits = media_limits.read(validated_dir)  # validate's, carried on (shard reads its own params only)
    count, labels, first_audio = survey(manifest)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with closing(MediaReader(validated_dir)) as media, atomic_dir(out_dir) as tmp, \
            tqdm(total=count, desc="shard", unit="record") as progress, single_torch_thread():
        # the rate validate resampled every clip to, read from the data itself (shard reads its own params only)
        sample_rate = data_sample_rate(first_audio, media)
        featurizer = Featurizer(sp, sample_rate, tokenizer, labels)
        index = {"labels": labels, "image_size": sp.image_size, "n_mels": sp.n_mels,
                 "sample_rate": sample_rate, "hop_length": sp.hop_length, "n_fft": sp.n_fft,
                 "max_text_tokens": sp.max_text_tokens, "vocab_size": len(tokenizer),
                 "pad_token_id": tokenizer.pad_token_id, media_limits.KEY: limits.to_dict()}
        index["splits"] = write_splits(manifest, featurizer, media, tmp, params, progress)
        write_json(tmp / "index.json", index)
    counts = ", ".join(f"{s} {index['splits'][s]['count']}" for s in SPLITS)
    print(f"shard: {count} records -> {counts} ({len(labels)} labels) -> {out_dir}")
    return index


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else argv)
    paths = params.paths
    run(Path(paths.validated), Path(paths.tokenizer), Path(paths.shards), params)


if __name__ == "__main__":
    run_main(main)
