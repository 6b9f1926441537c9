"""Run under torchrun with 2 processes: rank 0 uses branch `a`, rank 1 branch `b` of one FSDP-sharded module.
Writes the gathered gradients and the gradients a single process would compute for the same global batch."""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

from trimodal.training.distributed import touch_all


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, use_a: bool) -> torch.Tensor:
        return self.head(self.a(x) if use_a else self.b(x)).pow(2).mean()


def main(touch: bool, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    reference, inputs = TwoBranches(), [torch.randn(3, 4, generator=torch.Generator().manual_seed(r)) for r in (0, 1)]
    expected = {n: torch.zeros_like(p) for n, p in reference.named_parameters()}
    for r, x in enumerate(inputs):  # the single-process gradient of the mean over both ranks' losses
        reference.zero_grad()
        (reference(x, use_a=r == 0) / 2).backward()
        for n, p in reference.named_parameters():
            if p.grad is not None:
                expected[n] += p.grad
    model = TwoBranches()
    model.load_state_dict(reference.state_dict())
    fully_shard(model)
    loss = model(inputs[rank], use_a=rank == 0)
    if touch:
        loss = touch_all(loss, model)
    loss.backward()
    for p in model.parameters():  # a parameter this rank left without gradient counts as zero
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
    get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # keep ranks in step
    if rank == 0:
        gaps = {n: (grads[n] - expected[n]).abs().max().item() for n in expected}
        with open(out, "w") as f:
            json.dump(gaps, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1] == "touch", sys.argv[2])
