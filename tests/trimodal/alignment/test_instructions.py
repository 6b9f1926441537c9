"""trimodal/alignment/instructions.py: records as instructions (pure functions of a record's json)."""
from __future__ import annotations

import copy
import random
import re

import pytest

from trimodal.alignment.instructions import (
    TASKS,
    Turn,
    check_templates,
    content,
    correct,
    instruction_words,
    noisy_prompt,
    noisy_words,
    normalised,
    options,
    tasks_of,
    turn,
)
from trimodal.params import defaults

RECORD = {"id": "r1", "modalities": ["image", "text"], "caption": "a red circle", "question": "what color is it?",
          "answer": "red", "label": "circle", "label_index": 0, "group": None}
POOL = ["a red circle", "a blue square", "a green star", "a yellow moon", "a blue square", "", "a red circle"]
OTHERS = {"a blue square", "a green star", "a yellow moon"}


def record(**changes) -> dict:
    return {**RECORD, **changes}


def listed(prompt: str) -> dict[str, str]:
    """letter -> caption of a choice prompt's "(a) ... (b) ..." list (the captions here hold no parentheses)."""
    return dict(re.findall(r"\(([a-h])\) ([^()]+?)(?= \([a-h]\) |$)", prompt))


# check_templates ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_templates() -> dict:
    return defaults().instructions.templates


@pytest.fixture
def templates(default_templates) -> dict:
    return copy.deepcopy(default_templates)


def test_check_templates_accepts_the_default_templates(templates):
    assert set(templates) == set(TASKS)
    assert check_templates(templates) is None


def test_check_templates_refuses_a_missing_task(templates):
    del templates["classify"]
    with pytest.raises(ValueError, match="no 'classify' task"):
        check_templates(templates)


def test_check_templates_refuses_a_task_without_held_out_templates(templates):
    templates["caption"]["held_out"] = []
    with pytest.raises(ValueError, match=r"templates\.caption needs at least one `train` and one `held_out`"):
        check_templates(templates)


def test_check_templates_refuses_a_task_without_train_templates(templates):
    del templates["vqa"]["train"]
    with pytest.raises(ValueError, match=r"templates\.vqa needs at least one `train`"):
        check_templates(templates)


def test_check_templates_refuses_a_template_that_is_both_train_and_held_out(templates):
    shared = templates["classify"]["train"][0]
    templates["classify"]["held_out"].append(shared)
    with pytest.raises(ValueError, match="both train and held-out") as raised:
        check_templates(templates)
    assert shared in str(raised.value)


def test_check_templates_refuses_a_vqa_template_lacking_the_question(templates):
    templates["vqa"]["held_out"].append("Answer it.")
    with pytest.raises(ValueError, match=r"templates\.vqa: 'Answer it\.' lacks \{question\}"):
        check_templates(templates)


def test_check_templates_refuses_a_choice_template_lacking_the_options(templates):
    templates["choice"]["train"].append("Which caption fits?")
    with pytest.raises(ValueError, match=r"templates\.choice: 'Which caption fits\?' lacks \{options\}"):
        check_templates(templates)


def test_check_templates_refuses_an_unknown_task(templates):
    templates["translate"] = {"train": ["Translate it."], "held_out": ["Say it in French."]}
    with pytest.raises(ValueError, match=r"unknown tasks \['translate'\]"):
        check_templates(templates)


# tasks_of -----------------------------------------------------------------------------------------------------------

def test_tasks_of_a_full_record_with_other_captions_is_every_task_in_order():
    assert tasks_of(RECORD, POOL) == ["caption", "vqa", "classify", "choice"]


def test_tasks_of_offers_no_choice_without_another_different_caption():
    assert tasks_of(RECORD, ["a red circle", "", "a red circle"]) == ["caption", "vqa", "classify"]
    assert tasks_of(RECORD, []) == ["caption", "vqa", "classify"]


def test_tasks_of_an_unknown_label_has_no_classify():
    assert "classify" not in tasks_of(record(label_index=-1), POOL)
    assert "classify" not in tasks_of(record(label=None, label_index=-1), POOL)


