import math

import pytest
import torch

from trimodal.model.losses import (
    contrastive_loss,
    cross_entropy,
    kd_loss,
    mam_loss,
    masked_lm_loss,
    mim_loss,
    weighted_sum,
)


def log_softmax_row(row: list[float]) -> list[float]:
    z = math.log(sum(math.exp(x) for x in row))
    return [x - z for x in row]


def softmax_row(row: list[float]) -> list[float]:
    return [math.exp(x) for x in log_softmax_row(row)]


LOGITS = [[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], [[2.0, 2.0, 2.0], [0.3, 0.1, -0.2]]]  # [B=2, T=2, V=3]


def test_cross_entropy_matches_hand_computation_and_skips_ignored():
    logits = torch.tensor(LOGITS, requires_grad=True)
    labels = torch.tensor([[1, -100], [0, 2]])
    terms = [-log_softmax_row(LOGITS[0][0])[1], -log_softmax_row(LOGITS[1][0])[0], -log_softmax_row(LOGITS[1][1])[2]]
    loss = cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1].abs().sum() == 0  # ignored position gets no gradient


def test_cross_entropy_all_ignored_is_zero_with_graph():
    logits = torch.tensor(LOGITS, requires_grad=True)
    loss = cross_entropy(logits, torch.full((2, 2), -100))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_classifier_shape():
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    expected = (-log_softmax_row([1.0, 0.0])[0] - log_softmax_row([0.0, 2.0])[0]) / 2
    assert cross_entropy(logits[:, None], torch.tensor([[0], [0]])).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_matches_explicit_loops():
    a_rows = [[1.0, 0.0, 1.0], [0.5, 2.0, -1.0], [-1.0, 1.0, 0.0]]
    b_rows = [[0.9, 0.1, 1.2], [0.0, 1.0, -1.0], [-2.0, 0.5, 0.5]]
    scale_log = math.log(5.0)

    def cos(u, v):
        return sum(x * y for x, y in zip(u, v, strict=True)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))

    n = 3
    s = [[5.0 * cos(a_rows[i], b_rows[j]) for j in range(n)] for i in range(n)]
    i2t = -sum(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n))
    t2i = -sum(s[i][i] - math.log(sum(math.exp(s[j][i]) for j in range(n))) for i in range(n))
    expected = 0.5 * (i2t + t2i) / n

    a = torch.tensor(a_rows, requires_grad=True)
    b = torch.tensor(b_rows, requires_grad=True)
    logit_scale = torch.tensor(scale_log, requires_grad=True)
    loss = contrastive_loss(a, b, logit_scale)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert logit_scale.grad is not None and a.grad is not None and b.grad is not None


def test_contrastive_aligned_orthogonal_pairs_near_zero():
    a = torch.eye(3)
    loss = contrastive_loss(a, 2 * a, torch.tensor(math.log(100.0)))
    assert loss.item() < 1e-6


def test_contrastive_scale_clamped_at_100():
    a, b = torch.eye(2), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert contrastive_loss(a, b, torch.tensor(10.0)).item() == pytest.approx(
        contrastive_loss(a, b, torch.tensor(math.log(100.0))).item(), rel=1e-5)


def test_contrastive_single_pair_is_zero_with_graph():
    a = torch.randn(1, 4, requires_grad=True)
    logit_scale = torch.tensor(1.0, requires_grad=True)
    loss = contrastive_loss(a, torch.randn(1, 4), logit_scale)
    assert loss.item() == 0.0
    loss.backward()
    assert a.grad is not None


