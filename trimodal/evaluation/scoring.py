"""Scores of predicted records, overall and per modality subset (docs/evaluation.md says what each one means).

A record is a dict from trimodal/evaluation/predict.py (or a baseline from trimodal/evaluation/baselines.py):
    id, subset ("image", "audio+text", ...), group (e.g. "fusion", or None), caption, caption_pred, answer,
    answer_pred, label (class index, -1 = none), label_pred, nll / tokens (teacher-forced caption), cider
Pure functions of those dicts: every number here can be checked by hand (tests/trimodal/evaluation/test_scoring.py).

    vqa_accuracy    exact match of the generated answer
    cls_accuracy    exact match of the predicted class;  cls_macro_f1  F1 averaged over the classes that occur in
                    the targets or the predictions (a class absent from both is not a zero dragging the mean)
    caption_exact   exact match of the generated caption
    bleu4           sacrebleu corpus BLEU, n-grams up to 4, its default `13a` tokenizer and `exp` smoothing; a
                    3-word caption has no 4-gram, so short captions score low: that is BLEU-4, not a bug.
                    bleu<k> (evaluate.extra_bleu_order) is the same with n-grams up to k, an extra column
    rouge_l         mean ROUGE-L F-measure (rouge-score)
    cider           mean per-record CIDEr-D (pycocoevalcap); its IDF comes from the references of the whole split
                    scored (`cider_per_record`), so a subset's CIDEr is comparable with the overall one
    perplexity      exp(summed caption NLL / caption tokens), teacher-forced
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence

import torch

from trimodal.data.records import MODALITIES

# the 7 non-empty subsets, singles first, in MODALITIES order within each size
SUBSETS = tuple("+".join(m for j, m in enumerate(MODALITIES) if mask >> j & 1)
                for mask in sorted(range(1, 2 ** len(MODALITIES)), key=lambda m: (bin(m).count("1"), m)))
MIN_RECORDS = 20  # a subset with fewer test records than this is flagged: its scores are anecdotes
HELD_OUT_PREFIX = "ood-"  # a record group of forms training never shows: its own report row only (held_out)
BLEU_TOKENIZER = "13a"


def subset_name(modalities: Iterable[str]) -> str:
    """{"text", "image"} -> "image+text" (MODALITIES order); no modality -> "none"."""
    present = set(modalities)
    unknown = present - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}")
    return "+".join(m for m in MODALITIES if m in present) or "none"


def record_of(meta: dict) -> dict:
    """A shard sample's json -> the target half of a scoring record."""
    return {"id": meta.get("id"), "subset": subset_name(meta.get("modalities", ())), "group": meta.get("group"),
            "caption": meta.get("caption"), "question": meta.get("question"), "answer": meta.get("answer"),
            "label": meta.get("label_index", -1)}


def bleu(hyps: Sequence[str], refs: Sequence[str], order: int = 4) -> float:
    """Corpus BLEU with n-grams up to `order` (sacrebleu defaults otherwise), 0-100."""
    from sacrebleu.metrics import BLEU  # here, like the other metric libraries: ~1 s that training never needs

    return BLEU(max_ngram_order=order, tokenize=BLEU_TOKENIZER).corpus_score(list(hyps), [list(refs)]).score


def bleu_signature(order: int = 4) -> str:
    """sacrebleu's reproducibility signature (nrefs, case, tokenizer, smoothing, version) of `bleu`."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(max_ngram_order=order, tokenize=BLEU_TOKENIZER)
    metric.corpus_score(["a"], [["a"]])  # the signature records the number of references, known after scoring
    return str(metric.get_signature())


def cider_per_record(refs: Sequence[str], hyps: Sequence[str]) -> list[float]:
    """CIDEr-D of each hypothesis against its one reference, document frequencies from all of `refs`."""
    if not refs:
        return []
    from pycocoevalcap.cider.cider import Cider

    _, per_record = Cider().compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    return [float(s) for s in per_record]


def fill_cider(records: list[dict]) -> None:
    """Each captioned record's CIDEr-D, document frequencies from all the captioned records given."""
    captioned = [r for r in records if r.get("caption")]
    for r, score in zip(captioned, cider_per_record([r["caption"] for r in captioned],
                                                    [r["caption_pred"] for r in captioned]), strict=True):
        r["cider"] = score


