import hashlib
import io
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from stages.common.records import split_of
from stages.common.tars import read_tar
from stages.shard import run
from tests.shard_fixtures import build_validated, shard_params


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


def test_missing_inputs_give_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="dvc repro validate"):
        run(tmp_path / "validated", tmp_path / "tokenizer", tmp_path / "shards", shard_params())