def test_tasks_of_needs_both_question_and_answer_for_vqa():
    assert "vqa" not in tasks_of(record(answer=None), POOL)
    assert "vqa" not in tasks_of(record(question=""), POOL)


def test_tasks_of_a_record_without_caption_has_neither_caption_nor_choice():
    assert tasks_of(record(caption=None), POOL) == ["vqa", "classify"]


# options ------------------------------------------------------------------------------------------------------------

def test_options_hold_the_own_caption_exactly_once_among_distinct_others():
    picked, own = options("a red circle", POOL, 3, random.Random(0))
    assert len(picked) == 3
    assert picked.count("a red circle") == 1
    assert picked[own] == "a red circle"
    assert len(set(picked)) == len(picked)
    assert set(picked) - {"a red circle"} <= OTHERS  # never the empty caption


@pytest.mark.parametrize("n", [1, 2, 4])
def test_options_list_at_most_n(n):
    picked, own = options("a red circle", POOL, n, random.Random(3))
    assert len(picked) == n
    assert picked[own] == "a red circle"


def test_options_are_fewer_when_there_are_fewer_than_n_minus_one_other_captions():
    picked, own = options("a red circle", POOL, 8, random.Random(1))
    assert sorted(picked) == sorted(OTHERS | {"a red circle"})
    assert picked[own] == "a red circle"


def test_options_are_the_same_for_the_same_seed():
    first = options("a red circle", POOL, 3, random.Random(42))
    assert options("a red circle", POOL, 3, random.Random(42)) == first
    # the pool's order does not matter either: the others are sorted before sampling
    assert options("a red circle", list(reversed(POOL)), 3, random.Random(42)) == first


def test_options_vary_with_the_seed():
    draws = {tuple(options("a red circle", POOL, 3, random.Random(seed))[0]) for seed in range(20)}
    assert len(draws) > 1


# turn ---------------------------------------------------------------------------------------------------------------

def test_turn_caption_keeps_the_template_and_answers_the_caption():
    asked = turn(RECORD, "caption", "Describe it.", POOL, 3, random.Random(0))
    assert asked == Turn("caption", "Describe it.", "a red circle")


def test_turn_vqa_fills_in_the_question_and_answers_the_answer():
    asked = turn(RECORD, "vqa", "Question: {question} Answer briefly.", POOL, 3, random.Random(0))
    assert asked == Turn("vqa", "Question: what color is it? Answer briefly.", "red")


def test_turn_classify_answers_the_label_name():
    asked = turn(RECORD, "classify", "Name its class.", POOL, 3, random.Random(0))
    assert asked == Turn("classify", "Name its class.", "circle")


@pytest.mark.parametrize("seed", range(5))
def test_turn_choice_lists_the_records_caption_among_others_and_answers_it(seed):
    asked = turn(RECORD, "choice", "Pick the matching description: {options}", POOL, 3, random.Random(seed))
    assert asked.task == "choice"
    assert asked.prompt.startswith("Pick the matching description: (a) ")
    choices = listed(asked.prompt)
    assert list(choices) == ["a", "b", "c"]
    assert tuple(choices.values()) == asked.listed
    assert asked.target == "a red circle"
    assert asked.listed.count("a red circle") == 1 and set(asked.listed) - {"a red circle"} <= OTHERS


def test_turn_choice_lists_only_the_captions_there_are():
    asked = turn(RECORD, "choice", "{options} Reply with that caption.", ["a red circle", "a blue square"], 4,
                 random.Random(0))
    choices = listed(asked.prompt.removesuffix(" Reply with that caption."))
    assert sorted(choices.values()) == ["a blue square", "a red circle"] == sorted(asked.listed)
    assert asked.target == "a red circle"


# prompt noise -------------------------------------------------------------------------------------------------------

VOCABULARY = ["caption", "short", "letter"]


def test_instruction_words_are_the_train_templates_words_without_placeholders(default_templates):
    words = instruction_words(default_templates)
    assert words == sorted(set(words))
    assert "{question}" not in words and "{options}" not in words
    assert "short" in words  # "Write a short caption."
    held_out_only = {w for task in default_templates.values() for t in task["held_out"] for w in t.split()}
    held_out_only -= {w for task in default_templates.values() for t in task["train"] for w in t.split()}
    assert held_out_only and not held_out_only & set(words)