def macro_f1(targets: Sequence[int], preds: Sequence[int]) -> float:
    """F1 per class, averaged over the classes in targets or preds (precision or recall 0/0 counts as 0)."""
    scores = []
    for c in sorted(set(targets) | set(preds)):
        tp = sum(t == c and p == c for t, p in zip(targets, preds, strict=True))
        fp = sum(t != c and p == c for t, p in zip(targets, preds, strict=True))
        fn = sum(t == c and p != c for t, p in zip(targets, preds, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return statistics.fmean(scores) if scores else 0.0


def task_scores(records: Sequence[dict], extra_bleu_order: int = 0) -> dict:
    """Every task metric over `records`; each counts only the records carrying its target, and n_caption /
    n_vqa / n_cls say how many those are (n: all records, targetless ones such as a text corpus included)."""
    scores: dict = {}
    captioned = [r for r in records if r.get("caption")]
    scores["n_caption"] = len(captioned)
    if captioned:
        hyps, refs = [r["caption_pred"] for r in captioned], [r["caption"] for r in captioned]
        scores["caption_exact"] = statistics.fmean(h == r for h, r in zip(hyps, refs, strict=True))
        scores["bleu4"] = bleu(hyps, refs, 4)
        if extra_bleu_order and extra_bleu_order != 4:
            scores[f"bleu{extra_bleu_order}"] = bleu(hyps, refs, extra_bleu_order)
        from rouge_score import rouge_scorer

        rouge = rouge_scorer.RougeScorer(["rougeL"])
        scores["rouge_l"] = statistics.fmean(rouge.score(r, h)["rougeL"].fmeasure for r, h in zip(refs, hyps,
                                                                                               strict=True))
        if all("cider" in r for r in captioned):
            scores["cider"] = statistics.fmean(r["cider"] for r in captioned)
        tokens = sum(r.get("tokens", 0) for r in captioned)
        if tokens:
            scores["perplexity"] = math.exp(sum(r["nll"] for r in captioned) / tokens)
    return {**scores, **answer_scores(records)}


def answer_scores(records: Sequence[dict]) -> dict:
    """The VQA and classification part of `task_scores` (what the robustness runs need: no captions)."""
    scores: dict = {}
    answered = [r for r in records if r.get("answer")]
    labelled = [r for r in records if r.get("label", -1) >= 0]
    scores["n_vqa"], scores["n_cls"] = len(answered), len(labelled)
    if answered:
        scores["vqa_accuracy"] = statistics.fmean(r["answer_pred"] == r["answer"] for r in answered)
    if labelled:
        targets, preds = [r["label"] for r in labelled], [r["label_pred"] for r in labelled]
        scores["cls_accuracy"] = statistics.fmean(t == p for t, p in zip(targets, preds, strict=True))
        scores["cls_macro_f1"] = macro_f1(targets, preds)
    scores["n"] = len(records)
    return scores


def held_out(record: dict) -> bool:
    """A record of a held-out group (`ood-...`: a form training never shows, e.g. the demo's ood-question and
    ood-render): scored in its group's row only, so overall and the subset rows stay in-distribution."""
    return (record.get("group") or "").startswith(HELD_OUT_PREFIX)


def held_out_row(row: str) -> bool:
    """A report row of a held-out group (`group:ood-...`): judged by its gap to the records like it, not held to
    the in-distribution targets."""
    return row.startswith(f"group:{HELD_OUT_PREFIX}")


def groups(records: Sequence[dict]) -> dict[str, list[dict]]:
    """The rows of a per-subset table: "overall", each modality subset present (SUBSETS order), then each record
    group (e.g. "fusion": records whose answer needs two modalities). Held-out records are in their group's row
    alone."""
    seen = [r for r in records if not held_out(r)]
    rows = {"overall": seen}
    for name in SUBSETS:
        members = [r for r in seen if r["subset"] == name]
        if members:
            rows[name] = members
    for group in sorted({r["group"] for r in records if r.get("group")}):
        rows[f"group:{group}"] = [r for r in records if r.get("group") == group]
    return rows


def group_subsets(records: Sequence[dict]) -> dict[str, dict[str, list[dict]]]:
    """Each in-distribution record group whose records carry different modality subsets, split by subset (the
    demo's fusion group: image+audio, image+text, audio+text). A pair of inputs a model cannot compare hides in its
    group's row; the DeepSeek-VL family, which reads no audio, can only guess the audio pairs."""
    out = {}
    for group in sorted({r["group"] for r in records if r.get("group") and not held_out(r)}):
        members = [r for r in records if r.get("group") == group]
        subsets = [name for name in SUBSETS if any(r["subset"] == name for r in members)]
        if len(subsets) > 1:
            out[group] = {name: [r for r in members if r["subset"] == name] for name in subsets}
    return out


def references(records: Sequence[dict]) -> dict[str, list[dict]]:
    """For each record group, the records of no group over the same modality subsets: what the group is compared
    with (a held-out group such as ood-render, image-only records in renderings training never shows, against the
    image-only records training does show)."""
    out = {}
    for group in sorted({r["group"] for r in records if r.get("group")}):
        subsets = {r["subset"] for r in records if r.get("group") == group}
        out[group] = [r for r in records if not r.get("group") and r["subset"] in subsets]
    return out


def by_subset(records: Sequence[dict], score: Callable[[Sequence[dict]], dict] = task_scores) -> dict[str, dict]:
    """score() of every row of `groups`, each with n (records), n_scored (records with any target) and `few`
    (n_scored < MIN_RECORDS)."""
    out = {}
    for name, members in groups(records).items():
        scored = sum(1 for r in members if r.get("caption") or r.get("answer") or r.get("label", -1) >= 0)
        out[name] = {**score(members), "n": len(members), "n_scored": scored, "few": scored < MIN_RECORDS}
    return out


def same_content(records: Sequence[dict]) -> torch.Tensor:
    """[N, N] relevance for retrieval: records with the same caption describe the same thing, so retrieving any
    of them is a hit; a record without a caption matches only itself."""
    keys = [r.get("caption") or f"id:{r['id']}" for r in records]
    return torch.tensor([[a == b for b in keys] for a in keys])


def recall_at_k(sims: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    """Mean over queries, both directions (rows of sims, then of sims.T), of 1 if a relevant item is in the top k."""
    hits = []
    for s, rel in ((sims, relevant), (sims.T, relevant.T)):
        top = s.topk(min(k, s.shape[1]), dim=1).indices
        hits += rel.gather(1, top).any(1).float().tolist()
    return statistics.fmean(hits)


def random_recall_at_k(relevant: torch.Tensor, k: int) -> float:
    """Expected recall@k of a random ranking: a query with m relevant among N items misses all of them in its
    top k with probability C(N - m, k) / C(N, k) (hypergeometric), averaged over queries both ways."""
    n = relevant.shape[0]
    k = min(k, n)
    ms = relevant.sum(1).tolist() + relevant.sum(0).tolist()
    return statistics.fmean(1 - math.comb(n - int(m), k) / math.comb(n, k) for m in ms)


PAIRS = {"image_text": ("image", "text"), "audio_text": ("audio", "text"), "image_audio": ("image", "audio")}
TOP_K = (1, 5, 10)
# The few scores of a model that `dvc metrics show` lists (metrics/<stage>.json, metrics/eval/<name>.json), under the
# same names in every file so that each scored model is a row of one table; the rows per modality subset and the
# rest stay in the details files (params.paths.details).
HEADLINE = ("vqa_accuracy", "cls_accuracy", "cls_macro_f1", "caption_exact", "bleu4", "rouge_l", "cider",
            "perplexity", *(f"{pair}_r@1" for pair in PAIRS))


def headline(row: dict) -> dict:
    """The HEADLINE scores that one row of scores (e.g. rows["overall"]) holds, in HEADLINE order."""
    return {key: row[key] for key in HEADLINE if key in row}


def retrieval_scores(records: Sequence[dict], embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                     rows: Sequence[int] | None = None) -> tuple[dict, dict]:
    """(model recall@k, random-ranking recall@k) per modality pair, over the records (of `rows`, default all)
    that hold both modalities of the pair: the gallery is those records, a hit any record with the same caption."""
    rows = list(range(len(records))) if rows is None else list(rows)
    scores, chance = {}, {}
    for name, (a, b) in PAIRS.items():
        both = [i for i in rows if present[a][i] and present[b][i]]
        scores[f"{name}_pairs"] = len(both)
        if len(both) < 2:
            continue
        index = torch.tensor(both)
        sims = embeddings[a][index] @ embeddings[b][index].T
        relevant = same_content([records[i] for i in both])
        for k in TOP_K:
            scores[f"{name}_r@{k}"] = recall_at_k(sims, relevant, k)
            chance[f"{name}_r@{k}"] = random_recall_at_k(relevant, k)
    return scores, chance


def retrieval_by_row(records: Sequence[dict], embeddings: dict[str, torch.Tensor],
                     present: dict[str, torch.Tensor]) -> tuple[dict[str, dict], dict[str, dict]]:
    """`retrieval_scores` for every row of `groups`: (model recall@k per row, random-ranking recall@k per row)."""
    positions = {id(r): i for i, r in enumerate(records)}
    scores, chance = {}, {}
    for name, members in groups(records).items():
        scores[name], chance[name] = retrieval_scores(records, embeddings, present, [positions[id(r)] for r in members])
    return scores, chance
