import torch

from model.configuration import DEFAULT_LOSS_WEIGHTS
from model.modeling import TrimodalForConditionalGeneration
from model.objectives import contrastive_losses, mel_targets, pretraining_losses, supervised_losses, total_loss
from tests.model.conftest import SUBSETS, make_inputs, tiny_config


def all_objectives(model, seed=0):
    inputs = make_inputs(SUBSETS + SUBSETS)
    g = torch.Generator().manual_seed(seed)
    losses = pretraining_losses(model, inputs, g)
    labels = torch.randint(5, 40, (14, 5), generator=g)
    labels[::3, 3:] = -100
    class_labels = torch.tensor([0, 1, 2, -100, 1, 0, 2] * 2)
    losses.update(supervised_losses(model, inputs, labels, class_labels))
    return losses


def test_every_objective_is_computed_and_finite():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config())
    losses = all_objectives(model)
    assert set(losses) == {"mlm", "mim", "mam", "itc", "atc", "vac", "ce", "cls"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    # untrained: masked-token and class predictions are near chance
    assert abs(losses["mlm"].item() - torch.log(torch.tensor(40.0)).item()) < 1.0
    assert abs(losses["mim"].item() - torch.log(torch.tensor(256.0)).item()) < 1.0


def test_gradients_reach_every_parameter_the_objectives_use():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config())
    total_loss(model, all_objectives(model)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_loss_weights_scale_the_total():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config(loss_weights={"mim": 0.0, "itc": 2.0}))
    losses = all_objectives(model)
    weights = {**DEFAULT_LOSS_WEIGHTS, "mim": 0.0, "itc": 2.0}  # unnamed objectives keep their defaults
    assert weights["atc"] == weights["vac"] == 0.1 and weights["ce"] == 1.0  # contrastive 0.1 (docs/model.md)
    expected = sum(v * weights[k] for k, v in losses.items())
    torch.testing.assert_close(total_loss(model, losses), expected)


def test_objectives_are_deterministic_for_a_seed():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config())
    a, b = all_objectives(model, seed=3), all_objectives(model, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = all_objectives(model, seed=4)
    assert not torch.equal(a["mlm"], c["mlm"])


def test_mel_targets_group_the_frames_behind_each_subsampled_frame():
    mel = torch.arange(2 * 3 * 9, dtype=torch.float32).reshape(2, 3, 9)
    t = mel_targets(mel, 3)
    assert t.shape == (2, 3, 12)
    assert t[0, 1].tolist() == [mel[0, f, 4 + k].item() for k in range(4) for f in range(3)]
    assert t[1, 2].tolist()[3:] == [0.0] * 9  # frames past the end are zero padding


def test_unpairable_samples_take_no_part_in_the_contrastive_objectives():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config()).eval()
    full = ("image", "text", "audio")
    inputs = make_inputs([full] * 6)
    pairable = torch.tensor([True, False, True, True, False, True])  # e.g. two fusion records
    with torch.no_grad():
        masked = contrastive_losses(model, model.encoder(**inputs), pairable=pairable)
        kept = contrastive_losses(model, model.encoder(**{k: v[pairable] for k, v in inputs.items()}))
        everyone = contrastive_losses(model, model.encoder(**inputs))
    assert set(masked) == {"itc", "atc", "vac"}
    for name in masked:  # the same as if the unpairable samples were not in the batch at all
        torch.testing.assert_close(masked[name], kept[name], rtol=1e-5, atol=1e-6)
        assert not torch.isclose(masked[name], everyone[name])
