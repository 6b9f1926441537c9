"""Reference points a model must beat, learnt from the train split only and scored like a model.

Each baseline turns the test records into predicted records (the same dicts a model's predictions are, see
trimodal/evaluation/scoring.py), so every metric, overall and per subset, has its baseline from the same scorer:
    majority        always the train split's most frequent answer, label and caption
    question_prior  per question type (the question's first `words` words, VQA's convention: "what color is",
                    "what shape is"), the most frequent train answer of that type; unseen types fall back to the
                    majority answer. Labels and captions as `majority`.
Ties are broken by the smallest value (sorted order), so a baseline never depends on the order records come in.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

MODEL_ONLY = ("nll", "tokens", "cider")  # a model's own numbers on a record, not a baseline's


def majority(values: Iterable) -> object | None:
    """The most frequent value (smallest on ties), None when there is none."""
    counts = Counter(v for v in values if v is not None and v != "" and v != -1)
    if not counts:
        return None
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


def question_type(question: str, words: int) -> str:
    return " ".join(question.lower().split()[:words])


def _predicted(records: Sequence[dict], answer_for, label, caption) -> list[dict]:
    out = []
    for r in records:
        answer = answer_for(r) if r.get("answer") else None
        targets = {k: v for k, v in r.items() if k not in MODEL_ONLY}  # a constant has no perplexity
        out.append({**targets, "answer_pred": answer or "", "label_pred": -1 if label is None else label,
                    "caption_pred": caption or ""})
    return out


def majority_baseline(train: Sequence[dict], test: Sequence[dict]) -> list[dict]:
    """`test` with every prediction replaced by the train split's majority answer / label / caption."""
    answer = majority(r.get("answer") for r in train)
    return _predicted(test, lambda r: answer, majority(r.get("label") for r in train),
                      majority(r.get("caption") for r in train))


def question_prior_baseline(train: Sequence[dict], test: Sequence[dict], words: int = 3) -> list[dict]:
    """`test` with each answer the train split's majority answer for the question's type (see module doc)."""
    fallback = majority(r.get("answer") for r in train)
    by_type: dict[str, list[str]] = {}
    for r in train:
        if r.get("answer") and r.get("question"):
            by_type.setdefault(question_type(r["question"], words), []).append(r["answer"])
    prior = {t: majority(answers) for t, answers in by_type.items()}

    def answer_for(r: dict) -> str | None:
        return prior.get(question_type(r.get("question") or "", words), fallback)

    return _predicted(test, answer_for, majority(r.get("label") for r in train),
                      majority(r.get("caption") for r in train))
