"""The training and distillation losses (docs/model.md "Objectives", "Distillation and quantization") on tensors.

Each loss is a sum over tokens / pairs / patches; every function here divides that sum by the
number of terms it ran over, so a loss's scale does not depend on batch size or sequence length and the
lambda_k of `weighted_sum` mean the same thing for every batch. Losses over an empty set (all labels ignored,
nothing masked, fewer than two pairs) are a 0.0 tensor still connected to the graph, never NaN, so
`.backward()` works on any batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) = 1/tau at 100 so training cannot blow the logits up


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_CE: -sum_t log P(y_t | y_<t, context), divided by the number of non-ignored tokens.

    logits [..., V], labels [...] int64 with -100 = ignore (padding, unlabelled samples).
    """
    labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels, ignore_index=IGNORE_INDEX,
                            reduction="sum")  # 0.0 with a grad_fn when every label is ignored
    return total / labels.ne(IGNORE_INDEX).sum().clamp(min=1)


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
                     positives: torch.Tensor | None = None) -> torch.Tensor:
    """L_ITC: 1/2 (L_i2t + L_t2i), symmetric InfoNCE over N pairs (a_i, b_i), divided by N.

    s_ij = exp(logit_scale) * cos(a_i, b_j): sim = cosine similarity, logit_scale = log(1/tau) is learnable and
    exp(logit_scale) is clamped at 100 (CLIP). a, b [N, D]. With N < 2 there are no negatives: returns 0.0.
    positives [N, N] bool (diagonal True) marks pairs that describe the same thing (e.g. identical captions):
    the target of row i is then uniform over its positives instead of one-hot on i, so duplicates in a batch
    are not pushed apart (with few distinct contents per batch, one-hot targets make the encoders learn
    nuisance detail to tell duplicates apart, and the supervised heads that share them stall).
    """
    if a.shape[0] < 2:
        return (a.sum() + b.sum() + logit_scale.sum()) * 0.0
    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    s = scale * F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T  # [N, N], s[i, j]
    if positives is None:
        target = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))
    t = positives.to(s.dtype)
    return 0.5 * (F.cross_entropy(s, t / t.sum(1, keepdim=True)) + F.cross_entropy(s.T, t.T / t.T.sum(1, keepdim=True)))


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_MLM: -sum over masked tokens of log P(y_m | Y_obs, context), divided by the masked count.

    logits [B, L, V], targets [B, L] (the original token ids), mask [B, L] bool (True = masked). 0.0 if none.
    """
    return cross_entropy(logits, targets.masked_fill(~mask, IGNORE_INDEX))


def mim_loss(logits: torch.Tensor, visual_tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_MIM (BEiT): -sum over masked patches of log P(tokenizer(p) | Patches_obs, context), mean.

    logits [B, N, K], visual_tokens [B, N] (model/trimodal/visual_tokenizer.py), mask [B, N] bool. 0.0 if none masked.
    """
    return cross_entropy(logits, visual_tokens.masked_fill(~mask, IGNORE_INDEX))


def mam_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked audio modelling (the audio analogue of MLM/MIM): squared error of the predicted
    log-Mel features at masked frames, averaged over masked frames and features. pred, target [B, T, F],
    mask [B, T] bool. 0.0 if none masked."""
    per_frame = (pred.float() - target.float()).pow(2).mean(-1)
    # where, not *: a NaN/inf at an unmasked frame must not leak into the loss
    per_frame = torch.where(mask, per_frame, torch.zeros_like(per_frame))
    return per_frame.sum() / mask.sum().clamp(min=1)


def weighted_sum(losses: dict, weights: dict[str, float]):
    """L = sum_k lambda_k L_k: the one place objectives are combined (training, logging, the model's `loss`).

    Terms with lambda_k = 0 are left out rather than multiplied by 0, so a switched-off objective that is NaN or
    inf on some batch cannot poison the total (0 * NaN = NaN). Works on tensors (the training loss, on the graph)
    and on floats (the logged means). Every loss needs a weight (a missing one is a KeyError naming it) and at
    least one weight must be non-zero.
    """
    if not losses:
        raise ValueError("weighted_sum needs at least one loss")
    missing = sorted(set(losses) - set(weights))
    if missing:
        raise KeyError(f"no loss weight for {missing}; add them to loss_weights (known: {sorted(weights)})")
    terms = [weights[k] * loss for k, loss in losses.items() if weights[k] != 0]
    if not all(torch.is_tensor(loss) for loss in losses.values()):
        return float(sum(terms))
    if not terms:
        raise ValueError(f"every loss in {sorted(losses)} has weight 0 in loss_weights: nothing to train")
    return torch.stack(terms).sum()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
            temperature: float) -> torch.Tensor:
    """L_KD: alpha L_CE(softmax(z_S/tau), softmax(z_T/tau)) + (1 - alpha) L_Hard(softmax(z_S), y).

    Soft term: cross-entropy -sum_v p_T log p_S of the tempered distributions, averaged over non-ignored
    positions and multiplied by tau^2 (Hinton et al. 2015) so its gradient magnitude does not shrink as 1/tau^2
    when tau grows. Hard term: `cross_entropy`. logits [..., V] ([B, V] classifier or [B, T, V] decoder),
    labels [...] with -100 = ignore. The teacher is detached: no gradient reaches it.
    """
    v = student_logits.shape[-1]
    log_p_s = F.log_softmax(student_logits.reshape(-1, v).float() / temperature, dim=-1)
    p_t = F.softmax(teacher_logits.detach().reshape(-1, v).float() / temperature, dim=-1)
    keep = labels.reshape(-1).ne(IGNORE_INDEX)
    soft = -(p_t * log_p_s).sum(-1)
    soft = torch.where(keep, soft, torch.zeros_like(soft)).sum() / keep.sum().clamp(min=1)
    return alpha * temperature**2 * soft + (1 - alpha) * cross_entropy(student_logits, labels)
