"""Lockstep outside a process group: decisions are the local ones, and nothing may be sunk."""
import pytest
import torch

from trimodal.model import lockstep


def test_outside_lockstep_each_flag_is_the_local_one():
    assert not lockstep.active()
    assert lockstep.needed(torch.tensor(True)) is True
    assert lockstep.needed(False, torch.tensor(True), 0) == [False, True, False]


def test_a_placeholder_outside_lockstep_is_a_bug():
    with pytest.raises(RuntimeError, match="outside lockstep"):
        lockstep.sink(torch.zeros(1, requires_grad=True))


def test_the_residual_is_zero_and_reaches_every_sunk_output():
    state = lockstep.Lockstep()
    a, b = torch.ones(2, requires_grad=True), torch.full((3,), float("inf"))
    state.sink((a * 2, b, torch.ones(1, dtype=torch.long)))  # no grad, not float: nothing to tie
    residual = state.residual()
    assert residual.item() == 0.0
    residual.backward()
    assert torch.equal(a.grad, torch.zeros(2))


def test_the_step_marker():
    @lockstep.aware
    def step(model, batch, generator):
        return {}

    assert lockstep.is_aware(step) and not lockstep.is_aware(lambda *a: {})