def test_instruction_words_leave_out_words_glued_to_a_placeholder():
    words = instruction_words({"vqa": {"train": ["Q:{question}? Answer.", "{question} Be brief."], "held_out": []}})
    assert words == ["Answer.", "Be", "brief."]


def test_noisy_words_at_zero_and_one():
    text = "Which of these describes it? Answer with the letter."
    assert noisy_words(text, 0.0, VOCABULARY, random.Random(0)) == text
    for seed in range(20):
        noisy = noisy_words(text, 1.0, VOCABULARY, random.Random(seed)).split()
        assert noisy, "at least one word is kept"
        assert set(noisy) <= set(VOCABULARY) | set(text.split())


def test_noisy_words_drops_and_replaces_about_p_of_the_words():
    text = " ".join(f"w{k}" for k in range(2000))
    noisy = noisy_words(text, 0.2, VOCABULARY, random.Random(1)).split()
    replaced = sum(w in VOCABULARY for w in noisy)
    dropped = 2000 - len(noisy)
    assert 150 < replaced < 250 and 150 < dropped < 250


@pytest.mark.parametrize("seed", range(10))
def test_noisy_words_keeps_placeholders(seed):
    for template in ["{question} Be brief.", "Options: {options} Which one fits?", "Q: {question}? A:"]:
        noisy = noisy_words(template, 1.0, VOCABULARY, random.Random(seed))
        assert ("{question}" in noisy) == ("{question}" in template)
        assert ("{options}" in noisy) == ("{options}" in template)


def test_noisy_prompt_off_leaves_record_template_and_generator_alone():
    rng = random.Random(3)
    meta, template = noisy_prompt(RECORD, "Question: {question} Answer briefly.", 0.0, VOCABULARY, rng)
    assert meta is RECORD and template == "Question: {question} Answer briefly."
    assert rng.random() == random.Random(3).random()


def test_noisy_prompt_noises_the_question_and_keeps_the_answer():
    changed = 0
    for seed in range(30):
        meta, template = noisy_prompt(RECORD, "{question} Be brief.", 0.5, VOCABULARY, random.Random(seed))
        asked = turn(meta, "vqa", template, POOL, 3, random.Random(0))
        assert asked.target == "red" and meta["answer"] == "red" and meta["caption"] == RECORD["caption"]
        changed += meta["question"] != RECORD["question"]
    assert changed > 20
    assert RECORD["question"] == "what color is it?"  # the record itself is not modified


def test_noisy_prompt_keeps_the_choice_options_whole():
    for seed in range(20):
        meta, template = noisy_prompt(RECORD, "Pick the matching description: {options}", 1.0, VOCABULARY,
                                      random.Random(seed))
        asked = turn(meta, "choice", template, POOL, 3, random.Random(seed))
        choices = listed(asked.prompt[asked.prompt.index("(a)"):])
        assert tuple(choices.values()) == asked.listed and asked.target == "a red circle" in asked.listed


# content, normalised, correct -----------------------------------------------------------------------------------

def test_content_puts_the_text_before_the_prompt():
    assert content("there is a red circle", "Describe it.") == "there is a red circle Describe it."


def test_content_of_an_empty_text_is_just_the_prompt():
    assert content("", "Describe it.") == "Describe it."


def test_content_is_stripped():
    assert content(" hello ", "Describe it. ") == content(" hello ", "Describe it. ").strip()
    assert content(" hello ", "Describe it. ").startswith("hello")
    assert content(" hello ", "Describe it. ").endswith("Describe it.")


@pytest.mark.parametrize("answer", ["red", "Red", "  RED  ", "red.", "Red. ", " red . "])
def test_normalised_ignores_case_outer_spaces_and_a_final_full_stop(answer):
    assert normalised(answer) == "red"


def test_normalised_keeps_inner_full_stops_and_spaces():
    assert normalised("e.g. A red circle.") == "e.g. a red circle"


def test_correct_matches_up_to_normalisation_only():
    assert correct("Red.", "red")
    assert correct("  a Red circle ", "a red circle.")
    assert not correct("blue", "red")
    assert not correct("a red", "red")
    assert not correct("redd", "red")
