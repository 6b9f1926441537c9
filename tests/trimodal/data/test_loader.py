import io
import pickle
import tarfile

import numpy as np
import pytest
import s3fs
import torch

from stages.shard import run
from tests.shard_fixtures import build_validated, shard_params
from trimodal.data.loader import ShardError, collate, make_loader, rank_share, read_index, read_question_answers


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


def test_shard_cut_at_a_member_boundary_names_the_incomplete_sample(shards, tmp_path):
    root, _ = shards
    damaged = copy_shards(root, tmp_path)
    victim = damaged / "train-000000.tar"
    with tarfile.open(victim) as tar:
        last = tar.getmembers()[-1]  # a token member of the last sample: its json still says it exists
    victim.write_bytes(victim.read_bytes()[: last.offset])  # a clean cut: tarfile sees a short, valid stream
    with pytest.raises(ShardError, match=rf"train-000000.tar: sample {last.name.split('.')[0]} .* lacks"):
        ids_of(make_loader(str(damaged), "train", 2))


def test_without_the_count_check_a_lost_sample_goes_unnoticed(shards, tmp_path):
    """Why verify_counts defaults to True: a shard cut between samples reads as a valid, shorter tar."""
    root, _ = shards
    damaged = copy_shards(root, tmp_path)
    victim = damaged / "train-000000.tar"
    with tarfile.open(victim) as tar:
        members = tar.getmembers()
    last_key = members[-1].name.split(".")[0]
    first_of_last = next(m for m in members if m.name.startswith(last_key))
    victim.write_bytes(victim.read_bytes()[: first_of_last.offset])
    index = read_index(str(damaged))
    ids = ids_of(make_loader(str(damaged), "train", 2, verify_counts=False))
    assert len(ids) == index["splits"]["train"]["count"] - 1
    with pytest.raises(ShardError, match="index.json says"):
        ids_of(make_loader(str(damaged), "train", 2))


def test_question_answers_are_read_without_the_media_and_match_the_loader(shards):
    root, _ = shards
    pairs = read_question_answers(str(root), "train")
    loaded = []
    for batch in make_loader(str(root), "train", 4, shuffle=False):
        for q, qm, a, am in zip(batch["question_ids"], batch["question_mask"], batch["answer_ids"],
                                batch["answer_mask"], strict=True):
            if qm.any() and am.any():
                loaded.append((tuple(q[qm].tolist()), tuple(a[am].tolist())))
    assert loaded and sorted(loaded) == sorted((tuple(q.tolist()), tuple(a.tolist())) for q, a in pairs)
    with pytest.raises(ValueError, match="unknown split"):
        read_question_answers(str(root), "nope")


def test_collate_pads_and_masks_any_mix_of_modalities():
    def sample(rid, **arrays):
        meta = {"id": rid, "label_index": arrays.pop("label", -1)}
        return {"meta": meta, **arrays}

    image = np.full((4, 4, 3), 255, np.uint8)
    batch = collate([sample("a", image=image, text=np.array([1, 7, 2], np.int32), label=1),
                     sample("b", mel=np.ones((5, 3), np.float32), caption=np.array([1, 9, 9, 9, 2], np.int32)),
                     sample("c")], pad_id=0)
    assert batch["ids"] == ["a", "b", "c"]
    assert batch["image"].shape == (3, 3, 4, 4) and batch["image"][0].min() == 1.0 and batch["image"][1:].max() == 0
    assert batch["image_present"].tolist() == [True, False, False]
    assert batch["mel"].shape == (3, 5, 3) and batch["mel_lengths"].tolist() == [0, 3, 0]
    assert batch["mel"][1].min() == 1 and batch["mel"][[0, 2]].abs().max() == 0
    assert batch["text_ids"].tolist() == [[1, 7, 2], [0, 0, 0], [0, 0, 0]]
    assert batch["text_mask"].tolist() == [[True] * 3, [False] * 3, [False] * 3]
    assert batch["caption_ids"].shape == (3, 5) and batch["caption_mask"].sum(1).tolist() == [0, 5, 0]
    assert batch["question_ids"].shape == (3, 0) and batch["question_ids"].dtype == torch.int64
    assert batch["label"].tolist() == [1, -100, -100]
    empty = collate([sample("d")], pad_id=0, image_size=8, n_mels=6)  # sizes from index.json when no sample has one
    assert empty["image"].shape == (1, 3, 8, 8) and empty["mel"].shape == (1, 6, 0)


