"""model/preference.py: the alignment losses, checked against numbers worked out by hand with `math`."""
from __future__ import annotations

import math

import pytest
import torch

from trimodal.model.deepseek_vl import modeling as deepseek_vl
from trimodal.model.preference import (
    ALIGNMENT_LOSS_WEIGHTS,
    bradley_terry_loss,
    dpo_loss,
    group_advantages,
    implicit_rewards,
    ppo_clip_loss,
    sequence_logprobs,
)
from trimodal.model.trimodal import configuration


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def log_softmax_at(row: list[float], k: int) -> float:
    return row[k] - math.log(sum(math.exp(v) for v in row))


def close(actual: torch.Tensor, expected: list[float] | float, tol: float = 1e-5) -> bool:
    return actual.detach().double().flatten().tolist() == pytest.approx(
        expected if isinstance(expected, list) else [expected], abs=tol)


# sequence_logprobs ------------------------------------------------------------------------------------------------

LOGITS = [[[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [2.0, -1.0, 0.0]],
          [[0.3, 0.2, 0.1], [1.0, 1.0, 1.0], [-2.0, 0.0, 2.0]]]


def test_sequence_logprobs_sums_the_labelled_tokens_log_softmax_and_counts_them():
    labels = torch.tensor([[1, -100, 0], [2, 0, 2]])
    total, count = sequence_logprobs(torch.tensor(LOGITS), labels)
    row0 = log_softmax_at(LOGITS[0][0], 1) + log_softmax_at(LOGITS[0][2], 0)
    row1 = log_softmax_at(LOGITS[1][0], 2) + log_softmax_at(LOGITS[1][1], 0) + log_softmax_at(LOGITS[1][2], 2)
    assert close(total, [row0, row1])
    assert count.tolist() == [2, 3]


def test_sequence_logprobs_of_a_row_without_labels_is_zero_with_zero_tokens():
    labels = torch.tensor([[-100, -100, -100], [-100, 1, -100]])
    total, count = sequence_logprobs(torch.tensor(LOGITS), labels)
    assert total[0].item() == 0.0
    assert close(total[1], log_softmax_at(LOGITS[1][1], 1))
    assert count.tolist() == [0, 1]


def test_sequence_logprobs_passes_gradient_only_to_labelled_positions():
    logits = torch.tensor(LOGITS, requires_grad=True)
    total, _ = sequence_logprobs(logits, torch.tensor([[1, -100, 0], [-100, -100, -100]]))
    total.sum().backward()
    assert logits.grad[0, 1].abs().sum().item() == 0.0
    assert logits.grad[1].abs().sum().item() == 0.0
    # d log_softmax(l)[k] / d l[k] = 1 - softmax(l)[k]
    assert close(logits.grad[0, 0, 1], 1 - math.exp(log_softmax_at(LOGITS[0][0], 1)))


# implicit_rewards ---------------------------------------------------------------------------------------------------

def test_implicit_rewards_is_beta_times_the_log_ratio():
    rewards = implicit_rewards(torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.5]), beta=0.5)
    assert close(rewards, [0.5 * (-1.0 + 3.0), 0.5 * (-4.0 + 2.5)])


def test_implicit_rewards_sends_no_gradient_to_the_reference():
    policy = torch.tensor([-1.0, -2.0], requires_grad=True)
    reference = torch.tensor([-1.5, -1.0], requires_grad=True)
    implicit_rewards(policy, reference, beta=0.25).sum().backward()
    assert reference.grad is None
    assert close(policy.grad, [0.25, 0.25])


# bradley_terry_loss -------------------------------------------------------------------------------------------------

def test_bradley_terry_loss_is_the_mean_negative_log_sigmoid_of_the_margin():
    loss = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    expected = (-math.log(sigmoid(1.0)) - math.log(sigmoid(-2.0))) / 2
    assert close(loss, expected)


def test_bradley_terry_loss_is_log_two_when_rewards_tie_and_small_when_chosen_wins_clearly():
    assert close(bradley_terry_loss(torch.tensor([0.7]), torch.tensor([0.7])), math.log(2))
    assert bradley_terry_loss(torch.tensor([20.0]), torch.tensor([0.0])).item() < 1e-6


# dpo_loss -------------------------------------------------------------------------------------------------------------

BETA = 0.1
POLICY_CHOSEN, POLICY_REJECTED = [-1.0, -2.0], [-3.0, -1.5]
REFERENCE_CHOSEN, REFERENCE_REJECTED = [-1.5, -2.5], [-2.0, -1.0]
# by hand: chosen rewards 0.1 * [0.5, 0.5], rejected 0.1 * [-1.0, -0.5], margins [0.15, 0.10]
CHOSEN_REWARDS, REJECTED_REWARDS = [0.05, 0.05], [-0.1, -0.05]
MARGINS = [0.15, 0.10]


def dpo_inputs(requires_grad: bool = False) -> list[torch.Tensor]:
    return [torch.tensor(v, requires_grad=requires_grad)
            for v in (POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED)]


def test_dpo_loss_matches_the_hand_computed_value():
    loss, _, _ = dpo_loss(*dpo_inputs(), beta=BETA)
    expected = sum(math.log(1 + math.exp(-m)) for m in MARGINS) / len(MARGINS)
    assert close(loss, expected, tol=1e-6)


def test_dpo_loss_returns_the_chosen_and_rejected_implicit_rewards():
    _, chosen, rejected = dpo_loss(*dpo_inputs(), beta=BETA)
    assert close(chosen, CHOSEN_REWARDS, tol=1e-6)
    assert close(rejected, REJECTED_REWARDS, tol=1e-6)


