import torch

from trimodal.model.masking import mask_spans, mask_tokens

PAD, BOS, EOS, MASK, VOCAB = 0, 1, 2, 3, 50
SPECIALS = {PAD, BOS, EOS, MASK}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(b=4, length=12, seed=0):
    ids = torch.randint(4, VOCAB, (b, length), generator=gen(seed))
    lengths = torch.randint(3, length + 1, (b,), generator=gen(seed + 1))
    attention = torch.arange(length)[None] < lengths[:, None]
    ids[:, 0] = BOS
    ids[torch.arange(b), lengths - 1] = EOS
    ids[~attention] = PAD
    return ids, attention


def test_mask_tokens_deterministic():
    ids, attention = batch()
    first = mask_tokens(ids, attention, MASK, SPECIALS, VOCAB, 0.3, gen(7))
    second = mask_tokens(ids, attention, MASK, SPECIALS, VOCAB, 0.3, gen(7))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_mask_tokens_never_touches_pad_or_special():
    ids, attention = batch(b=64, length=20)
    masked, mlm_mask = mask_tokens(ids, attention, MASK, SPECIALS, VOCAB, 0.5, gen())
    special = ~attention | (ids == BOS) | (ids == EOS)
    assert not mlm_mask[special].any()
    assert torch.equal(masked[special], ids[special]) and torch.equal(masked[~mlm_mask], ids[~mlm_mask])
    replaced = masked[mlm_mask & (masked != ids) & (masked != MASK)]
    assert not torch.isin(replaced, torch.tensor(sorted(SPECIALS))).any()  # random tokens are ordinary


def test_mask_tokens_at_least_one_per_row():
    ids, attention = batch(b=16)
    only_specials = torch.tensor([[BOS, EOS, PAD, PAD]])
    _, mlm_mask = mask_tokens(ids, attention, MASK, SPECIALS, VOCAB, 0.0, gen())
    assert mlm_mask.sum(-1).eq(1).all()
    _, none = mask_tokens(only_specials, only_specials != PAD, MASK, SPECIALS, VOCAB, 0.9, gen())
    assert not none.any()


def test_mask_tokens_rate_and_80_10_10():
    ids = torch.randint(4, VOCAB, (200, 200), generator=gen(3))
    masked, mlm_mask = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), MASK, SPECIALS, VOCAB, 0.15, gen())
    assert abs(mlm_mask.float().mean().item() - 0.15) < 0.01
    n = mlm_mask.sum().item()
    to_mask = (masked[mlm_mask] == MASK).sum().item() / n
    kept = (masked[mlm_mask] == ids[mlm_mask]).sum().item() / n  # includes random draws of the same token
    randomised = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.02 and abs(randomised - 0.1) < 0.02 and abs(kept - 0.1) < 0.02


def test_mask_spans_deterministic_and_respects_valid():
    valid = torch.arange(30)[None] < torch.tensor([30, 17, 1, 0])[:, None]
    first = mask_spans(valid, 0.4, 3, gen(5))
    assert torch.equal(first, mask_spans(valid, 0.4, 3, gen(5)))
    assert not first[~valid].any()
    assert first[:3].any(-1).all() and not first[3].any()


def test_mask_spans_at_least_one_when_prob_zero():
    valid = torch.ones(5, 10, dtype=torch.bool)
    assert mask_spans(valid, 0.0, 2, gen()).sum(-1).eq(1).all()


def test_mask_spans_fraction_and_contiguity():
    valid = torch.ones(100, 400, dtype=torch.bool)
    valid[:, 300:] = False
    for prob, span in [(0.4, 2), (0.3, 4), (0.15, 1)]:
        mask = mask_spans(valid, prob, span, gen(span))
        assert abs(mask[valid].float().mean().item() - prob) < 0.02
    mask = mask_spans(torch.ones(50, 400, dtype=torch.bool), 0.2, 5, gen())
    starts = mask[:, 1:] & ~mask[:, :-1]
    runs = mask.sum().item() / (starts.sum().item() + mask[:, 0].sum().item())
    assert runs >= 5  # masked positions come in runs of at least `span` (overlapping spans merge)
