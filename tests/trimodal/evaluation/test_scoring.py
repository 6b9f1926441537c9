import math

import pytest
import torch

from trimodal.evaluation.scoring import (
    SUBSETS,
    bleu,
    by_subset,
    cider_per_record,
    groups,
    macro_f1,
    random_recall_at_k,
    recall_at_k,
    retrieval_scores,
    same_content,
    subset_name,
    task_scores,
)


def rec(i, subset="image", caption=None, pred_caption="", answer=None, pred_answer="", label=-1, pred_label=-1,
        **extra):
    return {"id": f"r{i}", "subset": subset, "caption": caption, "caption_pred": pred_caption, "answer": answer,
            "answer_pred": pred_answer, "label": label, "label_pred": pred_label, **extra}


def test_subsets_are_the_seven_non_empty_ones_singles_first():
    assert SUBSETS == ("image", "audio", "text", "image+audio", "image+text", "audio+text", "image+audio+text")
    assert subset_name(["text", "image"]) == "image+text"
    assert subset_name([]) == "none"
    with pytest.raises(ValueError, match="video"):
        subset_name(["video"])


def test_bleu_by_hand():
    hyps, refs = ["a red circle", "a blue square"], ["a red circle", "a red square"]
    # unigrams 5/6, bigrams 2/4 (only "a red", "red circle" match), no 4-gram in 3-word captions
    assert bleu(hyps, refs, 2) == pytest.approx(100 * math.sqrt(5 / 6 * 2 / 4), abs=1e-9)
    assert bleu(hyps, refs, 4) == 0.0
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"], 4) == pytest.approx(100.0)


def test_macro_f1_by_hand_averages_over_classes_seen():
    # class 0: tp 1 fn 1 -> 2/3; class 1: tp 1 fp 2 -> 1/2; class 2: tp 0 -> 0; class 3 never occurs: not averaged
    assert macro_f1([0, 0, 1, 2], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert macro_f1([1, 1], [1, 1]) == 1.0


def test_task_scores_by_hand():
    records = [rec(0, caption="a red circle", pred_caption="a red circle", answer="red", pred_answer="red",
                   label=0, pred_label=0, nll=2.0, tokens=4, cider=1.0),
               rec(1, caption="a blue square", pred_caption="a red square", answer="square", pred_answer="circle",
                   label=1, pred_label=0, nll=6.0, tokens=4, cider=3.0),
               rec(2, answer="blue", pred_answer="blue"),  # no caption, no label
               rec(3, label=2, pred_label=2)]
    s = task_scores(records, extra_bleu_order=2)
    assert s["n"] == 4 and (s["n_caption"], s["n_vqa"], s["n_cls"]) == (2, 3, 3)
    assert s["caption_exact"] == 0.5
    assert s["vqa_accuracy"] == pytest.approx(2 / 3)
    assert s["cls_accuracy"] == pytest.approx(2 / 3)
    # class 0: tp 1 fp 1 -> 2/3; class 1: tp 0 -> 0; class 2: tp 1 -> 1
    assert s["cls_macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert s["perplexity"] == pytest.approx(math.exp(8.0 / 8))
    assert s["cider"] == 2.0
    assert s["bleu4"] == 0.0 and s["bleu2"] == pytest.approx(100 * math.sqrt(5 / 6 * 2 / 4))
    # ROUGE-L F: identical -> 1; "a red square" vs "a blue square": LCS "a square" = 2 of 3 -> 2/3
    assert s["rouge_l"] == pytest.approx((1 + 2 / 3) / 2)


def test_cider_idf_comes_from_the_whole_split():
    refs = ["a red circle", "a blue square", "a red square"]
    hyps = ["a red circle", "a red square", "a red square"]
    together = cider_per_record(refs, hyps)
    alone = cider_per_record(refs[:1], hyps[:1])
    assert len(together) == 3 and together[0] > together[1]  # exact beats wrong colour
    assert together[0] != pytest.approx(alone[0])  # document frequencies differ: IDF is the split's


def test_by_subset_rows_counts_and_few_flag():
    records = [rec(i, subset="image", label=0, pred_label=i % 2) for i in range(4)]
    records += [rec(10 + i, subset="audio+text", label=1, pred_label=1, group="fusion") for i in range(25)]
    records += [rec(40 + i, subset="image") for i in range(30)]  # no target (a corpus line): not scored
    rows = by_subset(records)
    assert list(rows) == ["overall", "image", "audio+text", "group:fusion"]
    assert rows["overall"]["n"] == 59 and rows["image"]["n"] == 34 and rows["audio+text"]["n"] == 25
    assert rows["image"]["n_scored"] == rows["image"]["n_cls"] == 4
    assert rows["image"]["few"] and not rows["audio+text"]["few"]
    assert rows["image"]["cls_accuracy"] == 0.5 and rows["audio+text"]["cls_accuracy"] == 1.0
    assert rows["overall"]["cls_accuracy"] == pytest.approx(27 / 29)
    assert [r["id"] for r in groups(records)["group:fusion"]] == [f"r{10 + i}" for i in range(25)]


def test_recall_at_k_by_hand():
    sims = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.0, 0.1, 0.5]])
    relevant = torch.eye(3, dtype=torch.bool)
    # rows: query 0 top1 = 0 hit, query 1 top1 = 0 miss, query 2 top1 = 2 hit; columns (sims.T): col 0 top1 = 0
    # hit, col 1 top1 = 1 hit, col 2 top1 = 2 hit -> 5/6
    assert recall_at_k(sims, relevant, 1) == pytest.approx(5 / 6)
    assert recall_at_k(sims, relevant, 3) == 1.0


