"""Ranks in lockstep: every rank runs the same sharded blocks in the same order in each training step.

Under FSDP with a unit per block (trimodal/training/distributed.py), entering a block all-gathers its parameters
and its backward reduce-scatters its gradients. Those are collectives: if one rank runs a block another skips,
their collectives pair up wrongly (gloo aborts when the sizes differ, swaps parameters silently when they agree;
NCCL hangs). Which blocks a step runs depends on its batch here: an encoder runs when some sample holds its
modality, a cross-attention pair when some sample holds both, the VQA pass when some sample asks a question.

Inside `lockstep(group)` each such decision is taken for the global batch: `needed(flags)` is the OR of each flag
over the ranks (one all-reduce for the lot). A rank that must run a path its own batch lacks runs it on a
placeholder (one row of its padding, a valid input), and the placeholder's output joins the computation where the
real output would have: `tie(value, placeholder)` is value + 0 x its sum (an encoder's output, the fused
sequence), and `sink(placeholder)` hands a loss-level output (logits) to the trainer, which adds 0 x its sum to the
loss. The loss is unchanged and the gradient gets exactly nothing from the placeholder; and since it enters the
graph where the real output would, its block's backward (the unit's gradient reduce-scatter) comes at the same
point of every rank's backward pass, whose order follows the graph, not the forward. This is how LLaVA-style
trainers keep mixed-modality batches in step under sharding (a blank image through the vision tower, its features
times zero).

Outside lockstep (one process, DDP, FSDP with the model as one unit) `needed` returns the local flags and nothing
is ever sunk: the code paths are the ones a single process runs. So does a pass without gradients inside a step
(a frozen teacher or reference: not sharded, it runs what its own batch needs, and its decisions do not take part);
the sharded model being trained always runs with gradients. The state is a context variable, set and reset by the
trainer around each step's forward, like torch's own grad mode.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.distributed as dist


class Lockstep:
    """One training step's decisions across ranks, and the placeholder outputs it sank."""

    def __init__(self, group: dist.ProcessGroup | None = None, device: torch.device | None = None):
        self.group, self.device = group, device or torch.device("cpu")
        self.sunk: list[torch.Tensor] = []

    def needed(self, flags: list[bool]) -> list[bool]:
        local = torch.tensor([bool(f) for f in flags], dtype=torch.int32, device=self.device)
        dist.all_reduce(local, op=dist.ReduceOp.MAX, group=self.group)
        return [bool(v) for v in local.tolist()]

    def sink(self, outputs) -> None:
        # 0 x the sum, taken here: autograd orders its backward by when nodes were made, so the zero must be made
        # where the real loss term would have been, not when the trainer adds it to the loss
        for t in outputs if isinstance(outputs, tuple | list) else (outputs,):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad:
                self.sunk.append(0.0 * t.float().sum())

    def residual(self) -> torch.Tensor | float:
        """The zeros of everything sunk: added to the loss, they tie the placeholders' blocks into the backward."""
        return sum(self.sunk) if self.sunk else 0.0


_ACTIVE: ContextVar[Lockstep | None] = ContextVar("trimodal_lockstep", default=None)


@contextmanager
def lockstep(group: dist.ProcessGroup | None = None, device: torch.device | None = None) -> Iterator[Lockstep]:
    state = Lockstep(group, device)
    token = _ACTIVE.set(state)
    try:
        yield state
    finally:
        _ACTIVE.reset(token)


def _current() -> Lockstep | None:
    """The step's lockstep, unless gradients are off (a frozen model's pass: see the module docstring)."""
    state = _ACTIVE.get()
    return state if state is not None and torch.is_grad_enabled() else None


def active() -> bool:
    return _current() is not None


def needed(*flags) -> bool | list[bool]:
    """Each flag (a bool or a 0-d bool tensor) OR-ed over the ranks in lockstep, else as it is; one flag in, one
    bool out."""
    local = [bool(f) for f in flags]
    state = _current()
    result = local if state is None else state.needed(local)
    return result[0] if len(flags) == 1 else result


def tie(value: torch.Tensor, outputs) -> torch.Tensor:
    """value + 0 x each placeholder output's sum: the placeholder's blocks join the graph where the real output
    would (see the module docstring)."""
    state = _current()
    if state is None:
        raise RuntimeError("tie() outside lockstep: a placeholder runs only when another rank needs the path")
    parts = [t for t in (outputs if isinstance(outputs, tuple | list) else (outputs,))
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    return value + 0.0 * sum(t.float().sum() for t in parts).to(value.dtype) if parts else value


def sink(outputs) -> None:
    """A placeholder's outputs, run only so this rank's blocks stay in step: they join the loss as 0 x their sum."""
    state = _current()
    if state is None:
        raise RuntimeError("sink() outside lockstep: a placeholder runs only when another rank needs the path")
    state.sink(outputs)


def aware(step):
    """Marks a training step that takes every decision about which blocks run through `needed`: FSDP may shard
    its model block by block (trimodal/training/distributed.py); any other step is sharded as one unit."""
    step.lockstep_aware = True
    return step


def is_aware(step) -> bool:
    return getattr(step, "lockstep_aware", False)
