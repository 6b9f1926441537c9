"""Streams the WebDataset shards of the `shard` stage for training, from a local folder or s3://.

    loader = make_loader("data/shards", "train", batch_size=32, shuffle=1000, num_workers=2, seed=0, epoch=0)

Each batch is a dict (any subset of modalities per sample; absent ones are zero/pad with a mask):
    ids             list[str]
    image           float32 [B, 3, S, S] in [0, 1]        image_present  bool [B]
    mel             float32 [B, n_mels, T_max]            mel_lengths    int64 [B] (0 = no audio)
    <f>_ids         int64 [B, L_max] padded with pad_id   <f>_mask       bool [B, L_max]
                    for f in text, caption, question, answer (an all-False row = field absent)
    label           int64 [B] (-100 = no label)
    meta            list[dict]: the sample's json (id, caption, question, answer, label, modalities)

Shuffling is deterministic given (seed, epoch): shard order from SimpleShardList's seed, samples from a
buffer shuffle seeded per DataLoader worker. Every shard's sample count is checked against index.json,
because bytes damaged mid-shard can otherwise end a shard early without an error. Arrays are read with
allow_pickle=False: shards are data, never code.
"""
from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Iterable, Iterator
from functools import partial

import fsspec
import numpy as np
import torch
import webdataset as wds
from webdataset.gopen import gopen_schemes

TOKEN_FIELDS = ("text", "caption", "question", "answer")


class ShardError(RuntimeError):
    """A shard that cannot be read whole, or yields a different number of samples than index.json records."""


REPAIR_HINT = "damaged or replaced shard? re-run `dvc repro shard` or `dvc pull data/shards`"


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    # a fresh filesystem per call: s3fs instances made in a parent process are not fork-safe
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True).open(url, mode)


def register_s3_scheme() -> None:
    """Let webdataset open s3:// URLs through s3fs (endpoint and credentials from the AWS environment)."""
    gopen_schemes["s3"] = _gopen_s3


def read_index(root: str) -> dict:
    with fsspec.open(f"{root.rstrip('/')}/index.json", "r") as f:
        return json.load(f)


def _checked_samples(expected: dict[str, int]):
    """Pipeline stage: shard URLs -> samples, raising ShardError when a shard is unreadable or its count is off."""

    def stage(urls: Iterable[dict]) -> Iterator[dict]:
        to_samples = wds.tarfile_to_samples(handler=wds.reraise_exception)
        for item in urls:
            url, n = item["url"], 0
            try:
                for sample in to_samples(iter([item])):
                    n += 1
                    yield sample
            except (tarfile.TarError, OSError, EOFError) as e:
                raise ShardError(f"{url}: unreadable after {n} samples ({e.__class__.__name__}: {e}); "
                                 f"{REPAIR_HINT}") from e
            if n != expected[url]:
                raise ShardError(f"{url}: {n} samples read, index.json says {expected[url]}; {REPAIR_HINT}")

    return stage


def _worker_shuffle(bufsize: int, seed: int, epoch: int):
    def stage(samples: Iterable[dict]) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        rng = random.Random(f"{seed}:{epoch}:{info.id if info else 0}")
        yield from wds.shuffle(bufsize, min(bufsize, 100), rng=rng)(samples)

    return stage


def decode(sample: dict) -> dict:
    out = {"__key__": sample["__key__"], "meta": json.loads(sample["json"])}
    for name, data in sample.items():
        if name.endswith(".npy"):
            out[name[:-4]] = np.load(io.BytesIO(data), allow_pickle=False)
    return out


def _pad(seqs: list[np.ndarray | None], pad_value: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D (or [C, T] along T) arrays; returns (padded, lengths). None counts as length 0."""
    lengths = [0 if s is None else s.shape[-1] for s in seqs]
    template = next((s for s in seqs if s is not None), None)
    lead = () if template is None else template.shape[:-1]
    out = torch.full((len(seqs), *lead, max(lengths, default=0)), pad_value, dtype=dtype)
    for i, s in enumerate(seqs):
        if s is not None:
            out[i, ..., : s.shape[-1]] = torch.from_numpy(np.asarray(s)).to(dtype)
    return out, torch.tensor(lengths, dtype=torch.int64)


def collate(samples: list[dict], pad_id: int, image_size: int, n_mels: int) -> dict:
    batch: dict = {"ids": [s["meta"]["id"] for s in samples], "meta": [s["meta"] for s in samples]}
    image = torch.zeros(len(samples), 3, image_size, image_size)
    for i, s in enumerate(samples):
        if "image" in s:
            image[i] = torch.from_numpy(s["image"]).permute(2, 0, 1).float() / 255.0
    batch["image"] = image
    batch["image_present"] = torch.tensor(["image" in s for s in samples])
    mel, batch["mel_lengths"] = _pad([s.get("mel") for s in samples], 0.0, torch.float32)
    batch["mel"] = mel if mel.dim() == 3 else torch.zeros(len(samples), n_mels, 0)
    for name in TOKEN_FIELDS:
        ids, lengths = _pad([s.get(name) for s in samples], pad_id, torch.int64)
        batch[f"{name}_ids"] = ids
        batch[f"{name}_mask"] = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    batch["label"] = torch.tensor([s["meta"].get("label_index", -1) if s["meta"].get("label_index", -1) >= 0
                                   else -100 for s in samples], dtype=torch.int64)
    return batch


def make_loader(root: str, split: str, batch_size: int, shuffle: int = 0, num_workers: int = 0, seed: int = 0,
                epoch: int = 0, verify_counts: bool = True, drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over one split's shards (see the module docstring for the batch layout)."""
    register_s3_scheme()
    root = root.rstrip("/")
    index = read_index(root)
    if split not in index["splits"]:
        raise ValueError(f"unknown split {split!r}; index.json has {sorted(index['splits'])}")
    shards = index["splits"][split]["shards"]
    if not shards:
        raise ValueError(f"split {split!r} in {root} has no shards (0 records)")
    expected = {f"{root}/{s['name']}": s["count"] for s in shards}
    stages = [wds.SimpleShardList(list(expected), seed=seed + epoch if shuffle else None),
              wds.split_by_node, wds.split_by_worker]
    stages.append(_checked_samples(expected) if verify_counts else wds.tarfile_to_samples())
    if shuffle:
        stages.append(_worker_shuffle(shuffle, seed, epoch))
    stages += [wds.map(decode),
               wds.batched(batch_size, partial=not drop_last,
                           collation_fn=partial(collate, pad_id=index["pad_token_id"],
                                                image_size=index["image_size"], n_mels=index["n_mels"]))]
    workers = min(num_workers, len(shards))  # an idle worker per missing shard would add nothing
    return torch.utils.data.DataLoader(wds.DataPipeline(*stages), batch_size=None, num_workers=workers,
                                       persistent_workers=False)


