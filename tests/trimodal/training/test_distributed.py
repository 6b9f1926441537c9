"""FSDP with ranks that run different modules: why every parameter must get a gradient on every rank."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trimodal.training.distributed import World, wrap

REPO = Path(__file__).resolve().parents[3]


def gradient_gaps(mode: str, tmp_path: Path) -> dict[str, float]:
    out = tmp_path / f"{mode}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(REPO / "tests/trimodal/training/fsdp_probe.py"), mode, str(out)], env=env, check=True,
                   capture_output=True, timeout=300)
    return json.loads(out.read_text())


@pytest.mark.slow  # two processes under torch.distributed.run
def test_fsdp_gradients_equal_one_process_only_when_every_rank_touches_every_parameter(tmp_path):
    touched = gradient_gaps("touch", tmp_path)
    assert max(touched.values()) < 1e-6, touched
    plain = gradient_gaps("plain", tmp_path)  # ranks reduce-scatter different gradient lists: wrong numbers
    assert max(plain.values()) > 1e-3, plain


def test_an_unknown_strategy_is_refused():
    import torch

    with pytest.raises(ValueError, match="ddp"):
        wrap(torch.nn.Linear(2, 2), "zero3", World(0, 1, torch.device("cpu")))
