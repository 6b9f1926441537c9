"""stages/preferences.py's corruptions: a controlled wrong answer of the asked task's own kind."""
import random

from stages.common.instructions import turn
from stages.preferences import alternatives, corruption

METAS = [{"id": "r1", "caption": "a red circle", "answer": "red", "label": "circle", "label_index": 0},
         {"id": "r2", "caption": "a blue square", "answer": "blue", "label": "square", "label_index": 1},
         {"id": "r3", "caption": "a green star", "answer": "green", "label": "star", "label_index": 2}]
CAPTIONS = [m["caption"] for m in METAS]


def test_a_choice_turn_is_corrupted_with_another_of_the_captions_it_listed():
    for seed in range(10):
        asked = turn(METAS[0], "choice", "Pick one: {options}", CAPTIONS, 2, random.Random(seed))
        wrong = corruption(asked, alternatives(METAS), random.Random(seed))
        assert wrong in asked.listed and wrong != asked.target == "a red circle"


def test_other_tasks_are_corrupted_from_the_splits_answers_of_their_kind():
    pool = alternatives(METAS)
    for task, target in (("caption", "a red circle"), ("classify", "circle")):
        asked = turn(METAS[0], task, "Describe it." if task == "caption" else "Name its class.", CAPTIONS, 3,
                     random.Random(0))
        assert asked.target == target
        wrong = corruption(asked, pool, random.Random(1))
        assert wrong != target and wrong in pool[task]