def test_masked_lm_loss_only_masked_positions():
    logits = torch.tensor(LOGITS, requires_grad=True)
    targets = torch.tensor([[1, 2], [0, 1]])
    mask = torch.tensor([[False, True], [True, False]])
    expected = (-log_softmax_row(LOGITS[0][1])[2] - log_softmax_row(LOGITS[1][0])[0]) / 2
    assert masked_lm_loss(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)
    empty = masked_lm_loss(logits, targets, torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()


def test_mim_loss_only_masked_patches():
    logits = torch.tensor(LOGITS, requires_grad=True)
    tokens = torch.tensor([[2, 0], [1, 1]])
    mask = torch.tensor([[True, True], [False, True]])
    expected = (-log_softmax_row(LOGITS[0][0])[2] - log_softmax_row(LOGITS[0][1])[0]
                - log_softmax_row(LOGITS[1][1])[1]) / 3
    assert mim_loss(logits, tokens, mask).item() == pytest.approx(expected, rel=1e-6)
    empty = mim_loss(logits, tokens, torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()


def test_mam_loss_mean_over_masked_frames_and_features():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[3.0, -1.0], [float("nan"), 0.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0], [5.0, 5.0]], [[1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False], [True, False]])
    expected = ((1 + 4) / 2 + (4 + 4) / 2) / 2
    loss = mam_loss(pred, target, mask)
    assert loss.item() == pytest.approx(expected)  # NaN at an unmasked frame does not leak in
    loss.backward()
    empty = mam_loss(pred, target, torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()


def test_weighted_sum():
    losses = {"ce": torch.tensor(2.0), "itc": torch.tensor(3.0), "mim": torch.tensor(float("nan"))}
    assert weighted_sum(losses, {"ce": 1.0, "itc": 0.5, "mim": 0.0, "unused": 9.0}).item() == pytest.approx(3.5)
    with pytest.raises(KeyError, match="itc"):
        weighted_sum(losses, {"ce": 1.0, "mim": 1.0})
    with pytest.raises(ValueError, match="weight 0"):
        weighted_sum({"mim": torch.tensor(1.0)}, {"mim": 0.0})


def test_a_switched_off_nan_loss_leaves_the_gradient_finite():
    w = torch.tensor(1.0, requires_grad=True)
    losses = {"ce": 2 * w, "mim": w * torch.tensor(float("nan"))}
    weighted_sum(losses, {"ce": 1.0, "mim": 0.0}).backward()
    assert w.grad.item() == 2.0
    # the logged means (floats) go through the same function
    assert weighted_sum({"ce": 2.0, "mim": float("nan")}, {"ce": 0.5, "mim": 0.0}) == 1.0


def test_kd_alpha_zero_is_hard_cross_entropy():
    student = torch.tensor(LOGITS)
    labels = torch.tensor([[1, -100], [0, 2]])
    teacher = torch.randn(2, 2, 3)
    assert kd_loss(student, teacher, labels, alpha=0.0, temperature=3.0).item() == pytest.approx(
        cross_entropy(student, labels).item(), rel=1e-6)


def test_kd_alpha_one_is_tempered_soft_cross_entropy_times_tau_squared():
    tau = 2.0
    student_rows = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher_rows = [[0.5, 3.0, -1.0], [1.0, 1.0, 0.0]]
    soft = 0.0
    for s_row, t_row in zip(student_rows, teacher_rows, strict=True):
        p_t = softmax_row([x / tau for x in t_row])
        log_p_s = log_softmax_row([x / tau for x in s_row])
        soft += -sum(pt * lps for pt, lps in zip(p_t, log_p_s, strict=True))
    expected = tau**2 * soft / 2

    student = torch.tensor(student_rows, requires_grad=True)  # [B, V] classifier logits
    teacher = torch.tensor(teacher_rows, requires_grad=True)
    loss = kd_loss(student, teacher, torch.tensor([1, 0]), alpha=1.0, temperature=tau)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert student.grad is not None and teacher.grad is None


def test_kd_decoder_logits_skip_ignored_positions():
    student = torch.tensor(LOGITS, requires_grad=True)
    teacher = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1, -100], [0, 2]])
    full = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    changed = teacher.clone()
    changed[0, 1] = torch.tensor([9.0, -9.0, 0.0])  # the teacher at an ignored position does not matter
    assert kd_loss(student, changed, labels, alpha=0.5, temperature=2.0).item() == pytest.approx(full.item())
    full.backward()
    ignored = kd_loss(student, teacher, torch.full((2, 2), -100), alpha=0.5, temperature=2.0)
    assert ignored.item() == 0.0


def test_contrastive_positives_spread_the_target_over_duplicates():
    a = b = torch.eye(2)
    scale = torch.zeros(())  # exp(0) = 1: s = a @ b.T = I
    assert torch.allclose(contrastive_loss(a, b, scale, torch.eye(2, dtype=torch.bool)), contrastive_loss(a, b, scale))
    # both pairs positives of each other: row target (1/2, 1/2) against softmax([1, 0]) -> log(1 + e) - 1/2
    both = contrastive_loss(a, b, scale, torch.ones(2, 2, dtype=torch.bool))
    assert both.item() == pytest.approx(math.log(1 + math.e) - 0.5, abs=1e-6)
