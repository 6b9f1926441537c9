import torch

from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration
from stages.common.batches import (
    decoder_labels,
    drop_modalities,
    model_inputs,
    pairable,
    present_modalities,
    question_prefixed,
    question_prompts,
    same_caption,
)
from stages.common.generation import answered


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


def test_decoder_labels_and_the_question_as_the_decoders_prefix():
    ids = torch.tensor([[1, 10, 11, 2, 0]])
    assert decoder_labels(ids, ids.ne(0)).tolist() == [[10, 11, 2, -100]]
    config = TrimodalConfig.from_preset("tiny", vocab_size=40)  # pad 0, <s> 1, </s> 2
    batch = {"question_ids": torch.tensor([[1, 8, 9, 2], [1, 5, 2, 0], [0, 0, 0, 0]]),
             "question_mask": torch.tensor([[True] * 4, [True, True, True, False], [False] * 4]),
             "answer_ids": torch.tensor([[1, 20, 2], [1, 21, 2], [1, 22, 2]]),
             "answer_mask": torch.tensor([[True] * 3, [True] * 3, [False] * 3])}
    assert [p.tolist() for p in question_prompts(batch, 1)] == [[1, 8, 9, 2], [1, 5, 2], [1]]
    ids, labels = question_prefixed(batch, config)
    assert ids.tolist() == [[1, 8, 9, 2, 20], [1, 5, 2, 21, 0], [1, 0, 0, 0, 0]]
    # after the question's </s>: the answer and its </s>; nothing to learn where there is no answer
    assert labels.tolist() == [[-100, -100, -100, 20, 2], [-100, -100, 21, 2, -100], [-100] * 5]


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


def test_answers_continue_each_samples_question_as_teacher_forcing_scores_them():
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(TrimodalConfig.from_preset(
        "tiny", vocab_size=40, image_size=32, n_mels=16)).eval()
    batch = batch_of([("image",), ("audio", "text"), ("text",)])
    batch["image"] = torch.rand(3, 3, 32, 32) * batch["image"][:, :1, :1, :1]
    batch["mel"] = torch.randn(3, 16, 20) * (batch["mel_lengths"] > 0)[:, None, None]
    batch["mel_lengths"] = batch["mel_lengths"] * 4
    batch["question_ids"] = torch.tensor([[1, 8, 9, 10, 2], [1, 5, 2, 0, 0], [1, 6, 7, 2, 0]])  # three lengths
    batch["question_mask"] = batch["question_ids"].ne(0)

    class Tokens:  # the ids, as text
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(str(i) for i in ids.tolist() if i > 2)

    with torch.no_grad():
        encoded = model.encoder(**model_inputs(batch))
        replies = answered(model, Tokens(), encoded, question_prompts(batch, 1), 4)
        for i, prompt in enumerate(question_prompts(batch, 1)):  # each row decoded alone, one token at a time
            ids = prompt[None]
            one = model.encoder(**{k: v[i:i + 1] for k, v in model_inputs(batch).items()})
            for _ in range(4):
                token = model(encoder_outputs=one, decoder_input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, token[None, None]], 1)
                if token == 2:
                    break
            assert replies[i] == Tokens().decode(ids[0, len(prompt):]), i



def test_samples_of_a_skipped_group_are_not_pairable():
    batch = {"meta": [{"group": "fusion"}, {}, {"group": "other"}], "caption_ids": torch.zeros(3, 2)}
    assert pairable(batch, ["fusion"]).tolist() == [False, True, True]
    assert pairable(batch, []).tolist() == [True, True, True]


def test_a_long_question_is_cut_from_its_start_to_fit_the_decoder():
    config = TrimodalConfig.from_preset("tiny", vocab_size=40, max_decoder_positions=8)
    batch = {"question_ids": torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11, 2]]),
             "question_mask": torch.ones(1, 9, dtype=torch.bool),
             "answer_ids": torch.tensor([[1, 20, 21, 2]]), "answer_mask": torch.ones(1, 4, dtype=torch.bool)}
    ids, labels = question_prefixed(batch, config)
    # <s>, the question's last tokens and its </s>, then the answer: 8 positions
    assert ids[0].tolist() == [1, 8, 9, 10, 11, 2, 20, 21]
    assert labels[0].tolist() == [-100] * 5 + [20, 21, 2]
