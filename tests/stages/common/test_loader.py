import pytest
import s3fs
import torch

from stages.common.loader import ShardError, make_loader, read_index
from stages.shard import run
from tests.shard_fixtures import build_validated, shard_params


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    records = build_validated(root, n=28)
    run(root / "validated", root / "tokenizer", root / "shards", shard_params())
    return root / "shards", records


def copy_shards(root, tmp_path):
    damaged = tmp_path / "shards"
    damaged.mkdir()
    for f in root.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    return damaged


def ids_of(loader):
    return [i for batch in loader for i in batch["ids"]]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("shuffle", [0, 16])
def test_each_sample_once_per_epoch(shards, workers, shuffle):
    root, _ = shards
    index = read_index(str(root))
    ids = ids_of(make_loader(str(root), "train", 3, shuffle=shuffle, num_workers=workers))
    assert len(ids) == len(set(ids)) == index["splits"]["train"]["count"]


def test_shuffle_is_deterministic_per_seed_and_epoch(shards):
    root, _ = shards
    order = ids_of(make_loader(str(root), "train", 4, shuffle=16, seed=1))
    assert order == ids_of(make_loader(str(root), "train", 4, shuffle=16, seed=1))
    assert order != ids_of(make_loader(str(root), "train", 4, shuffle=16, seed=1, epoch=1))
    assert order != ids_of(make_loader(str(root), "train", 4))  # unshuffled: shard order


def test_mixed_modalities_pad_and_mask(shards):
    root, records = shards
    by_id = {r["id"]: r for r in records}
    for batch in make_loader(str(root), "train", 7):
        for i, rid in enumerate(batch["ids"]):
            rec = by_id[rid]
            assert bool(batch["image_present"][i]) == bool(rec["image"])
            if not rec["image"]:
                assert batch["image"][i].abs().sum() == 0
            assert (batch["mel_lengths"][i] > 0) == bool(rec["audio"])
            assert batch["mel"][i, :, batch["mel_lengths"][i]:].abs().sum() == 0
            assert batch["text_mask"][i].any() == bool(rec["text"])
            assert (batch["text_ids"][i][~batch["text_mask"][i]] == 0).all()  # pad id
            assert (batch["label"][i] == -100) == (rec["label"] is None)
        assert batch["image"].dtype == torch.float32 and float(batch["image"].max()) <= 1.0


def test_truncated_shard_fails_loudly(shards, tmp_path):
    root, _ = shards
    damaged = copy_shards(root, tmp_path)
    victim = damaged / "train-000000.tar"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"train-000000.tar: unreadable after \d+ samples"):
        ids_of(make_loader(str(damaged), "train", 2))


def test_cleanly_shortened_shard_is_caught_by_the_count_check(shards, tmp_path):
    import io
    import tarfile

    root, _ = shards
    damaged = copy_shards(root, tmp_path)
    victim = damaged / "train-000000.tar"
    with tarfile.open(victim) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    first_key = members[0][0].name.split(".")[0]
    with tarfile.open(victim, "w") as tar:  # a valid tar missing its first sample
        for m, data in members:
            if not m.name.startswith(first_key):
                tar.addfile(m, io.BytesIO(data))
    with pytest.raises(ShardError, match="index.json says"):
        ids_of(make_loader(str(damaged), "train", 2))


@pytest.mark.parametrize("workers", [0, 2])
def test_s3_shards_stream_like_local_ones(shards, s3_server, workers):
    root, _ = shards
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists("trimodal-shards"):
        fs.mkdir("trimodal-shards")
        fs.put(str(root) + "/", "trimodal-shards/demo/", recursive=True)
    local = ids_of(make_loader(str(root), "train", 3))
    remote = make_loader("s3://trimodal-shards/demo", "train", 3, num_workers=workers)
    assert sorted(ids_of(remote)) == sorted(local)
    first_local = next(iter(make_loader(str(root), "train", 3)))
    first_remote = next(iter(make_loader("s3://trimodal-shards/demo", "train", 3)))
    assert torch.equal(first_local["image"], first_remote["image"]) and first_local["ids"] == first_remote["ids"]
