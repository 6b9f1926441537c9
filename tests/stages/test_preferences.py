"""stages/preferences.py's corruptions: a controlled wrong answer of the asked task's own kind, or the record's answer
to another of its tasks."""
import random

from stages.preferences import alternatives, corruption, other_answers
from trimodal.alignment.instructions import turn

METAS = [{"id": "r1", "caption": "a red circle", "answer": "red", "label": "circle", "label_index": 0},
         {"id": "r2", "caption": "a blue square", "answer": "blue", "label": "square", "label_index": 1},
         {"id": "r3", "caption": "a green star", "answer": "green", "label": "star", "label_index": 2}]
CAPTIONS = [m["caption"] for m in METAS]


def test_a_choice_turn_is_corrupted_with_another_of_the_captions_it_listed():
    for seed in range(10):
        asked = turn(METAS[0], "choice", "Pick one: {options}", CAPTIONS, 2, random.Random(seed))
        wrong = corruption(asked, METAS[0], alternatives(METAS), 1.0, random.Random(seed))
        assert wrong in asked.listed and wrong != asked.target == "a red circle"


def test_other_tasks_are_corrupted_from_the_splits_answers_of_their_kind():
    pool = alternatives(METAS)
    for task, target in (("caption", "a red circle"), ("classify", "circle")):
        asked = turn(METAS[0], task, "Describe it." if task == "caption" else "Name its class.", CAPTIONS, 3,
                     random.Random(0))
        assert asked.target == target
        wrong = corruption(asked, METAS[0], pool, 0.0, random.Random(1))
        assert wrong != target and wrong in pool[task]


def test_other_task_corruptions_are_the_records_own_answers_to_its_other_tasks():
    meta = {**METAS[0], "question": "what color is it?"}
    asked = turn(meta, "vqa", "Please answer: {question}", CAPTIONS, 3, random.Random(0))
    # the caption holds the answer "red": the confusion is the answer run on into it
    assert other_answers(meta, "vqa") == ["circle", "red circle"]
    assert other_answers(meta, "classify") == ["a red circle", "red"]
    assert other_answers(meta, "caption") == ["circle", "red"]
    drawn = {corruption(asked, meta, alternatives(METAS), 1.0, random.Random(s)) for s in range(20)}
    assert drawn == {"circle", "red circle"}
    # at 0.5 both kinds are drawn; an unknown class (label_index -1) is never offered
    mixed = {corruption(asked, meta, alternatives(METAS), 0.5, random.Random(s)) for s in range(50)}
    assert {"red circle", "blue"} <= mixed
    assert other_answers({**meta, "label_index": -1}, "vqa") == ["red circle"]


def test_an_other_task_answer_that_is_right_for_the_asked_one_is_never_a_corruption():
    meta = {"id": "r9", "caption": "a star", "question": "what shape?", "answer": "star", "label": "star",
            "label_index": 2}
    assert other_answers(meta, "vqa") == ["a star"]  # "star" ends the caption: nothing runs on after it
    assert other_answers(meta, "classify") == ["a star"]
