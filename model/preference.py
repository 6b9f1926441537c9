"""The losses of preference tuning (alignment), as pure functions on tensors; docs/model.md
"Alignment" writes them out. A response's log-probability is the sum of its tokens' log-probabilities given the
inputs and the prompt (`sequence_logprobs`); everything here works on those per-response sums.

    DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7), the default:
        r(x, y) = beta (log pi(y|x) - log pi_ref(y|x))            the policy's implicit reward
        L_DPO   = -mean log sigmoid(r(x, y_chosen) - r(x, y_rejected))
    Reward model (Bradley-Terry, as in InstructGPT, arXiv 2203.02155 eq. 1):
        L_RM    = -mean log sigmoid(r(x, y_chosen) - r(x, y_rejected))   for any scalar reward r
    PPO's clipped surrogate (Schulman et al. 2017, arXiv 1707.06347, eq. 7), per sampled response:
        rho     = exp(log pi(y|x) - log pi_old(y|x))
        L_PPO   = -mean min(rho A, clip(rho, 1 - eps, 1 + eps) A)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# the alignment stages' objectives, beside each family's own in config.loss_weights: `instruct` (the instruction
# turns' cross-entropy), `dpo`, `reward` (the reward model's Bradley-Terry loss), `ppo`
ALIGNMENT_LOSS_WEIGHTS = {"instruct": 1.0, "anchor": 1.0, "dpo": 1.0, "reward": 1.0, "ppo": 1.0}


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over each row's labelled tokens of log softmax(logits)[label] [B], labelled tokens per row [B]).
    logits [B, T, V] aligned with labels [B, T] (-100 = not part of the response)."""
    keep = labels.ne(IGNORE_INDEX)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return torch.where(keep, logp, torch.zeros_like(logp)).sum(-1), keep.sum(-1)


def implicit_rewards(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's reward of each response: beta (log pi(y|x) - log pi_ref(y|x)); the reference is not trained."""
    return beta * (policy - reference.detach())


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(r_chosen - r_rejected): the negative log-likelihood that the chosen response wins."""
    return -F.logsigmoid(chosen - rejected).mean()


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_DPO, the chosen responses' rewards, the rejected ones'): Bradley-Terry on the implicit rewards."""
    chosen = implicit_rewards(policy_chosen, reference_chosen, beta)
    rejected = implicit_rewards(policy_rejected, reference_rejected, beta)
    return bradley_terry_loss(chosen, rejected), chosen, rejected


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  clip: float) -> torch.Tensor:
    """-mean min(rho A, clip(rho, 1 - clip, 1 + clip) A), rho the probability ratio of each response under the
    policy being trained and the one that sampled it (old_logprobs and advantages are constants)."""
    ratio = torch.exp(logprobs - old_logprobs.detach())
    advantages = advantages.detach()
    return -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Each sampled response's reward minus the mean of the batch's, over their standard deviation (a baseline
    instead of a learned critic, as GRPO, arXiv 2402.03300); zero when every reward is the same."""
    centred = rewards - rewards.mean()
    spread = rewards.std(unbiased=False)
    # equal rewards leave float rounding as their spread: below this, every advantage is 0, not rounding / 1e-6
    tiny = 1e-5 * (1 + rewards.abs().max())
    return centred / torch.where(spread > tiny, spread, torch.full_like(spread, float("inf")))
