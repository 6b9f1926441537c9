"""A record as natural-language instructions (instruction tuning, docs/model.md "Alignment"): per task, a prompt from
one of the task's templates (conf/instruct/default.yaml `templates`, split into `train` and `held_out`) and the
answer the record holds. Pure functions of a record's json (meta), shared by `instruct` (training and the held-out
scores), `preferences` (the prompts of the pairs) and `align`.

    caption   target: the caption                  template as it is
    vqa       target: the answer                   {question} -> the record's question
    classify  target: the label's name              template as it is (only records with a known label)
    choice    target: the matching option's text    {options} -> "(a) ... (b) ... (c) ...": the record's caption
              (retrieval-style: its caption among    and options - 1 other captions, in a random order
              `options` listed ones)

The record's own text input comes before the prompt (`content`); both families read the result through the
tokenizer's chat template (trimodal/alignment/responses.py).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

TASKS = ("caption", "vqa", "classify", "choice")
LETTERS = "abcdefgh"
PLACEHOLDERS = {"vqa": "{question}", "choice": "{options}"}


@dataclass(frozen=True)
class Turn:
    task: str
    prompt: str
    target: str
    listed: tuple[str, ...] = ()  # the choice task: the captions it lists, in order (the target among them)


def check_templates(templates: dict[str, dict[str, list[str]]], options: int | None = None) -> None:
    """Every task has train and held-out templates, disjoint, each holding the placeholder its task fills; the
    choice task lists 2 to len(LETTERS) captions (`options`)."""
    if options is not None and not 2 <= options <= len(LETTERS):
        raise ValueError(f"instructions.options must be within [2, {len(LETTERS)}] (one letter per caption listed), "
                         f"got {options}")
    for task in TASKS:
        if task not in templates:
            raise ValueError(f"instruct.templates has no {task!r} task (tasks: {list(TASKS)})")
        train, held_out = templates[task].get("train") or [], templates[task].get("held_out") or []
        if not train or not held_out:
            raise ValueError(f"instruct.templates.{task} needs at least one `train` and one `held_out` template")
        if set(train) & set(held_out):
            raise ValueError(f"instruct.templates.{task}: {sorted(set(train) & set(held_out))} is both train and "
                             "held-out: a held-out template must be one the model never trained on")
        needed = PLACEHOLDERS.get(task)
        for template in [*train, *held_out]:
            if needed and needed not in template:
                raise ValueError(f"instruct.templates.{task}: {template!r} lacks {needed}")
    unknown = sorted(set(templates) - set(TASKS))
    if unknown:
        raise ValueError(f"instruct.templates: unknown tasks {unknown} (tasks: {list(TASKS)})")


def tasks_of(meta: dict, captions: list[str]) -> list[str]:
    """The tasks a record has an answer for; `choice` needs another caption in `captions` to offer beside its own."""
    caption = meta.get("caption")
    have = {"caption": bool(caption), "vqa": bool(meta.get("question") and meta.get("answer")),
            "classify": bool(meta.get("label")) and meta.get("label_index", 0) >= 0,
            "choice": bool(caption) and any(c and c != caption for c in captions)}
    return [task for task in TASKS if have[task]]


def options(caption: str, captions: list[str], n: int, rng: random.Random) -> tuple[list[str], int]:
    """(the record's caption and up to n - 1 different captions of `captions`, shuffled; the index of its own)."""
    others = sorted({c for c in captions if c and c != caption})
    picked = [caption, *rng.sample(others, min(n - 1, len(others)))]
    rng.shuffle(picked)
    return picked, picked.index(caption)


def turn(meta: dict, task: str, template: str, captions: list[str], n_options: int, rng: random.Random) -> Turn:
    """The record's `task` as an instruction (the template filled in) and its answer."""
    if task == "caption":
        return Turn(task, template, meta["caption"])
    if task == "vqa":
        return Turn(task, template.replace("{question}", meta["question"]), meta["answer"])
    if task == "classify":
        return Turn(task, template, meta["label"])
    choices, right = options(meta["caption"], captions, n_options, rng)
    listed = " ".join(f"({LETTERS[k]}) {c}" for k, c in enumerate(choices))
    return Turn(task, template.replace("{options}", listed), choices[right], tuple(choices))


def holds_placeholder(word: str) -> bool:
    """Whether a template word carries a placeholder ("{question}", or glued to punctuation: "{question}?")."""
    return any(mark in word for mark in PLACEHOLDERS.values())


def instruction_words(templates: dict[str, dict[str, list[str]]]) -> list[str]:
    """The words of every task's train templates (none holding a placeholder), sorted: prompt noise's
    replacements."""
    return sorted({word for task in templates.values() for template in task["train"] for word in template.split()
                   if not holds_placeholder(word)})


def noisy_words(text: str, p: float, vocabulary: list[str], rng: random.Random) -> str:
    """Each word of `text`, with probability p, dropped or replaced by a word of `vocabulary` (half each); at least
    one word kept. Placeholders ({question}, {options}) are never touched."""
    words, out = text.split(), []
    for word in words:
        if holds_placeholder(word) or rng.random() >= p:
            out.append(word)
        elif rng.random() < 0.5:
            out.append(vocabulary[rng.randrange(len(vocabulary))])
    if not out and words:
        out.append(words[rng.randrange(len(words))])
    return " ".join(out)


def noisy_prompt(meta: dict, template: str, p: float, vocabulary: list[str],
                 rng: random.Random) -> tuple[dict, str]:
    """Prompt noise (instruct's training turns): the template's words and the record's question words, each dropped
    or replaced by another train template's word with probability p. A model taught with a few templates per task
    otherwise picks the task by a keyword: "{question} Keep the answer short." was answered with a caption, the
    word "short" belonging to caption templates ("Write a short caption."); with words of every task's templates
    strewn into every task's prompts, no single word decides the task (docs/model.md, "Alignment")."""
    if p <= 0:  # off: no draw, so the turn's generator is what it was without this feature
        return meta, template
    template = noisy_words(template, p, vocabulary, rng)
    if meta.get("question"):
        meta = {**meta, "question": noisy_words(meta["question"], p, vocabulary, rng)}
    return meta, template


def content(text: str, prompt: str) -> str:
    """The user's turn: the record's text input (may be empty), then the instruction."""
    return f"{text} {prompt}".strip()


def normalised(answer: str) -> str:
    """Exact match up to case, outer spaces and a final full stop."""
    return answer.strip().lower().rstrip(".").strip()


def correct(prediction: str, target: str) -> bool:
    return normalised(prediction) == normalised(target)
