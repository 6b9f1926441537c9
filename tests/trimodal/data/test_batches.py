import numpy as np
import torch

from trimodal.data.batches import (
    decisive_words,
    decoder_labels,
    drop_modalities,
    model_inputs,
    noisy_questions,
    pairable,
    present_modalities,
    question_prefixed,
    question_prompts,
    random_backgrounds,
    same_caption,
)
from trimodal.evaluation.generation import answered
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration


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


def test_question_noise_drops_or_replaces_words_and_keeps_the_frame():
    config = TrimodalConfig.from_preset("tiny", vocab_size=1000)  # specials: pad 0, <s> 1, </s> 2, <mask> 4
    words = torch.arange(10, 30)
    ids = torch.zeros(300, 23, dtype=torch.long)
    ids[:, 0], ids[:, 1:21], ids[:, 21] = 1, words, 2
    ids[1] = 0
    ids[1, :3] = torch.tensor([1, 11, 2])  # a one-word question is left alone
    mask = ids.ne(0)
    batch = {"question_ids": ids, "question_mask": mask}
    out = noisy_questions(batch, 0.2, torch.Generator().manual_seed(0), config)
    lengths = out["question_mask"].sum(1)
    assert out["question_ids"][1, :3].tolist() == [1, 11, 2] and lengths[1] == 3
    kept = replaced = 0
    for row, m in zip(out["question_ids"], out["question_mask"], strict=True):
        q = row[m].tolist()
        assert q[0] == 1 and q[-1] == 2 and 3 <= len(q) <= 22  # framed, at least one word
        assert not {0, 1, 2, 4} & set(q[1:-1])  # a replacement is never a special token
        assert m[: len(q)].all() and row[len(q):].eq(0).all()  # left-packed, then padding
        kept += sum(10 <= t < 30 for t in q[1:-1])
        replaced += sum(not 10 <= t < 30 for t in q[1:-1])
    n = 298 * 20
    assert 0.85 * n * 0.8 < kept < 1.15 * n * 0.8  # ~80% of the words stay as they were
    assert 0.85 * n * 0.1 < replaced < 1.15 * n * 0.1  # ~10% replaced (a few by a word of the range: 2%)
    again = noisy_questions(batch, 0.2, torch.Generator().manual_seed(0), config)
    assert torch.equal(again["question_ids"], out["question_ids"])
    assert noisy_questions(batch, 0.0, torch.Generator(), config) is batch
    assert torch.equal(batch["question_ids"], ids)  # the input batch is not modified


def test_random_backgrounds_recolour_plain_backgrounds_only():
    n, size = 200, 16
    image = torch.full((n, 3, size, size), 0.8)  # light grey
    image[:, :, 5:11, 5:11] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # a red square
    image += torch.randn(image.shape, generator=torch.Generator().manual_seed(0)) * 0.02
    image[-20:] = torch.rand(20, 3, size, size, generator=torch.Generator().manual_seed(1))  # no plain border
    present = torch.ones(n, dtype=torch.bool)
    present[0] = False
    mel_lengths, text_mask = torch.zeros(n, dtype=torch.long), torch.zeros(n, 4, dtype=torch.bool)
    mel_lengths[150:170], text_mask[170:180, :2] = 5, True  # the image beside audio or text
    batch = {"image": image.clone(), "image_present": present, "mel_lengths": mel_lengths, "text_mask": text_mask}
    out = random_backgrounds(batch, 0.5, torch.Generator().manual_seed(2))
    changed = (out["image"] - image).abs().flatten(1).amax(1).gt(1e-6)
    assert 50 < changed[:150].sum() < 100  # about half of the plain ones that are their sample's only input
    assert not changed[0] and not changed[-20:].any()  # no image, or a border that is not one colour
    assert not changed[150:180].any()  # an image beside another input keeps its background
    for i in changed.nonzero().flatten().tolist():
        square, corner = out["image"][i, :, 5:11, 5:11], out["image"][i, :, :5, :5]
        assert torch.equal(square, image[i, :, 5:11, 5:11])  # the object is untouched
        shift = corner - image[i, :, :5, :5]
        for c in range(3):  # the background moved by one colour shift, its noise kept (where not clamped to 0, 1)
            free = shift[c][(corner[c] > 0) & (corner[c] < 1)]
            assert len(free) > 0 and float(free.max() - free.min()) < 1e-5
    assert torch.equal(batch["image"], image)  # the input batch is not modified
    assert random_backgrounds(batch, 0.0, torch.Generator()) is batch


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


def vqa_pairs():
    """'<s> what is the color of this shape </s>' -> a colour, '<s> what is this shape </s>' -> a shape (ids: what 10,
    color 11, is 12, the 13, shape 14, of 15, this 16; answers red 20, blue 21, circle 22, square 23)."""
    q = {"color": [1, 10, 12, 13, 11, 15, 16, 14, 2], "shape": [1, 10, 12, 16, 14, 2]}
    pairs = [(np.array(q["color"]), np.array([1, c, 2])) for c in (20, 21) for _ in range(20)]
    return pairs + [(np.array(q["shape"]), np.array([1, s, 2])) for s in (22, 23) for _ in range(20)]


def test_decisive_words_name_the_word_that_says_what_is_asked():
    spared = decisive_words(vqa_pairs())
    assert spared[(10, 12, 13, 11, 15, 16, 14)] >= {11}  # "color": without it, a shape question's words
    assert not {10, 12, 16, 14} & spared[(10, 12, 13, 11, 15, 16, 14)]  # words both kinds share
    assert decisive_words(vqa_pairs()) == spared and decisive_words([]) == {}


def test_question_noise_spares_the_decisive_word():
    config = TrimodalConfig.from_preset("tiny", vocab_size=1000)
    spared = decisive_words(vqa_pairs())
    ids = torch.tensor([[1, 10, 12, 13, 11, 15, 16, 14, 2]] * 400)
    batch = {"question_ids": ids, "question_mask": ids.ne(0)}

    def questions(out):
        return [row[m].tolist() for row, m in zip(out["question_ids"], out["question_mask"], strict=True)]

    noised = questions(noisy_questions(batch, 0.5, torch.Generator().manual_seed(0), config, spared))
    assert all(11 in q for q in noised)  # "color" always stays
    assert sum(q != ids[0].tolist() for q in noised) > 300  # the other words are still noised
    plain = questions(noisy_questions(batch, 0.5, torch.Generator().manual_seed(0), config))
    assert sum(11 not in q for q in plain) > 100  # without it: dropped or replaced
    unknown = questions(noisy_questions({"question_ids": ids[:, [0, 1, 2, 4, 8]], "question_mask": ids[:, :5].ne(0)},
                                        0.5, torch.Generator().manual_seed(0), config, spared))
    assert sum(11 not in q for q in unknown) > 100  # a question it has not seen: noised whole
