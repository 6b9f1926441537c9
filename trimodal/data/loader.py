"""Streams the WebDataset shards of the `shard` stage for training, from a local folder or s3://.

    loader = make_loader("data/shards", "train", batch_size=32, shuffle=1000, num_workers=2, seed=0, epoch=0)

Each batch is a dict (any subset of modalities per sample; absent ones are zero/pad with a mask):
    ids             list[str]
    image           float32 [B, 3, S, S] in [0, 1] (zeros = no image)   image_present  bool [B]
    mel             float32 [B, n_mels, T_max] (zero-padded)            mel_lengths    int64 [B] (0 = no audio)
    <f>_ids         int64 [B, L_max] padded with pad_id                 <f>_mask       bool [B, L_max]
                    for f in text, caption, question, answer (an all-False row = field absent)
    label           int64 [B] (-100 = no label, the ignore_index of cross-entropy)
    meta            list[dict]: the sample's json (id, caption, question, answer, label, label_index, modalities)

Pipeline (webdataset pieces): this rank's shards (order shuffled from (seed, epoch)) -> split_by_worker -> tar
samples with a per-shard count check -> buffer shuffle (seeded per rank and worker) -> decode (npy/json only,
allow_pickle=False: shards are data, never code) -> batched(collate).

Checks, because bytes damaged mid-shard can otherwise end a shard early without an error: every shard's sample
count against index.json (ShardError naming the shard), and every sample's members against the modalities
and fields its json declares (a tar cut at a member boundary drops members, not samples).

Distributed (rank, world): each rank streams a disjoint share of the split's shards, so loader work per rank
shrinks as ranks are added. Shares are balanced by sample count (largest shard to the least-loaded rank) and
re-drawn every epoch; with drop_last every rank's epoch is cut to the same number of batches (the smallest
share's), so all ranks take the same number of steps per epoch and move to the next epoch together.

s3://bucket/prefix roots are read through s3fs; the endpoint comes from TRIMODAL_S3_ENDPOINT_URL or
AWS_ENDPOINT_URL (moto in tests), credentials from the standard AWS environment. The s3fs filesystem is created
inside each open, never inherited: an instance made in the parent is not fork-safe in DataLoader workers.
Every pipeline stage is a module-level function (or partial of one), so the loader also works with spawn or
forkserver workers.
"""
from __future__ import annotations

import io
import itertools
import json
import os
import random
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from functools import partial

import fsspec
import numpy as np
import torch
import webdataset as wds
from webdataset.gopen import gopen_schemes

