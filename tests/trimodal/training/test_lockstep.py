"""Per-block FSDP on 2 gloo processes whose batches hold different modalities: ranks stay in lockstep, and the
step computes what one process computes on the same batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shard_fixtures import built_once, sharded

REPO = Path(__file__).resolve().parents[3]
JOBS = ["trimodal:finetune", "trimodal:pretrain", "trimodal:instruct", "deepseek_vl:finetune", "deepseek_vl:pretrain",
        "deepseek_vl:instruct"]
CHECKPOINTED = ["trimodal:finetune+checkpointing", "deepseek_vl:finetune+checkpointing"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every job's result, from one pair of processes under torch.distributed.run."""
    data = built_once(tmp_path_factory, "lockstep-data", sharded)
    out = tmp_path_factory.mktemp("lockstep") / "probe.json"
    # DETAIL checks that every collective matches across ranks, so a rank out of step fails at once with the
    # mismatch rather than hanging or swapping parameters
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TORCH_DISTRIBUTED_DEBUG": "DETAIL"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "tests/trimodal/training/lockstep_probe.py"), str(data / "shards"),
                           str(data / "tokenizer"), str(out), *JOBS, *CHECKPOINTED], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # two processes under torch.distributed.run
@pytest.mark.parametrize("job", JOBS)
def test_ranks_with_different_modalities_train_in_lockstep_as_one_process_would(results, job):
    result = results[job]
    assert result["units"] == result["blocks"] + 1 > 5  # every block a unit, and the root
    first, second = (r["losses"] for r in result["ranks"])
    if job == "trimodal:finetune":
        assert "vqa" not in first and "vqa" in second  # the decoder's VQA pass ran on rank 1's batch only
    elif job == "trimodal:pretrain":
        assert "mam" not in first and "mam" in second  # masked audio: rank 1 alone has audio
    elif job == "deepseek_vl:finetune":
        assert "vqa" not in first and "vqa" in second  # the question turn: rank 1 alone
    elif job == "deepseek_vl:pretrain":
        assert "lm" in first and "lm" in second  # text alone on rank 0: its towers ran a placeholder image
    else:  # instruct: rank 0 has no instruction turn; its decoder / LLM ran a placeholder turn in step
        assert first["instruct"] == 0.0 and second["instruct"] > 0.0
    for mine, reference in zip((first, second), result["reference_losses"], strict=True):
        assert mine.keys() == reference.keys()
        assert mine == pytest.approx(reference, rel=1e-5, abs=1e-6)
    assert result["gradient_gap"] < 1e-5, result["worst"]
    whole = result["reference_bytes"]
    for rank in result["ranks"]:  # sharded at rest: each rank holds about half of one process's state
        for kind in ("parameters", "gradients", "adam"):
            assert 0.45 < rank["bytes"][kind] / whole[kind] < 0.55, (kind, rank["bytes"], whole)


@pytest.mark.slow
@pytest.mark.parametrize("job", CHECKPOINTED)
def test_activation_checkpointing_under_per_block_fsdp_gives_the_same_gradients(results, job):
    assert results[job]["gradient_gap"] < 1e-5, results[job]["worst"]
