import torch

from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration
from stages.common.batches import (
    decoder_labels,
    drop_modalities,
    model_inputs,
    pairable,
    present_modalities,
    same_caption,
    with_question,
    with_question_streams,
)


def batch_of(subsets, group=None):
    n = len(subsets)
    has = {m: torch.tensor([float(m in s) for s in subsets]) for m in ("image", "audio")}
    return {"ids": [f"r{i}" for i in range(n)],
            "meta": [{"id": f"r{i}", "modalities": list(s), "group": group} for i, s in enumerate(subsets)],
            "image": has["image"][:, None, None, None].expand(n, 3, 4, 4).clone(),
            "image_present": torch.tensor(["image" in s for s in subsets]),
            "mel": has["audio"][:, None, None].expand(n, 2, 5).clone(),
            "mel_lengths": torch.tensor([5 if "audio" in s else 0 for s in subsets]),
            "text_ids": torch.full((n, 3), 7), "text_mask": torch.tensor([[("text" in s)] * 3 for s in subsets])}


def test_decoder_labels_and_question_join():
    ids = torch.tensor([[1, 10, 11, 2, 0]])
    assert decoder_labels(ids, ids.ne(0)).tolist() == [[10, 11, 2, -100]]
    batch = {"text_ids": torch.tensor([[1, 5, 2, 0], [0, 0, 0, 0]]),
             "text_mask": torch.tensor([[True, True, True, False], [False] * 4]),
             "question_ids": torch.tensor([[1, 8, 2], [1, 9, 2]]), "question_mask": torch.ones(2, 3, dtype=torch.bool)}
    joined, mask = with_question(batch, pad_id=0)
    assert joined.tolist() == [[1, 5, 2, 8, 2], [1, 9, 2, 0, 0]]  # the question's <s> dropped after text
    assert mask.tolist() == [[True] * 5, [True, True, True, False, False]]


def test_modality_dropout_keeps_a_non_empty_proper_subset():
    subsets = [("image", "audio", "text")] * 200 + [("image",)] * 20
    out = drop_modalities(batch_of(subsets), 1.0, torch.Generator().manual_seed(0))
    present = {m: v.tolist() for m, v in present_modalities(out).items()}
    kept = [tuple(m for m in ("image", "audio", "text") if present[m][i]) for i in range(220)]
    assert all(1 <= len(k) <= 2 for k in kept[:200])  # every one dropped something, none dropped everything
    assert len(set(kept[:200])) == 6  # all 2^3 - 2 proper subsets occur
    assert kept[200:] == [("image",)] * 20  # a single input is never dropped
    assert [m["modalities"] for m in out["meta"]] == [list(k) for k in kept]
    for i, k in enumerate(kept):  # dropped inputs are zeroed / masked, kept ones untouched
        assert out["image"][i].sum() == (48 if "image" in k else 0)
        assert out["mel"][i].sum() == (10 if "audio" in k else 0)
    # the input batch is not modified
    assert present_modalities(batch_of(subsets))["audio"].sum() == 200


def test_modality_dropout_rate_groups_and_determinism():
    subsets = [("image", "text")] * 400
    a = drop_modalities(batch_of(subsets), 0.25, torch.Generator().manual_seed(1))
    b = drop_modalities(batch_of(subsets), 0.25, torch.Generator().manual_seed(1))
    dropped = sum(len(m["modalities"]) < 2 for m in a["meta"])
    assert 60 < dropped < 140  # ~100 of 400
    assert [m["modalities"] for m in a["meta"]] == [m["modalities"] for m in b["meta"]]
    fusion = drop_modalities(batch_of(subsets, group="fusion"), 1.0, torch.Generator(), keep_groups=["fusion"])
    assert all(len(m["modalities"]) == 2 for m in fusion["meta"])
    untouched = batch_of(subsets)
    assert drop_modalities(untouched, 0.0, torch.Generator()) is untouched


def test_same_caption_marks_identical_captions_and_only_them():
    ids = torch.tensor([[1, 5, 2, 0], [1, 5, 2, 0], [1, 6, 2, 0], [1, 5, 2, 0], [0, 0, 0, 0]])
    mask = ids.ne(0)
    mask[3, 2:] = False  # same tokens up to a shorter caption: "<s> 5" is not "<s> 5 </s>"
    same = same_caption({"caption_ids": ids, "caption_mask": mask})
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    assert torch.equal(same, expected.bool())  # a sample without a caption matches only itself


def test_the_question_pass_reuses_image_and_audio_encodings_and_matches_encoding_from_scratch():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(TrimodalConfig.from_preset(
        "tiny", vocab_size=40, image_size=32, n_mels=16)).eval()
    subsets = [("image",), ("audio", "text"), ("image", "audio", "text"), ("text",)]
    batch = batch_of(subsets)
    batch["image"] = torch.rand(4, 3, 32, 32) * batch["image"][:, :1, :1, :1]
    batch["mel"] = torch.randn(4, 16, 20) * (batch["mel_lengths"] > 0)[:, None, None]
    batch["mel_lengths"] = batch["mel_lengths"] * 4
    batch["question_ids"] = torch.tensor([[1, 8, 9, 2]] * 4)
    batch["question_mask"] = torch.ones(4, 4, dtype=torch.bool)
    calls = []
    model.encoder.vision.register_forward_hook(lambda *a: calls.append("image"))
    model.encoder.audio.register_forward_hook(lambda *a: calls.append("audio"))
    with torch.no_grad():
        streams = model.encoder.streams(**model_inputs(batch))
        shared = model.encoder.fuse(with_question_streams(model.encoder, streams, batch))
        assert calls == ["image", "audio"]  # the question pass ran only the text encoder
        text_ids, text_mask = with_question(batch, model.config.pad_token_id)
        scratch = model.encoder(**{**model_inputs(batch), "text_ids": text_ids, "text_mask": text_mask})
    assert torch.equal(shared.attention_mask, scratch.attention_mask)
    torch.testing.assert_close(shared.last_hidden_state, scratch.last_hidden_state, rtol=0, atol=1e-6)


def test_samples_of_a_skipped_group_are_not_pairable():
    batch = {"meta": [{"group": "fusion"}, {}, {"group": "other"}], "caption_ids": torch.zeros(3, 2)}
    assert pairable(batch, ["fusion"]).tolist() == [False, True, True]
    assert pairable(batch, []).tolist() == [True, True, True]