TOKEN_FIELDS = ("text", "caption", "question", "answer")
MODALITY_MEMBERS = {"image": "image", "audio": "mel", "text": "text"}  # modality -> member (without .npy)
ENDPOINT_VARS = ("TRIMODAL_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
REPAIR_HINT = "damaged or replaced shard? re-run `dvc repro shard` or `dvc pull data/shards`"


class ShardError(RuntimeError):
    """A shard that cannot be read whole, yields a different number of samples than index.json records,
    or holds a sample missing members its json declares."""


def s3_storage_options() -> dict:
    """s3fs keyword arguments from the environment: the endpoint override, if any (credentials: AWS env vars)."""
    endpoint = next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    import s3fs

    # a fresh filesystem per call: s3fs instances made in a parent process are not fork-safe
    return s3fs.S3FileSystem(skip_instance_cache=True, **s3_storage_options()).open(url, mode)


def register_s3_scheme() -> None:
    """Let webdataset open s3:// URLs through s3fs (endpoint and credentials from the environment)."""
    gopen_schemes["s3"] = _gopen_s3


register_s3_scheme()  # at import too: spawned DataLoader workers import this module when unpickling the pipeline


def read_index(root: str) -> dict:
    """index.json of a shard folder: a local path or s3://bucket/prefix."""
    url = f"{root.rstrip('/')}/index.json"
    options = s3_storage_options() if url.startswith("s3://") else {}
    if options:
        options["skip_instance_cache"] = True
    with fsspec.open(url, "r", **options) as f:
        return json.load(f)


def _split_members(root: str, split: str, wanted: Callable[[str], bool]) -> Iterator[tuple[str, str, bytes]]:
    """(shard name, member name, bytes) of every tar member of a split whose name `wanted` accepts, streamed without
    decoding anything (the others are skipped)."""
    index = read_index(root.rstrip("/"))
    if split not in index["splits"]:
        raise ValueError(f"unknown split {split!r}; index.json has {sorted(index['splits'])}")
    options = s3_storage_options() if root.startswith("s3://") else {}
    for shard in index["splits"][split]["shards"]:
        with fsspec.open(f"{root.rstrip('/')}/{shard['name']}", "rb", **options) as f, \
                tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                if m.isfile() and wanted(m.name):
                    yield shard["name"], m.name, tar.extractfile(m).read()


def read_meta(root: str, split: str) -> list[dict]:
    """The json of every sample of a split, without decoding media (tar members other than json are skipped)."""
    return [json.loads(data) for _, _, data in _split_members(root, split, lambda name: name.endswith(".json"))]


def read_question_answers(root: str | os.PathLike, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(question ids, answer ids) of every sample of a split that has both, without decoding media: the tar members
    other than those two are skipped."""
    found: dict[str, dict[str, np.ndarray]] = {}
    def wanted(name: str) -> bool:
        return name.rpartition("/")[2].partition(".")[2] in ("question.npy", "answer.npy")

    for shard, name, data in _split_members(str(root), split, wanted):
        key, _, member = name.rpartition("/")[2].partition(".")
        found.setdefault(f"{shard}/{key}", {})[member] = np.load(io.BytesIO(data), allow_pickle=False)
    return [(s["question.npy"], s["answer.npy"]) for s in found.values() if len(s) == 2]


def _checked_samples(urls: Iterable[dict], expected: dict[str, int]) -> Iterator[dict]:
    """Shard URLs -> samples, raising ShardError when a shard is unreadable or its sample count is off."""
    register_s3_scheme()
    for item in urls:
        url, n = item["url"], 0
        try:
            for sample in wds.tarfile_to_samples(handler=wds.reraise_exception)(iter([item])):
                n += 1
                yield sample
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ShardError(f"{url}: unreadable after {n} samples ({e.__class__.__name__}: {e}); "
                             f"{REPAIR_HINT}") from e
        if n != expected[url]:
            raise ShardError(f"{url}: {n} samples read, index.json says {expected[url]}; {REPAIR_HINT}")


def _unchecked_samples(urls: Iterable[dict]) -> Iterator[dict]:
    register_s3_scheme()
    yield from wds.tarfile_to_samples(handler=wds.reraise_exception)(urls)


def _seeded_shuffle(samples: Iterable[dict], bufsize: int, seed: int, epoch: int, rank: int) -> Iterator[dict]:
    """Buffer shuffle seeded by (seed, epoch, rank, worker): reproducible, and distinct across workers."""
    info = torch.utils.data.get_worker_info()
    rng = random.Random(f"{seed}:{epoch}:{rank}:{info.id if info else 0}")
    yield from wds.shuffle(bufsize, min(bufsize, 100), rng=rng)(samples)


def expected_members(meta: dict) -> set[str]:
    """The .npy members a sample must carry, from what its json declares."""
    members = {MODALITY_MEMBERS[m] for m in meta.get("modalities", ())}
    members.update(name for name in ("caption", "question", "answer") if meta.get(name))
    return {f"{m}.npy" for m in members}


def decode(sample: dict) -> dict:
    """Raw tar members -> {"__key__", "meta", <member>: np.ndarray}; npy and json only, never pickle."""
    where = f"{sample.get('__url__', '?')}: sample {sample['__key__']}"
    if "json" not in sample:
        raise ShardError(f"{where} has no json member; {REPAIR_HINT}")
    meta = json.loads(sample["json"])
    missing = expected_members(meta) - sample.keys()
    if missing:
        raise ShardError(f"{where} ({meta.get('id')}) lacks {sorted(missing)}; {REPAIR_HINT}")
    out = {"__key__": sample["__key__"], "meta": meta}
    for name, data in sample.items():
        if name.endswith(".npy"):
            out[name[:-4]] = np.load(io.BytesIO(data), allow_pickle=False)
    return out


def _pad(seqs: list[np.ndarray | None], pad_value: float, dtype: torch.dtype,
         lead: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad arrays of shape [*lead, T] along T; returns (padded [B, *lead, T_max], lengths). None = length 0."""
    lengths = [0 if s is None else s.shape[-1] for s in seqs]
    out = torch.full((len(seqs), *lead, max(lengths, default=0)), pad_value, dtype=dtype)
    for i, s in enumerate(seqs):
        if s is not None:
            out[i, ..., : s.shape[-1]] = torch.from_numpy(np.asarray(s)).to(dtype)
    return out, torch.tensor(lengths, dtype=torch.int64)


def collate(samples: list[dict], pad_id: int, image_size: int | None = None, n_mels: int | None = None) -> dict:
    """Decoded samples -> one batch (layout in the module docstring). image_size / n_mels (from index.json) fix
    the shapes of a batch in which no sample has an image / audio; otherwise they are read off the samples."""
    images = [s.get("image") for s in samples]
    mels = [s.get("mel") for s in samples]
    size = next((im.shape[0] for im in images if im is not None), image_size or 0)
    mel_rows = next((m.shape[0] for m in mels if m is not None), n_mels or 0)
    batch: dict = {"ids": [s["meta"]["id"] for s in samples], "meta": [s["meta"] for s in samples]}
    image = torch.zeros(len(samples), 3, size, size)
    for i, im in enumerate(images):
        if im is not None:
            image[i] = torch.from_numpy(im).permute(2, 0, 1).float() / 255.0
    batch["image"] = image
    batch["image_present"] = torch.tensor([im is not None for im in images], dtype=torch.bool)
    batch["mel"], batch["mel_lengths"] = _pad(mels, 0.0, torch.float32, lead=(mel_rows,))
    for name in TOKEN_FIELDS:
        ids, lengths = _pad([s.get(name) for s in samples], pad_id, torch.int64)
        batch[f"{name}_ids"] = ids
        batch[f"{name}_mask"] = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    labels = [s["meta"].get("label_index", -1) for s in samples]
    batch["label"] = torch.tensor([i if i >= 0 else -100 for i in labels], dtype=torch.int64)
    return batch


def rank_share(shards: list[dict], rank: int, world: int, seed: int, epoch: int,
               shuffle: bool) -> tuple[list[dict], int]:
    """One epoch's disjoint share of `shards` (index.json entries) for `rank` of `world`, and the smallest share's
    sample count. Largest shard first to the least-loaded rank keeps shares within one shard of each other."""
    order = list(shards)
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    loads, shares = [0] * world, [[] for _ in range(world)]
    for shard in sorted(order, key=lambda s: -s["count"]):  # stable: equal counts keep the shuffled order
        least = loads.index(min(loads))
        shares[least].append(shard)
        loads[least] += shard["count"]
    mine = shares[rank]
    if shuffle:
        random.Random(f"{seed}:{epoch}:{rank}").shuffle(mine)
    return mine, min(loads)


class EpochLoader:
    """A DataLoader cut to `batches` batches per pass: every rank takes the same number of steps per epoch."""

    def __init__(self, loader: torch.utils.data.DataLoader, batches: int):
        self.loader, self.batches = loader, batches

    def __iter__(self) -> Iterator[dict]:
        return itertools.islice(iter(self.loader), self.batches)

    def __len__(self) -> int:
        return self.batches


def _kept(keep: Callable[[dict], bool], sample: dict) -> bool:
    return keep(sample["meta"])


def make_loader(root: str, split: str, batch_size: int, shuffle: int = 0, num_workers: int = 0, seed: int = 0,
                epoch: int = 0, verify_counts: bool = True, drop_last: bool = False, rank: int = 0,
                world: int = 1,
                keep: Callable[[dict], bool] | None = None) -> torch.utils.data.DataLoader | EpochLoader:
    """A DataLoader over one split's shards (local folder or s3://bucket/prefix); batch layout in the module
    docstring. shuffle: buffer size (0 = shard and sample order as written); (seed, epoch) fix the order.
    rank/world: this process's disjoint share of the shards (module docstring); batch_size is per rank.
    keep: only the samples whose json it accepts (a module-level function or partial: workers unpickle it); a
    filtered loader is not cut to the ranks' common epoch length, which the counts no longer give."""
    register_s3_scheme()
    root = root.rstrip("/")
    index = read_index(root)
    if split not in index["splits"]:
        raise ValueError(f"unknown split {split!r}; index.json has {sorted(index['splits'])}")
    shards = index["splits"][split]["shards"]
    if not shards:
        raise ValueError(f"split {split!r} in {root} has no shards (0 records)")
    if world > len(shards):
        raise ValueError(f"{world} processes but only {len(shards)} {split} shards in {root}: rank {rank} would get "
                         f"none; lower shard.samples_per_shard (and `dvc repro shard`) or use fewer devices")
    mine, smallest = rank_share(shards, rank, world, seed, epoch, bool(shuffle))
    if world > 1 and drop_last and smallest < batch_size:
        raise ValueError(f"the smallest rank's share of the {split} split holds {smallest} samples, fewer than one "
                         f"batch of {batch_size}: lower the batch size or shard.samples_per_shard")
    expected = {f"{root}/{s['name']}": s["count"] for s in mine}
    stages = [wds.SimpleShardList(list(expected)), wds.split_by_worker]
    stages.append(partial(_checked_samples, expected=expected) if verify_counts else _unchecked_samples)
    if shuffle:
        stages.append(partial(_seeded_shuffle, bufsize=shuffle, seed=seed, epoch=epoch, rank=rank))
    collate_fn = partial(collate, pad_id=index["pad_token_id"], image_size=index["image_size"],
                         n_mels=index["n_mels"])
    stages.append(wds.map(decode))
    if keep is not None:
        stages.append(wds.select(partial(_kept, keep)))
    stages.append(wds.batched(batch_size, partial=not drop_last, collation_fn=collate_fn))
    workers = min(num_workers, len(mine))  # an idle worker per missing shard would add nothing
    # An own generator: starting an iterator draws a worker base seed, which from the global RNG would shift
    # dropout after a resume (the resumed run starts its iterator mid-epoch, the straight run did not).
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{epoch}:{rank}".encode()))
    loader = torch.utils.data.DataLoader(wds.DataPipeline(*stages), batch_size=None, num_workers=workers,
                                         generator=generator)
    return EpochLoader(loader, smallest // batch_size) if world > 1 and drop_last and keep is None else loader
