"""The checkpoint store of flows/checkpoints.py, on a folder and on S3 (moto): checkpoints written by the trainer's own
save_checkpoint travel to the store while "training" goes on, come back into a fresh clone whole, partial copies never
count, and a finished stage leaves nothing behind."""
from __future__ import annotations

import boto3
import pytest
import torch

from flows.checkpoints import DONE, Mirror, store_url
from trimodal.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trimodal.training.distributed import World

OUT = "checkpoints/pretrain"
WORLD = World(0, 1, torch.device("cpu"))


def train_to(root, model, optimizer, scheduler, steps):
    for step in steps:
        with torch.no_grad():
            model.weight.add_(1.0)
        save_checkpoint(root / OUT, step, model, optimizer, scheduler, {"epoch": 0, "consumed": step}, WORLD)


def parts():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path):
    if request.param == "folder":
        return str(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_server")
    bucket = f"ckpt-{abs(hash(str(tmp_path))) % 10**8}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/runs"


def test_checkpoints_reach_the_store_and_come_back_whole_in_a_fresh_clone(tmp_path, store):
    first, second = tmp_path / "clone-1", tmp_path / "clone-2"
    model, optimizer, scheduler = parts()
    (first / OUT).mkdir(parents=True)
    (first / OUT / "fingerprint").write_text("job-a")
    mirror = Mirror(first, [OUT], f"{store}/pretrain/key-a")
    with mirror.syncing(every_s=0.05):
        train_to(first, model, optimizer, scheduler, [10, 20, 30])  # the trainer keeps the newest two
    whole, partial, files = mirror._listing(OUT)
    assert whole == {"step-00000020", "step-00000030"} and not partial and files == {"fingerprint"}

    # a copy cut short (no .done marker) is never restored, and the next pass removes it
    mirror.fs.makedirs(f"{mirror.base}/{OUT}/step-00000040", exist_ok=True)
    mirror.fs.pipe_file(f"{mirror.base}/{OUT}/step-00000040/state.json", b"{}")
    restored = Mirror(second, [OUT], f"{store}/pretrain/key-a").restore()
    assert restored == [f"{OUT}/step-00000020", f"{OUT}/step-00000030"]
    assert (second / OUT / "fingerprint").read_text() == "job-a"
    assert latest_checkpoint(second / OUT).name == "step-00000030"
    fresh, fresh_optimizer, fresh_scheduler = parts()
    state = load_checkpoint(second / OUT / "step-00000030", fresh, fresh_optimizer, fresh_scheduler, WORLD)
    assert state["step"] == 30 and torch.equal(fresh.weight, model.weight)
    mirror.sync()
    assert mirror._listing(OUT)[1] == set()

    # another job (another key) sees none of it; a finished stage clears its own
    assert Mirror(tmp_path / "clone-3", [OUT], f"{store}/pretrain/key-b").restore() == []
    mirror.clear()
    assert Mirror(tmp_path / "clone-4", [OUT], f"{store}/pretrain/key-a").restore() == []


def test_a_dropped_checkpoint_leaves_the_store_marker_first(tmp_path):
    root = tmp_path / "clone"
    model, optimizer, scheduler = parts()
    mirror = Mirror(root, [OUT], str(tmp_path / "store"))
    train_to(root, model, optimizer, scheduler, [1])
    assert mirror.sync() == [f"{OUT}/step-00000001"]
    assert (tmp_path / "store" / OUT / f"step-00000001{DONE}").exists()
    train_to(root, model, optimizer, scheduler, [2, 3])
    assert mirror.sync() == [f"{OUT}/step-00000002", f"{OUT}/step-00000003"]
    assert sorted(p.name for p in (tmp_path / "store" / OUT).iterdir()) == [
        "step-00000002", f"step-00000002{DONE}", "step-00000003", f"step-00000003{DONE}"]


def test_the_store_must_be_a_url_or_an_absolute_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("TRIMODAL_CHECKPOINT_STORE", raising=False)
    monkeypatch.setenv("TRIMODAL_WORKDIR", str(tmp_path / "work"))
    assert store_url() == str(tmp_path / "work" / "checkpoints")
    assert store_url("s3://bucket/prefix/") == "s3://bucket/prefix"
    with pytest.raises(ValueError, match="relative"):
        store_url("checkpoints")
