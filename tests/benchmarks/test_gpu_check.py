"""The one-command GPU check, as its CPU smoke run: both families under per-block FSDP on 2 gloo processes, with
every collective checked across ranks (TORCH_DISTRIBUTED_DEBUG=DETAIL fails at once on a rank out of step). DDP is
left out here: under DETAIL, torch 2.13's DDP on gloo dies of SIGSEGV before its first step (DDP runs in the
training-stage tests)."""
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two torchrun jobs of 2 processes, 8 steps each
def test_the_gpu_check_trains_both_families_sharded_per_block(tmp_path):
    env = {**os.environ, "TRIMODAL_GPU_CHECK_ON_CPU": "1", "TRIMODAL_GPU_RESULTS": str(tmp_path),
           "TORCH_DISTRIBUTED_DEBUG": "DETAIL"}
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--steps", "8", "--strategies", "fsdp"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "FSDP units: 17 blocks and the root" in proc.stdout + proc.stderr  # tiny trimodal, sharded per block
    for preset in ("tiny", "deepseek_vl"):
        result = json.loads((tmp_path / f"gpu-{preset}.json").read_text())
        assert result["devices"] == 2 and result["steps"] == 8
        assert result["fsdp"]["samples_per_s"] > 0 and result["fsdp"]["final_loss"] > 0, result
