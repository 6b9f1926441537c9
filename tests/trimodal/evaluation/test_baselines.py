import pytest

from trimodal.evaluation.baselines import majority, majority_baseline, question_prior_baseline, question_type
from trimodal.evaluation.scoring import task_scores


def rec(i, question=None, answer=None, label=-1, caption=None):
    return {"id": f"r{i}", "subset": "image", "question": question, "answer": answer, "label": label,
            "caption": caption}


TRAIN = [rec(0, "what color is the circle?", "red", 0, "a red circle"),
         rec(1, "what color is the square?", "blue", 1, "a blue square"),
         rec(2, "what color is the shape?", "blue", 1, "a blue square"),
         rec(3, "what shape is it?", "circle", 0, "a red circle"),
         rec(4, "what shape is it?", "circle", 0, "a red circle"),
         rec(5, "which shape is shown?", "square", 1, "a blue square")]
TEST = [rec(10, "what color is the triangle?", "red", 0, "a red circle"),
        rec(11, "what shape is it?", "circle", 0, "a red circle"),
        rec(12, "which shape is shown?", "circle", 2, "a green triangle"),
        rec(13, "how many pulses?", "two", 1, "a blue square")]


def test_majority_breaks_ties_by_the_smallest_value_and_skips_missing():
    assert majority(["b", "a", "b", "a", None, ""]) == "a"
    assert majority([2, 1, 1, -1, -1, -1]) == 1  # -1 = no label
    assert majority([]) is None


def test_question_type_is_the_first_words():
    assert question_type("What  color is the circle?", 3) == "what color is"


def test_majority_baseline_by_hand():
    predicted = majority_baseline(TRAIN, TEST)
    # train answers: circle 2, blue 2, red 1, square 1 -> tie circle/blue -> "blue"; labels 0: 3, 1: 3 -> 0;
    # captions: "a red circle" 3, "a blue square" 3 -> "a blue square"
    assert {r["answer_pred"] for r in predicted} == {"blue"}
    assert {r["label_pred"] for r in predicted} == {0}
    assert {r["caption_pred"] for r in predicted} == {"a blue square"}
    scores = task_scores(predicted)
    assert scores["vqa_accuracy"] == 0.0
    assert scores["cls_accuracy"] == pytest.approx(2 / 4)
    assert scores["caption_exact"] == pytest.approx(1 / 4)


def test_question_prior_baseline_by_hand():
    predicted = question_prior_baseline(TRAIN, TEST, words=3)
    # "what color is" -> red 1, blue 2 -> blue; "what shape is" -> circle; "which shape is" -> square;
    # "how many pulses?" unseen -> the overall majority answer "blue"
    assert [r["answer_pred"] for r in predicted] == ["blue", "circle", "square", "blue"]
    assert task_scores(predicted)["vqa_accuracy"] == pytest.approx(1 / 4)
    assert all("answer_pred" not in r for r in TEST)
