"""Instruction turns on the shards for either family: the training step of `instruct` and the exact-match scores
per task and template that `instruct` and `align` report (held-out templates: the ones no stage trains on).
The turns themselves are trimodal/alignment/instructions.py's; the model reads them through
trimodal/alignment/responses.py.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import torch
from tqdm import tqdm

from trimodal.alignment.instructions import TASKS, content, correct, instruction_words, noisy_prompt, tasks_of, turn
from trimodal.alignment.responses import logprobs, media_of, prompt_width, prompted, readable, respond, response_logits
from trimodal.data.batches import to_device
from trimodal.data.loader import make_loader, read_meta
from trimodal.evaluation.generation import ANSWER_TOKENS
from trimodal.model import lockstep
from trimodal.model.chat import chat_prompt_ids, texts, zero_loss
from trimodal.model.losses import kd_loss

# new tokens a response may take: a caption (or the chosen option, a caption) is a short phrase, an answer or a
# class a word or two
BUDGETS = {"caption": 16, "vqa": ANSWER_TOKENS, "classify": ANSWER_TOKENS, "choice": 16}


def instruct_step(tokenizer, templates: dict, n_options: int, replay: Callable, prompt_noise: float = 0.0) -> Callable:
    """The fine-tuning step (its losses, so the evaluation's formats are kept) plus `instruct`: each readable
    record asked one of its tasks with one of the task's train templates (both drawn from the step's generator),
    its words under `prompt_noise` (instructions.noisy_prompt), cross-entropy on the answer's tokens. `replay`: the
    family's fine-tuning losses and the media they encoded (its `replay`, model/family.py)."""
    losses_of = instruct_losses(tokenizer, templates, n_options, replay, prompt_noise)

    @lockstep.aware
    def step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return losses_of(model, batch, generator)[0]

    return step


def instruct_losses(tokenizer, templates: dict, n_options: int, replay: Callable, prompt_noise: float = 0.0,
                    anchor=None) -> Callable:
    """instruct_step's losses and the batch's media (responses.media_of; None when nothing encoded them): the
    instruction turns read the media the replayed fine-tuning losses encoded, and so may a caller's own pass
    (`align`'s preference pairs): one encoding of a batch's image and audio per step.
    `anchor`: a frozen model (align's reference) whose next-token distribution over each turn's answer is the
    target instead of the answer's tokens (loss "anchor": the cross-entropy to it, KL plus the anchor's entropy),
    so the turns hold the model where it was rather than train it further."""
    vocabulary = instruction_words(templates)

    def step(model, batch: dict, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], object]:
        losses, media = replay(model, batch, generator)
        losses = dict(losses)
        metas, text = batch["meta"], texts(tokenizer, batch)
        captions = [m.get("caption") for m in metas]
        draws = torch.randint(0, 2**30, (len(metas), 3), generator=generator).tolist()
        rows, contents, targets = [], [], []
        for i, meta in enumerate(metas):
            tasks = tasks_of(meta, captions) if readable(model, meta) else []
            if not tasks:
                continue
            task = tasks[draws[i][0] % len(tasks)]
            train, rng = templates[task]["train"], random.Random(draws[i][2])
            asked_meta, template = noisy_prompt(meta, train[draws[i][1] % len(train)], prompt_noise, vocabulary, rng)
            asked = turn(asked_meta, task, template, captions, n_options, rng)
            rows.append(i)
            contents.append(content(text[i], asked.prompt))
            targets.append(asked.target)
        key = "instruct" if anchor is None else "anchor"
        if not lockstep.needed(bool(rows)):
            losses[key] = zero_loss(model)
            return losses, media
        media = media_of(model, batch) if media is None else media
        if not rows:  # lockstep: another rank's batch has turns; the decoder runs on a placeholder turn here
            placeholder = prompted(model, tokenizer, batch, media, [0], ["?"])
            lockstep.sink(response_logits(model, tokenizer, placeholder, ["?"])[0])
            losses[key] = zero_loss(model)
            return losses, media
        asked = prompted(model, tokenizer, batch, media, rows, contents)
        if anchor is None:
            logp, tokens = logprobs(model, tokenizer, asked, targets)
            losses["instruct"] = -logp.sum() / tokens.sum().clamp(min=1)
            return losses, media
        logits, labels = response_logits(model, tokenizer, asked, targets)
        with torch.no_grad():
            held = prompted(anchor, tokenizer, batch, media_of(anchor, batch), rows, contents)
            reference, _ = response_logits(anchor, tokenizer, held, targets)
        losses["anchor"] = kd_loss(logits, reference, labels, alpha=1.0, temperature=1.0)
        return losses, media

    return step


def asked_rows(model, metas: list[dict], task: str, captions: list[str]) -> list[int]:
    """The batch rows the model can read that have an answer for `task`."""
    return [i for i, m in enumerate(metas) if readable(model, m) and task in tasks_of(m, captions)]


def asked_turns(metas: list[dict], text: list[str], rows: list[int], task: str, template: str,
                captions: list[str], n_options: int, seed: int) -> tuple[list, list[str]]:
    """The rows' `task` turns in `template` and their user contents, as the scores ask them: a record's choice
    options drawn from `captions` with (seed, record id, template), the same draw every time."""
    turns = [turn(metas[i], task, template, captions, n_options, random.Random(f"{seed}:{metas[i]['id']}:{template}"))
             for i in rows]
    return turns, [content(text[i], t.prompt) for i, t in zip(rows, turns, strict=True)]