def test_dpo_loss_gradient_on_the_chosen_log_prob_is_minus_beta_sigmoid_of_minus_margin_over_n():
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = dpo_inputs(requires_grad=True)
    loss, _, _ = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=BETA)
    loss.backward()
    n = len(MARGINS)
    assert all(g < 0 for g in policy_chosen.grad.tolist())  # raising the chosen's log-prob lowers the loss
    assert close(policy_chosen.grad, [-BETA * sigmoid(-m) / n for m in MARGINS], tol=1e-7)
    assert close(policy_rejected.grad, [BETA * sigmoid(-m) / n for m in MARGINS], tol=1e-7)
    assert reference_chosen.grad is None and reference_rejected.grad is None


def test_dpo_loss_falls_when_the_chosen_log_prob_rises():
    inputs = dpo_inputs()
    before, _, _ = dpo_loss(*inputs, beta=BETA)
    inputs[0] = inputs[0] + 1.0
    after, _, _ = dpo_loss(*inputs, beta=BETA)
    assert after.item() < before.item()


# ppo_clip_loss --------------------------------------------------------------------------------------------------------

def test_ppo_clip_loss_inside_the_clip_range_is_minus_mean_ratio_times_advantage():
    logprobs = torch.tensor([math.log(1.1), math.log(0.9)], requires_grad=True)
    loss = ppo_clip_loss(logprobs, torch.zeros(2), torch.tensor([2.0, -1.0]), clip=0.2)
    assert close(loss, -(1.1 * 2.0 + 0.9 * -1.0) / 2)
    loss.backward()
    # d(-rho A / N) / d logprob = -rho A / N
    assert close(logprobs.grad, [-1.1 * 2.0 / 2, -0.9 * -1.0 / 2])


def test_ppo_clip_loss_clips_a_ratio_above_one_plus_eps_with_positive_advantage_so_no_gradient():
    logprobs = torch.tensor([math.log(1.5)], requires_grad=True)
    loss = ppo_clip_loss(logprobs, torch.zeros(1), torch.tensor([1.0]), clip=0.2)
    assert close(loss, -1.2)
    loss.backward()
    assert logprobs.grad.item() == 0.0


def test_ppo_clip_loss_clips_a_ratio_below_one_minus_eps_with_negative_advantage_so_no_gradient():
    logprobs = torch.tensor([math.log(0.5)], requires_grad=True)
    loss = ppo_clip_loss(logprobs, torch.zeros(1), torch.tensor([-1.0]), clip=0.2)
    assert close(loss, 0.8)  # -min(0.5 * -1, 0.8 * -1)
    loss.backward()
    assert logprobs.grad.item() == 0.0


def test_ppo_clip_loss_keeps_the_pessimistic_unclipped_term_when_it_is_lower():
    # ratio 1.5 with a negative advantage: min(-1.5, -1.2) = -1.5, unclipped, so the gradient flows
    logprobs = torch.tensor([math.log(1.5)], requires_grad=True)
    loss = ppo_clip_loss(logprobs, torch.zeros(1), torch.tensor([-1.0]), clip=0.2)
    assert close(loss, 1.5)
    loss.backward()
    assert close(logprobs.grad, 1.5)


def test_ppo_clip_loss_uses_the_ratio_to_the_old_log_probs():
    old = torch.tensor([math.log(2.0)])
    loss = ppo_clip_loss(torch.tensor([math.log(2.2)]), old, torch.tensor([3.0]), clip=0.2)
    assert close(loss, -1.1 * 3.0)


def test_ppo_clip_loss_sends_no_gradient_to_old_log_probs_or_advantages():
    logprobs = torch.tensor([0.1, -0.1], requires_grad=True)
    old = torch.tensor([0.0, 0.0], requires_grad=True)
    advantages = torch.tensor([1.0, -2.0], requires_grad=True)
    ppo_clip_loss(logprobs, old, advantages, clip=0.2).backward()
    assert old.grad is None and advantages.grad is None
    assert logprobs.grad is not None and logprobs.grad.abs().sum().item() > 0


# group_advantages -----------------------------------------------------------------------------------------------------

def test_group_advantages_standardise_by_the_population_std():
    rewards = [1.0, 2.0, 3.0, 6.0]
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    advantages = group_advantages(torch.tensor(rewards))
    assert close(advantages, [(r - mean) / std for r in rewards])
    values = advantages.tolist()
    assert sum(values) / len(values) == pytest.approx(0.0, abs=1e-6)
    assert math.sqrt(sum(v * v for v in values) / len(values)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("rewards", [[2.0, 2.0, 2.0, 2.0], [-0.5, -0.5], [5.0]])
def test_group_advantages_of_equal_rewards_are_zero_not_nan(rewards):
    advantages = group_advantages(torch.tensor(rewards))
    assert not torch.isnan(advantages).any()
    assert advantages.tolist() == [0.0] * len(rewards)


@pytest.mark.parametrize("value", [0.1, 1000.1])
def test_group_advantages_of_equal_rewards_that_are_not_exact_in_binary_are_zero(value):
    advantages = group_advantages(torch.full((7,), value))
    assert advantages.abs().max().item() < 1e-3


# loss weights ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("defaults", [configuration.DEFAULT_LOSS_WEIGHTS, deepseek_vl.DEFAULT_LOSS_WEIGHTS],
                         ids=["trimodal", "deepseek_vl"])
def test_alignment_loss_weights_are_in_each_familys_default_loss_weights(defaults):
    assert set(ALIGNMENT_LOSS_WEIGHTS) == {"instruct", "anchor", "dpo", "reward", "ppo"}
    assert set(ALIGNMENT_LOSS_WEIGHTS) <= set(defaults)
    assert {k: defaults[k] for k in ALIGNMENT_LOSS_WEIGHTS} == ALIGNMENT_LOSS_WEIGHTS