def test_random_recall_by_hand():
    assert random_recall_at_k(torch.eye(4, dtype=torch.bool), 1) == pytest.approx(1 / 4)
    # N = 4, every query has m = 2 relevant: miss both in the top 2 with probability C(2,2)/C(4,2) = 1/6
    relevant = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert random_recall_at_k(relevant, 2) == pytest.approx(5 / 6)


def test_retrieval_scores_over_records_holding_both_modalities():
    records = [rec(i, caption=c) for i, c in enumerate(["a", "b", "a", "c"])]
    assert same_content(records).tolist()[0] == [True, False, True, False]
    eye = torch.eye(4)
    embeddings = {"image": eye, "text": eye, "audio": eye}
    present = {"image": torch.tensor([1, 1, 1, 1], dtype=torch.bool), "text": torch.tensor([1, 1, 1, 0],
                                                                                          dtype=torch.bool),
               "audio": torch.zeros(4, dtype=torch.bool)}
    scores, chance = retrieval_scores(records, embeddings, present)
    assert scores["image_text_pairs"] == 3 and scores["image_text_r@1"] == 1.0
    assert scores["audio_text_pairs"] == 0 and "audio_text_r@1" not in scores
    # 3 records, relevance [[1,0,1],[0,1,0],[1,0,1]]: m = 2, 1, 2 -> R@1 chance (2/3 + 1/3 + 2/3) / 3 both ways
    assert chance["image_text_r@1"] == pytest.approx(5 / 9)
    only = retrieval_scores(records, embeddings, present, rows=[0, 1])[0]
    assert only["image_text_pairs"] == 2


def test_held_out_records_score_in_their_group_row_only():
    from trimodal.evaluation.scoring import groups

    records = [{"id": "a", "subset": "image", "group": None}, {"id": "b", "subset": "image", "group": "ood-render"},
               {"id": "c", "subset": "image+audio", "group": "fusion"}]
    rows = {name: [r["id"] for r in members] for name, members in groups(records).items()}
    assert rows == {"overall": ["a", "c"], "image": ["a"], "image+audio": ["c"], "group:fusion": ["c"],
                    "group:ood-render": ["b"]}