@torch.no_grad()
def template_scores(model, tokenizer, shards: str, split: str, templates: dict, which: str, n_options: int,
                    batch_size: int, seed: int) -> dict:
    """Exact-match accuracy of greedy answers per task and `which` template ("held_out" or "train") on `split`:
    {task: {"accuracy", "n", "templates": {template: {"accuracy", "n", "missed"}}}} and "mean" over the tasks that
    have records; "missed": the ids of the records a template's prompt got wrong (two models' lists say which records
    they disagree on). A record's choice options are drawn from the split's captions with (seed, record id,
    template)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    captions = [m.get("caption") for m in read_meta(shards, split)]
    hits = {task: {t: [0, 0, []] for t in templates[task][which]} for task in TASKS}
    for batch in tqdm(make_loader(shards, split, batch_size), desc=f"{which} templates ({split})", unit="batch"):
        batch = to_device(batch, device)
        metas, text = batch["meta"], texts(tokenizer, batch)
        media = media_of(model, batch)
        for task in TASKS:
            rows = asked_rows(model, metas, task, captions)
            if not rows:
                continue
            for template in templates[task][which]:
                turns, contents = asked_turns(metas, text, rows, task, template, captions, n_options, seed)
                asked = prompted(model, tokenizer, batch, media, rows, contents)
                answers = respond(model, tokenizer, asked, BUDGETS[task])
                right = [correct(a, t.target) for a, t in zip(answers, turns, strict=True)]
                hits[task][template][0] += sum(right)
                hits[task][template][1] += len(rows)
                hits[task][template][2] += [metas[i]["id"] for i, ok in zip(rows, right, strict=True) if not ok]
    model.train(was_training)
    out = {}
    for task, per in hits.items():
        right, n = sum(h for h, _, _ in per.values()), sum(k for _, k, _ in per.values())
        if n:
            out[task] = {"accuracy": right / n, "n": n,
                         "templates": {t: {"accuracy": h / k if k else None, "n": k, "missed": sorted(missed)}
                                       for t, (h, k, missed) in per.items()}}
    out["mean"] = sum(v["accuracy"] for v in out.values()) / len(out) if out else None
    return out


def cut_prompts(model, tokenizer, shards: str, split: str, templates: dict, n_options: int, seed: int,
                batch_size: int = 64) -> dict:
    """How many of `split`'s prompts of each template, train and held-out, are longer than the model reads whole
    (responses.prompt_width): such a prompt is answered from its end, its start (the record's text, the first
    listed options) unseen. {task: {template: {"cut": k, "n": n}}} for the templates with k > 0; the prompts are
    the ones template_scores asks (the same choice options). Nothing is cut for DeepSeek-VL: {}."""
    width = prompt_width(model)
    if width is None:
        return {}
    captions = [m.get("caption") for m in read_meta(shards, split)]
    counts: dict = {}
    for batch in make_loader(shards, split, batch_size):
        metas, text = batch["meta"], texts(tokenizer, batch)
        for task in TASKS:
            rows = asked_rows(model, metas, task, captions)
            for template in (*templates[task]["train"], *templates[task]["held_out"]):
                ids = chat_prompt_ids(tokenizer, asked_turns(metas, text, rows, task, template, captions, n_options,
                                                             seed)[1])
                count = counts.setdefault(task, {}).setdefault(template, [0, 0])
                count[0] += sum(len(p) > width for p in ids)
                count[1] += len(ids)
    return {task: {t: {"cut": k, "n": n} for t, (k, n) in per.items() if k}
            for task, per in counts.items() if any(k for k, _ in per.values())}


def cut_lines(cut: dict, width: int | None, split: str) -> list[str]:
    """One line per template whose prompts are cut (cut_prompts), for a stage's log."""
    return [f"{n_cut['cut']} of {n_cut['n']} {split} prompts of {task} template {template!r} are longer than the "
            f"{width} tokens the decoder reads whole: it answers them from their end"
            for task, per in cut.items() for template, n_cut in per.items()]


def template_changes(before: dict, after: dict) -> dict:
    """Per template scored by both models (two template_scores outputs on the same records): {task: {template:
    {"lost", "gained", "p"}}}, the records right before and wrong after, the reverse, and the exact McNemar test's
    one-sided p-value that the template fell (binomial on the changed records; 1.0 when none was lost). Templates
    scored without their missed records (an older run's) are left out."""
    from scipy.stats import binomtest  # scipy.stats takes a while to import: only where the test runs

    out: dict = {}
    for task, row in after.items():
        if not isinstance(row, dict) or not isinstance(before.get(task), dict):
            continue
        for template, scores in row["templates"].items():
            prior = before[task]["templates"].get(template, {})
            if "missed" not in scores or "missed" not in prior:
                continue
            now, was = set(scores["missed"]), set(prior["missed"])
            lost, gained = len(now - was), len(was - now)
            p = binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue if lost else 1.0
            out.setdefault(task, {})[template] = {"lost": lost, "gained": gained, "p": p}
    return out
