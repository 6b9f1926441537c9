"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint is a directory step-NNNNNNNN/ holding
    state.json                  step, scheduler, world size and strategy, optimizer param groups (rank 0)
    model.safetensors           replicated weights (one process or DDP; rank 0 writes)
    optimizer.safetensors       replicated per-parameter optimizer state (one process or DDP)
    sharded/                    FSDP: every rank's shards of weights and optimizer state, written collectively
                                by torch.distributed.checkpoint in its Hugging Face (safetensors) format
    rank-RRRRR.json             per rank: Python/NumPy RNG and the data position (epoch, batches consumed)
    rank-RRRRR.safetensors      per rank: torch (and CUDA) RNG state
Each rank's RNG is its own: dropout consumes it by the size of that rank's batch. All ranks write into one temp
directory that rank 0 renames once everyone is done, so a step-* directory is always complete. Ranks share the
checkpoint folder's file system (one node; torchrun --standalone).
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from trimodal.training.distributed import World, barrier

SHARDED_OPTIONS = {"flatten_optimizer_state_dict": True}


def fingerprint(*parts: object) -> str:
    """What a checkpoint must match to be resumed: the stage's params, the model config and the data."""
    return hashlib.sha256(json.dumps([repr(p) for p in parts], sort_keys=True).encode()).hexdigest()


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


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """Second and later names of a shared parameter (the LM head tied to the embedding) -> its first name."""
    first: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


def _sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(tensors by name, non-tensor optimizer entries) of an FSDP model and its optimizer, as DTensor shards.
    A tied parameter is stored once (safetensors refuses two names for one memory)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    weights, optim = get_state_dict(model, optimizer, options=StateDictOptions(**SHARDED_OPTIONS))
    aliases = tied_aliases(model)
    tensors = {f"model.{k}": v for k, v in weights.items() if k not in aliases}
    tensors.update({f"optim.{k}": v for k, v in optim.items() if torch.is_tensor(v)})
    return tensors, {k: v for k, v in optim.items() if not torch.is_tensor(v)}


def _rng_state(world: World) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if world.device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(world.device)
    py_state, np_state = random.getstate(), np.random.get_state()
    return tensors, {"python_rng": [py_state[0], list(py_state[1]), py_state[2]],
                     "numpy_rng": [np_state[0], np_state[1].tolist(), np_state[2], np_state[3], np_state[4]]}


def _restore_rng(tensors: dict[str, torch.Tensor], state: dict, world: World) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], world.device)
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    position: dict, world: World, sharded: bool = False, keep: int = 2) -> Path:
    """Collective: every rank calls it at the same step. `model` is the FSDP-wrapped module when sharded."""
    target, tmp = root / f"step-{step:08d}", root / f".step-{step:08d}.tmp"
    if world.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(world)
    rng_tensors, rng_state = _rng_state(world)
    save_file(rng_tensors, tmp / f"rank-{world.rank:05d}.safetensors")
    (tmp / f"rank-{world.rank:05d}.json").write_text(json.dumps({"position": position, **rng_state}))
    state = {"step": step, "scheduler": scheduler.state_dict(), "world_size": world.size, "sharded": sharded}
    if sharded:
        import torch.distributed.checkpoint as dcp

        tensors, state["optimizer"] = _sharded_state(model, optimizer)
        dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(path=str(tmp / "sharded"),
                                                                      save_distributed=True))
    elif world.main:
        save_model(model, str(tmp / "model.safetensors"))  # handles tied (shared) weights
        tensors, state["optimizer"] = _optimizer_tensors(optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
    barrier(world)
    if world.main:
        (tmp / "state.json").write_text(json.dumps(state))
        tmp.rename(target)
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(world)
    return target


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").exists())
    return done[-1] if done else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    world: World) -> dict:
    """Restore everything save_checkpoint wrote, on every rank; returns {"step", "position"} of this rank."""
    state = json.loads((path / "state.json").read_text())
    if state["world_size"] != world.size:
        raise ValueError(f"{path} was written by {state['world_size']} processes, this run has {world.size}: "
                         f"set trainer.devices={state['world_size']} or delete {path.parent}")
    if state["sharded"]:
        _load_sharded(path / "sharded", model, optimizer, state["optimizer"])
    else:
        load_model(model, str(path / "model.safetensors"))
        _restore_optimizer(optimizer, load_file(path / "optimizer.safetensors"), state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    mine = json.loads((path / f"rank-{world.rank:05d}.json").read_text())
    _restore_rng(load_file(path / f"rank-{world.rank:05d}.safetensors"), mine, world)
    return {"step": state["step"], "position": mine["position"]}


def _load_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scalars: dict) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    # the layout to fill: get_state_dict creates optimizer state for every trainable parameter, but a parameter
    # whose block had not run yet when the checkpoint was written (per-block FSDP: the decoder while pretraining)
    # had none, and must have none again, or its first real AdamW step would count one too many
    tensors, created = _sharded_state(model, optimizer)
    saved = set(dcp.HuggingFaceStorageReader(path=str(folder)).read_metadata().state_dict_metadata)
    fresh = sorted(k for k in tensors if k not in saved)
    if lost := [k for k in fresh if not k.startswith("optim.state.")]:
        raise ValueError(f"{folder} lacks {len(lost)} tensors the model has, e.g. {lost[:3]}")
    dcp.load({k: v for k, v in tensors.items() if k in saved},
             storage_reader=dcp.HuggingFaceStorageReader(path=str(folder)))
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    weights.update({alias: weights[name] for alias, name in tied_aliases(model).items()})
    optim = {**created, **scalars,
             **{k.removeprefix("optim."): v for k, v in tensors.items() if k.startswith("optim.")}}
    set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optim,
                   options=StateDictOptions(**SHARDED_OPTIONS))
    parameters = dict(model.named_parameters())
    for name in {k.removeprefix("optim.state.").rsplit(".", 1)[0] for k in fresh}:
        optimizer.state.pop(parameters[name], None)


def full_weights(model: torch.nn.Module, everywhere: bool = False) -> dict[str, torch.Tensor]:
    """Collective: an FSDP model's whole state dict, gathered on CPU for rank 0 (the others get {}), or with
    `everywhere` on every rank's device."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))
