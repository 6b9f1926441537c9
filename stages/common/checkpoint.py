"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint is a directory step-NNNNNNNN/ holding model.safetensors, optimizer.safetensors (per-parameter
state), state.json (optimizer param groups and scalar state, scheduler, step, data position, Python/NumPy
RNG) and rng.safetensors (torch RNG). `latest` is the highest complete step; incomplete ones never exist
because each is built in a temp dir and renamed.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from stages.common.atomic import atomic_dir


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().clone().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, extra: dict, keep: int = 2) -> Path:
    target = root / f"step-{step:08d}"
    with atomic_dir(target) as tmp:
        save_model(model, str(tmp / "model.safetensors"))  # handles tied (shared) weights
        tensors, meta = _optimizer_tensors(optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
        save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
        py_state = random.getstate()
        np_state = np.random.get_state()
        (tmp / "state.json").write_text(json.dumps({
            "step": step, "optimizer": meta, "scheduler": scheduler.state_dict(), "extra": extra,
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), np_state[2], np_state[3], np_state[4]],
        }))
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").exists())
    return done[-1] if done else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """Restore everything saved by save_checkpoint; returns {"step", "extra"}."""
    load_model(model, str(path / "model.safetensors"))
    state = json.loads((path / "state.json").read_text())
    _restore_optimizer(optimizer, load_file(path / "optimizer.safetensors"), state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(load_file(path / "rng.safetensors")["torch"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    return {"step": state["step"], "extra": state["extra"]}
