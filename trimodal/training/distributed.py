"""Processes and devices for the training stages: the torchrun relaunch, the process group (nccl on CUDA, gloo on
CPU, one code path), the rank's device, and the objectives wrapped for data parallelism (DDP) or sharding (FSDP2).

On CUDA every rank binds its own GPU (`torch.cuda.set_device(LOCAL_RANK)`) before the first collective;
without it every rank's NCCL work lands on cuda:0. Collectives only ever see tensors on the rank's device.

FSDP (FSDP2 `fully_shard`) shards parameters, gradients and optimizer states. Where the stage's step keeps the
ranks in lockstep (trimodal/model/lockstep.py), each block the model names in `_no_split_modules` (encoder,
fusion, reasoning and decoder blocks; LLM decoder layers) is a unit of its own, gathered just before it runs and
freed after, and the root unit holds the rest (embeddings, heads, projections): a step's peak holds one block at a
time rather than the whole model. Every rank must then call the same blocks in the same order, which lockstep
ensures; the root's parameters a rank leaves unused (a head its batch gives no target) reduce-scatter as zeros
(`set_reduce_scatter_unused_params`). A step that does not keep lockstep is wrapped as one unit: the whole model
gathered for the step, and every parameter given a gradient on every rank (`touch_all`), since FSDP
reduce-scatters the list of gradients it finds and ranks with different lists would silently scatter the wrong
numbers (tests/trimodal/training/test_distributed.py shows it).
On CUDA the units gather bf16 parameters and reduce gradients in fp32 (PyTorch's FSDP2 mixed precision); on CPU
(gloo) everything stays fp32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup() -> World:
    """This process's rank, world size and device; initialises the process group under torchrun."""
    size, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before any collective: NCCL uses the current device
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return World(dist.get_rank() if size > 1 else 0, size, device)


def teardown(world: World) -> None:
    """Destroy the process group on every rank once training is done (PyTorch's distributed docs: left to the
    interpreter's exit, gloo's threads can abort a rank, "terminate called without an active exception")."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def launch(devices: int, module: str, argv: list[str]) -> bool:
    """Re-run this stage under torchrun with `devices` processes; False when already inside one (or devices=1)."""
    if devices <= 1 or "LOCAL_RANK" in os.environ:
        return False
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc_per_node={devices}", "-m", module, *argv])
    return True


def touch_all(loss: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """loss + 0 x every parameter, so each rank produces a gradient for every parameter."""
    return loss + 0.0 * sum(p.sum() for p in module.parameters() if p.requires_grad)


def wrap(module: nn.Module, strategy: str, world: World, blocks: list[nn.Module] | None = None) -> nn.Module:
    """The objectives module made data-parallel (ddp) or sharded (fsdp): `blocks` each a unit of their own
    (None: one unit, the whole module); unchanged in a single process."""
    if strategy not in STRATEGIES:
        raise ValueError(f"trainer.strategy must be one of {STRATEGIES}, not {strategy!r}")
    if world.size == 1:
        return module
    if strategy == "ddp":
        ids = [world.device.index] if world.device.type == "cuda" else None
        # which modules run depends on the batch (absent modalities, the VQA pass), so some parameters go unused
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(world.device.type, (world.size,))  # one mesh for every unit
    precision = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                 if world.device.type == "cuda" else MixedPrecisionPolicy())
    for block in reversed(blocks or []):  # innermost first, as fully_shard requires; the root last
        fully_shard(block, mesh=mesh, mp_policy=precision)
    sharded = fully_shard(module, mesh=mesh, mp_policy=precision)
    if blocks:
        sharded.set_reduce_scatter_unused_params(True)
    return sharded


def all_sum(values: dict[str, torch.Tensor], names: list[str], world: World) -> dict[str, float]:
    """Per name, the sum over ranks (0 where a rank lacks it: its batches may lack an objective); one host sync."""
    zero = torch.zeros((), device=world.device)
    packed = torch.stack([values[k].float() if k in values else zero for k in names])
    if world.size > 1:
        dist.all_reduce(packed)
    return dict(zip(names, packed.tolist(), strict=True))
