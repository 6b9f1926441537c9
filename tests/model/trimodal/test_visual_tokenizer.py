import torch

from trimodal.model.trimodal.visual_tokenizer import PatchHashTokenizer


def images(seed=0, b=2, c=3, h=8, w=12):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_shape_range_and_vocab():
    tok = PatchHashTokenizer(patch_size=4, channels=3, bits=6)
    codes = tok(images())
    assert codes.shape == (2, (8 // 4) * (12 // 4)) and codes.dtype == torch.long
    assert tok.vocab_size == 64 and codes.min() >= 0 and codes.max() < tok.vocab_size


def test_deterministic_per_seed_and_seeds_differ():
    x = images(b=4, h=16, w=16)
    assert torch.equal(PatchHashTokenizer(4, seed=3)(x), PatchHashTokenizer(4, seed=3)(x))
    assert not torch.equal(PatchHashTokenizer(4, seed=3)(x), PatchHashTokenizer(4, seed=4)(x))


def test_not_in_state_dict():
    tok = PatchHashTokenizer(4)
    assert len(tok.state_dict()) == 0 and not any(p.requires_grad for p in tok.parameters())


def test_patch_order_matches_manual_loop():
    p, bits = 2, 8
    tok = PatchHashTokenizer(p, channels=3, bits=bits, seed=1)
    x = images(seed=5, b=1, h=4, w=6)
    expected = []
    for row in range(0, 4, p):  # row-major: left to right, then top to bottom
        for col in range(0, 6, p):
            patch = x[0, :, row:row + p, col:col + p].permute(1, 2, 0).reshape(-1)  # (p_h, p_w, c) like patchify
            patch = (patch - patch.mean()) / (patch.std(correction=0) + 1e-6)
            signs = patch @ tok.projection >= 0
            expected.append(sum(1 << k for k in range(bits) if signs[k]))
    assert tok(x)[0].tolist() == expected


def test_identical_patches_share_codes_and_brightness_is_ignored():
    tok = PatchHashTokenizer(4, channels=3, bits=8)
    patch = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(2))
    other = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(7))
    x = torch.cat([patch, patch, (patch * 0.5 + 0.3), other], dim=2)[None]  # 4 patches side by side
    codes = tok(x)[0]
    assert codes[0] == codes[1] == codes[2]
    assert codes[3] != codes[0]


def test_flat_patch_gets_all_ones_code():
    tok = PatchHashTokenizer(2, channels=3, bits=5)
    assert tok(torch.full((1, 3, 2, 4), 0.7)).tolist() == [[31, 31]]


def test_flat_patches_of_any_level_share_one_code():
    tok = PatchHashTokenizer(4, channels=3, bits=8)
    levels = torch.tensor([0.0, 0.1, 0.3, 0.7, 1.0, 123.456])
    x = torch.cat([torch.full((3, 4, 4), float(v)) for v in levels], dim=2)[None]
    assert tok(x)[0].tolist() == [255] * len(levels)
