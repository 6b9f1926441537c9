import hashlib
import io
import json
import shutil
import tarfile
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image
from transformers import AutoTokenizer

import stages.shard
from stages.shard import Featurizer, run
from tests.shard_fixtures import build_validated, shard_params
from trimodal.atomic import read_jsonl, write_jsonl
from trimodal.data.features import image_to_array, log_mel
from trimodal.data.records import split_of
from trimodal.data.tars import read_tar, write_tar
from trimodal.params import defaults


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    records = build_validated(root)
    params = shard_params()
    index = run(root / "validated", root / "tokenizer", root / "shards", params)
    return root, records, params, index


def samples_of(path):
    by_key: dict[str, dict] = {}
    for name, data in read_tar(path).items():
        key, ext = name.split(".", 1)
        by_key.setdefault(key, {})[ext] = data
    return by_key


def test_every_record_in_exactly_one_split_and_index_matches_files(sharded):
    root, records, params, index = sharded
    seen = {}
    for split, info in index["splits"].items():
        assert info["count"] == sum(s["count"] for s in info["shards"])
        for shard in info["shards"]:
            path = root / "shards" / shard["name"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
            assert path.stat().st_size == shard["bytes"] and shard["count"] <= 4
            samples = samples_of(path)
            assert len(samples) == shard["count"]
            for sample in samples.values():
                meta = json.loads(sample["json"])
                assert meta["id"] not in seen
                seen[meta["id"]] = split
    assert seen == {r["id"]: split_of(r["id"], 0.2, 0.2) for r in records}
    assert index["labels"] == ["circle", "square"]


def test_rerun_is_byte_identical(sharded, tmp_path):
    root, _, params, index = sharded
    again = run(root / "validated", root / "tokenizer", tmp_path / "shards", params)
    assert again == index


def test_features_have_configured_shapes_and_tokens_decode(sharded):
    root, records, params, _ = sharded
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    by_id = {r["id"]: r for r in records}
    for path in sorted((root / "shards").glob("*.tar")):
        for sample in samples_of(path).values():
            meta = json.loads(sample["json"])
            rec = by_id[meta["id"]]
            assert ("image.npy" in sample) == bool(rec["image"]) and ("mel.npy" in sample) == bool(rec["audio"])
            if rec["image"]:
                image = np.load(io.BytesIO(sample["image.npy"]), allow_pickle=False)
                assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and image[..., 0].mean() > 150
            if rec["audio"]:
                mel = np.load(io.BytesIO(sample["mel.npy"]), allow_pickle=False)
                n = 16000 // 4 + 160 * int(meta["id"].split("-")[1])
                assert mel.shape == (20, n // 160 + 1) and mel.dtype == np.float32 and np.isfinite(mel).all()
            for field in ("text", "caption", "question", "answer"):
                if rec[field]:
                    ids = np.load(io.BytesIO(sample[f"{field}.npy"]), allow_pickle=False)
                    assert tok.decode(ids.tolist(), skip_special_tokens=True).strip() == rec[field]
            assert meta["label_index"] == (["circle", "square"].index(rec["label"]) if rec["label"] else -1)


def spread_media_over_tars(validated, records_per_tar):
    """Lay the media out as validate does at scale: record i's in media-{i // records_per_tar}.tar."""
    records, media = read_jsonl(validated / "manifest.jsonl"), read_tar(validated / "media-000000.tar")
    tars = defaultdict(dict)
    for i, record in enumerate(records):
        name = f"media-{i // records_per_tar:06d}.tar"
        for kind in ("image", "audio"):
            if record[kind]:
                member = record[kind].split(":", 1)[1]
                tars[name][member] = media[member]
                record[kind] = f"{name}:{member}"
    for name, members in tars.items():
        write_tar(validated / name, members)
    write_jsonl(validated / "manifest.jsonl", records)
    return sorted(tars)


def test_media_in_several_tars_and_small_tokenizer_batches_give_the_same_shards_each_tar_opened_once(
        sharded, tmp_path, monkeypatch):
    root, _, params, index = sharded
    for name in ("validated", "tokenizer"):
        shutil.copytree(root / name, tmp_path / name)
    tars = spread_media_over_tars(tmp_path / "validated", records_per_tar=10)
    opened, tar_open = [], tarfile.open

    def counting_open(name=None, mode="r", *args, **kwargs):
        if mode.startswith("r"):
            opened.append(name.name)
        return tar_open(name, mode, *args, **kwargs)

    monkeypatch.setattr(tarfile, "open", counting_open)
    monkeypatch.setattr(stages.shard, "RECORDS_PER_TOKENIZER_CALL", 5)
    again = run(tmp_path / "validated", tmp_path / "tokenizer", tmp_path / "shards", params)
    assert again == index  # index.json holds every shard's sha256: byte-identical shards
    assert len(tars) == 3 and opened == tars


def test_batched_token_ids_equal_one_tokenizer_call_per_text(sharded):
    root, records, _, _ = sharded
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    texts = [r[f] for r in records for f in ("text", "caption", "question", "answer") if r[f]]
    featurizer = Featurizer(shard_params(max_text_tokens=6).shard, 16000, tok, [])
    single = [tok(text, truncation=True, max_length=6)["input_ids"] for text in texts]
    assert any(len(ids) == 6 for ids in single) and any(len(ids) < 6 for ids in single)  # some truncated, some not
    assert [ids.tolist() for ids in featurizer.token_ids(texts)] == single


def test_missing_inputs_give_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="dvc repro validate"):
        run(tmp_path / "validated", tmp_path / "tokenizer", tmp_path / "shards", shard_params())


def test_index_carries_the_limits_validate_wrote_and_their_absence_is_an_error(sharded, tmp_path):
    root, _, params, index = sharded
    assert index["media_limits"] == json.loads((root / "validated/limits.json").read_text())
    assert index["media_limits"]["min_side"] == defaults().validate.min_side
    shutil.copytree(root / "validated", tmp_path / "validated")
    (tmp_path / "validated/limits.json").unlink()
    with pytest.raises(SystemExit, match=r"validated/limits.json not found: run `dvc repro validate`"):
        run(tmp_path / "validated", root / "tokenizer", tmp_path / "shards", params)


def test_records_keep_manifest_order_within_each_split(sharded):
    root, records, _, index = sharded
    for split, info in index["splits"].items():
        ids = [json.loads(s["json"])["id"] for shard in info["shards"]
               for s in samples_of(root / "shards" / shard["name"]).values()]
        assert ids == [r["id"] for r in records if split_of(r["id"], 0.2, 0.2) == split]


def test_a_split_without_records_has_no_shards(tmp_path):
    build_validated(tmp_path, n=7)
    index = run(tmp_path / "validated", tmp_path / "tokenizer", tmp_path / "shards",
                shard_params(val_fraction=0.0, test_fraction=0.0))
    assert index["splits"]["train"]["count"] == 7
    assert index["splits"]["val"] == index["splits"]["test"] == {"count": 0, "shards": []}
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["index.json", "train-000000.tar",
                                                                       "train-000001.tar"]
    assert index["vocab_size"] == len(AutoTokenizer.from_pretrained(tmp_path / "tokenizer"))
    assert index["pad_token_id"] == 0 and index["sample_rate"] == 16000


def test_long_text_is_truncated_inside_bos_eos(sharded):
    root, _, params, _ = sharded
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    featurizer = Featurizer(shard_params(max_text_tokens=6).shard, 16000, tok, [])
    ids = featurizer.tokens("there is a red circle and a red shape number 12 there")
    assert ids.dtype == np.int32 and len(ids) == 6 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


@pytest.mark.parametrize("size", [(90, 30), (30, 90), (16, 16), (17, 300)])
def test_image_to_array_resizes_the_short_side_and_centre_crops(size):
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))  # red edges, a blue middle third along the long side
    if width >= height:
        image.paste((0, 0, 255), (width // 3, 0, width - width // 3, height))
    else:
        image.paste((0, 0, 255), (0, height // 3, width, height - height // 3))
    array = image_to_array(image, 24)
    assert array.shape == (24, 24, 3) and array.dtype == np.uint8
    if width != height:
        assert array[12, 12, 2] > 200 and array[12, 12, 0] < 50  # the centre survived the crop


def test_log_mel_frames_and_pitch():
    sr, hop = 16000, 160
    t = np.arange(sr // 2) / sr
    low, high = (log_mel(np.sin(2 * np.pi * f * t).astype(np.float32), sr, 40, 400, hop) for f in (300, 3000))
    assert low.shape == high.shape == (40, len(t) // hop + 1) and low.dtype == np.float32
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()  # a higher tone lands in a higher mel band
    assert log_mel(np.zeros(50, np.float32), sr, 40, 400, hop).shape == (40, 1)  # shorter than one window


def test_missing_tokenizer_gives_a_clear_error(tmp_path):
    build_validated(tmp_path, n=3)
    with pytest.raises(SystemExit, match="dvc repro tokenizer"):
        run(tmp_path / "validated", tmp_path / "no-tokenizer", tmp_path / "shards", shard_params())
