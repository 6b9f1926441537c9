import torch

from tests.model.conftest import SUBSETS, make_inputs, tiny_config
from trimodal.model.trimodal.configuration import DEFAULT_LOSS_WEIGHTS
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration
from trimodal.model.trimodal.objectives import (
    contrastive_losses,
    matching_loss,
    mel_targets,
    mismatched,
    pretraining_losses,
    supervised_losses,
    total_loss,
    view_losses,
)


def all_objectives(model, seed=0):
    inputs = make_inputs(SUBSETS + SUBSETS)
    g = torch.Generator().manual_seed(seed)
    losses = pretraining_losses(model, inputs, g)
    labels = torch.randint(5, 40, (14, 5), generator=g)
    labels[::3, 3:] = -100
    class_labels = torch.tensor([0, 1, 2, -100, 1, 0, 2] * 2)
    losses.update(supervised_losses(model, inputs, labels, class_labels))
    streams = model.encoder.streams(**inputs)
    losses["itm"] = matching_loss(model, streams, model.encoder.fuse(streams), torch.eye(14, dtype=torch.bool),
                                  None, g)
    losses.update(view_losses(model, streams, labels, class_labels))
    return losses


def test_every_objective_is_computed_and_finite():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config())
    losses = all_objectives(model)
    assert set(losses) == {"mlm", "mim", "mam", "itc", "atc", "vac", "ce", "cls", "itm", "view_image"}
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


def batch_streams(model, subsets, seed=0):
    return model.encoder.streams(**make_inputs(subsets, seed=seed))


def test_a_mismatched_sample_differs_from_its_own_in_one_modality_taken_from_a_non_positive():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config()).eval()
    subsets = SUBSETS + SUBSETS
    with torch.no_grad():
        streams = batch_streams(model, subsets)
    positives = torch.eye(14, dtype=torch.bool)
    positives[3, 10] = positives[10, 3] = True  # samples 3 and 10 show the same content
    rows = torch.tensor([3, 4, 5, 6, 10, 11, 12, 13])  # the samples with two or more modalities
    donors = torch.ones(14, dtype=torch.bool)
    donors[0] = False  # e.g. a fusion record: never lends an input
    negatives, kept = mismatched(streams, rows, positives, donors, torch.Generator().manual_seed(1))
    assert kept.tolist() == rows.tolist()
    for r, i in enumerate(kept.tolist()):
        changed = [m for m in streams if not torch.equal(negatives[m].hidden[r], streams[m].hidden[i])]
        assert len(changed) == 1, (i, changed)
        m = changed[0]
        assert streams[m].present[i]  # one of the sample's own modalities was swapped
        donor = next(j for j in range(14) if torch.equal(negatives[m].hidden[r], streams[m].hidden[j]))
        assert donor != i and donors[donor] and not positives[i, donor] and streams[m].present[donor]
        for other in streams:  # the rest of the sample is its own, present or absent alike
            if other != m:
                assert torch.equal(negatives[other].mask[r], streams[other].mask[i])


def test_matching_trains_the_fusion_and_its_head_and_needs_two_samples_holding_two_modalities():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config())
    streams = batch_streams(model, SUBSETS)
    encoded = model.encoder.fuse(streams)
    loss = matching_loss(model, streams, encoded, torch.eye(7, dtype=torch.bool), None, torch.Generator())
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(2.0)).item()) < 0.2  # untrained
    loss.backward()
    for name in ("itm_head.weight", "encoder.fusion.pairs.image_to_text.cross_attn.q_proj.weight",
                 "encoder.core.blocks.0.attn.q_proj.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    pairable = torch.tensor([True, True, True, True, False, False, False])  # one multimodal sample left
    assert matching_loss(model, streams, encoded, torch.eye(7, dtype=torch.bool), pairable, torch.Generator()) is None


def test_a_view_loss_is_what_the_model_scores_from_that_modality_alone():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config(loss_weights={"view_audio": 1.0})).eval()
    subsets = [("image",), ("image", "text"), ("image", "audio"), ("text", "audio"), ("image", "text", "audio")]
    inputs = make_inputs(subsets)
    caption = torch.randint(5, 40, (5, 4), generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        losses = view_losses(model, model.encoder.streams(**inputs), caption, labels)
        assert set(losses) == {"view_image", "view_audio"}  # view_text weighs 0 by default: not computed
        rows = [1, 2, 4]  # the image with something else: the image-only sample 0 has its own loss already
        alone = model(pixel_values=inputs["pixel_values"][rows], image_present=torch.ones(3, dtype=torch.bool),
                      labels=caption[rows], class_labels=labels[rows])
    expected = alone.loss  # ce + cls at weight 1
    torch.testing.assert_close(losses["view_image"], expected, rtol=1e-5, atol=1e-6)
