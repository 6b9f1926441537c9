"""What the flows need from DVC and Hydra: the stage order (DVC's own graph of dvc.yaml, never restated),
running one stage (`dvc repro -s`, waiting while another DVC process holds the repository lock), params
overrides (Hydra composition of conf/, as `dvc exp run -S` does) and pushing to the remote."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import yaml
from dvc.repo import Repo
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stages.common.atomic import atomic_open

LOCKED = "Unable to acquire lock"


class StageFailed(RuntimeError):
    """A dvc stage exited non-zero; the message carries the end of its output (e.g. the data gate's summary)."""


def stage_order(root: str | Path) -> list[str]:
    """dvc.yaml's stages, every stage after the stages it depends on."""
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return [stage.addressing for stage in reversed(list(nx.topological_sort(graph)))]


def dvc(root: str | Path, *args: str, lock_timeout: float = 3600, poll: float = 2.0) -> str:
    """Run `dvc <args>` in root; while the repository lock is held elsewhere, wait (up to lock_timeout)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    deadline = time.monotonic() + lock_timeout
    while True:
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True,
                              text=True)
        output = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return output
        if LOCKED in output and time.monotonic() < deadline:
            time.sleep(poll)
            continue
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise StageFailed(f"dvc {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")


def run_stage(root: str | Path, stage: str, force: bool = False) -> str:
    return dvc(root, "repro", "--single-item", *(["--force"] if force else []), stage)


def apply_overrides(root: str | Path, overrides: Sequence[str]) -> dict:
    """Compose conf/ with Hydra `overrides` (e.g. pretrain.steps=3) and write it to params.yaml."""
    root = Path(root).resolve()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base=None):
        params = OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=True)
    with atomic_open(root / "params.yaml", "w") as f:
        f.write("# composed by flows from conf/ with overrides: " + " ".join(overrides) + "\n")
        yaml.safe_dump(params, f, sort_keys=False)
    return params
