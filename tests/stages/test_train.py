"""Training stages on tiny shards: kill -9 and rerun ends bit-identical to an uninterrupted run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from stages.shard import run as shard
from tests.shard_fixtures import build_validated, shard_params
from tests.stage_runner import REPO, make_project, run_stage

MODEL = ["model.image_size=16", "model.patch_size=8", "model.n_mels=20"]
TRAIN = ["pretrain.steps=30", "pretrain.checkpoint_every=4", "pretrain.batch_size=4", "pretrain.warmup_steps=3",
         "pretrain.shuffle=8", *MODEL]
# dropout draws from the global RNG, so resume must restore it (and the loader must not consume it)
KILLED = [*TRAIN, "model.dropout=0.1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    build_validated(root, n=28)
    shard(root / "validated", root / "tokenizer", root / "shards", shard_params())
    return root


def project_with(data, path):
    root = make_project(path)
    shutil.copytree(data / "shards", root / "data/shards")
    shutil.copytree(data / "tokenizer", root / "artifacts/tokenizer")
    return root


def weights(root):
    return load_file(root / "models/pretrain/model.safetensors")


def test_kill_9_then_rerun_is_bit_identical_to_an_uninterrupted_run(data, tmp_path):
    straight = project_with(data, tmp_path / "straight")
    run_stage("pretrain", straight, *KILLED)

    killed = project_with(data, tmp_path / "killed")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "stages.pretrain", *KILLED], cwd=killed, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # generous: a loaded CI machine imports torch slowly
    while not list((killed / "checkpoints/pretrain").glob("step-00000008")):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint at step 8 within 10 minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "models/pretrain").exists()
    resumed = run_stage("pretrain", killed, *KILLED)
    assert "resuming from" in resumed.stdout
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((killed / "checkpoints/pretrain").glob("step-*"))  # cleared after success


def test_checkpoints_from_another_configuration_are_discarded(data, tmp_path):
    root = project_with(data, tmp_path / "p")
    stale = root / "checkpoints/pretrain/step-00000004"
    stale.mkdir(parents=True)
    (root / "checkpoints/pretrain/fingerprint").write_text("something else")
    proc = run_stage("pretrain", root, *TRAIN[:1], "pretrain.steps=2", *TRAIN[2:])
    assert "discarding checkpoints" in proc.stdout and "resuming" not in proc.stdout
    assert (root / "models/pretrain/model.safetensors").exists()


FINETUNE = ["finetune.steps=3", "finetune.batch_size=4", "finetune.log_every=1", "finetune.warmup_steps=1",
            "finetune.shuffle=0"]


def logged(root, name):
    rows = (root / f"metrics/finetune/plots/metrics/finetune/{name}.tsv").read_text().split("\n")[1:]
    return [float(r.split("\t")[-1]) for r in rows if r]


def test_two_gloo_processes_match_one_at_the_same_global_batch(data, tmp_path):
    base = project_with(data, tmp_path / "base")
    run_stage("pretrain", base, *TRAIN[:1], "pretrain.steps=2", *TRAIN[2:])
    runs = {}
    for devices in (1, 2):
        root = project_with(data, tmp_path / f"d{devices}")
        shutil.copytree(base / "models/pretrain", root / "models/pretrain")
        run_stage("finetune", root, *FINETUNE, *MODEL, f"trainer.devices={devices}")
        runs[devices] = root
    single, double = logged(runs[1], "ce"), logged(runs[2], "ce")
    assert len(single) == len(double) == 3
    # same global batch; the 2-process loss is the mean of per-process token means, so allow a small gap
    assert single == pytest.approx(double, rel=0.05)
    assert (runs[2] / "models/teacher/model.safetensors").exists()
    assert (runs[2] / "metrics/finetune.json").exists()