def test_ranks_read_disjoint_balanced_shares_that_cover_the_split(shards):
    root, _ = shards
    everything = ids_of(make_loader(str(root), "train", 4))
    for epoch in (0, 1):
        shares = [ids_of(make_loader(str(root), "train", 2, shuffle=8, epoch=epoch, rank=r, world=2))
                  for r in (0, 1)]
        assert not set(shares[0]) & set(shares[1])
        assert sorted(shares[0] + shares[1]) == sorted(everything)  # without drop_last: every sample, once


def test_rank_share_balances_by_sample_count_and_redraws_each_epoch():
    shards = [{"name": f"s{i}", "count": c} for i, c in enumerate([10, 10, 10, 3, 3, 3, 1])]
    for epoch in range(4):
        shares = [rank_share(shards, r, 2, seed=0, epoch=epoch, shuffle=True) for r in (0, 1)]
        loads = [sum(s["count"] for s in share) for share, _ in shares]
        assert sum(loads) == 40 and max(loads) - min(loads) <= 10  # within one shard
        assert shares[0][1] == shares[1][1] == min(loads)
        names = [s["name"] for share, _ in shares for s in share]
        assert sorted(names) == sorted(s["name"] for s in shards)
    draws = {tuple(s["name"] for s in rank_share(shards, 0, 2, 0, e, True)[0]) for e in range(6)}
    assert len(draws) > 1  # shares are re-drawn per epoch


def test_with_drop_last_every_rank_takes_the_same_number_of_batches(shards):
    root, _ = shards
    counts = [len(list(make_loader(str(root), "train", 2, shuffle=8, rank=r, world=2, drop_last=True)))
              for r in (0, 1)]
    assert counts[0] == counts[1] > 0


def test_more_ranks_than_shards_is_a_clear_error(shards):
    root, _ = shards
    n = len(read_index(str(root))["splits"]["train"]["shards"])
    with pytest.raises(ValueError, match="samples_per_shard"):
        make_loader(str(root), "train", 2, rank=0, world=n + 1)


def test_pipeline_pickles_for_spawned_workers(shards):
    root, _ = shards
    dataset = pickle.loads(pickle.dumps(make_loader(str(root), "train", 4, shuffle=8).dataset))
    assert sorted(i for batch in dataset for i in batch["ids"]) == sorted(ids_of(make_loader(str(root), "train", 4)))
    spawned = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    assert sorted(ids_of(spawned)) == sorted(ids_of(make_loader(str(root), "train", 4)))


def samples_by_id(loader):
    """id -> that sample's unpadded tensors, so loaders that order samples differently can be compared."""
    out = {}
    for batch in loader:
        for i, rid in enumerate(batch["ids"]):
            parts = [batch["image"][i], batch["mel"][i, :, : batch["mel_lengths"][i]], batch["label"][i]]
            parts += [batch[f"{f}_ids"][i][batch[f"{f}_mask"][i]] for f in ("text", "caption", "question", "answer")]
            out[rid] = parts
    return out


def assert_same_samples(a, b):
    assert a.keys() == b.keys()
    for rid in a:
        assert all(torch.equal(x, y) for x, y in zip(a[rid], b[rid], strict=True)), rid


@pytest.fixture(scope="module")
def s3_shards(shards, s3_server):
    root, _ = shards
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("trimodal-shards")
    fs.put(str(root) + "/", "trimodal-shards/demo/", recursive=True)
    return "s3://trimodal-shards/demo"


@pytest.mark.parametrize("workers", [0, 2])
def test_s3_shards_stream_like_local_ones(shards, s3_shards, workers):
    root, _ = shards
    local = make_loader(str(root), "train", 3, shuffle=8, seed=3)
    remote = make_loader(s3_shards, "train", 3, shuffle=8, seed=3, num_workers=workers)
    assert_same_samples(samples_by_id(local), samples_by_id(remote))
    if workers == 0:  # same seed, same pipeline: the same order too
        assert ids_of(local) == ids_of(remote)


def test_s3_endpoint_from_the_project_variable(shards, s3_shards, s3_server, monkeypatch):
    root, _ = shards
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("TRIMODAL_S3_ENDPOINT_URL", s3_server)
    assert read_index(s3_shards) == read_index(str(root))
    assert sorted(ids_of(make_loader(s3_shards, "val", 2, num_workers=2))) == sorted(ids_of(
        make_loader(str(root), "val", 2)))
