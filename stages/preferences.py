"""Stage `preferences`: the preference pairs table (trimodal/alignment/pairs.py) from the data and the instruction-tuned
model (models/instruct) -> data/preferences/pairs.jsonl, which `align` trains on (docs/model.md "Alignment").

Per readable record of `preferences.splits`, one pair, reproducibly (every choice a hash of (seed, record id)):
one of the record's tasks (trimodal/alignment/instructions.py), asked with one of its templates (train templates for
the train split, held-out ones for the others, so the held-out pairs are new prompts too), chosen = the
record's answer, and rejected =
    sample       the model's own greedy answer, when it is wrong: what preference tuning should push down
    corruption   when the model is right (or answers nothing): a controlled wrong answer. With probability
                 `other_task`, the record's own answer to another of its tasks (its caption asked for a colour,
                 its class asked for a caption), or the right answer run on into it ("blue circle" for "blue"):
                 the task confusions a model taught several tasks makes on a prompt it has not seen; otherwise
                 one of the same kind: another record's caption / answer / class of the split, or another of the
                 listed captions (choice)
A record none of whose tasks offers a wrong answer of its kind gets no pair (counted in the log). Pairs,
how many were the model's own answers, and the records the model cannot read, per split -> metrics/preferences.json.
"""
from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from trimodal.alignment.instruction_tasks import BUDGETS
from trimodal.alignment.instructions import Turn, check_templates, content, correct, tasks_of, turn
from trimodal.alignment.pairs import write_pairs
from trimodal.alignment.responses import media_of, prompted, readable, respond
from trimodal.atomic import write_json
from trimodal.config_errors import ConfigError, run_main
from trimodal.data.batches import to_device
from trimodal.data.loader import make_loader, read_meta
from trimodal.model.chat import texts
from trimodal.model.families import load_pretrained
from trimodal.params import load_params

ANSWER_KEYS = {"caption": "caption", "vqa": "answer", "classify": "label"}  # a task -> the record's key answering it


def alternatives(metas: list[dict]) -> dict[str, list[str]]:
    """The split's wrong answers of each kind to draw corruptions from (sorted: the draw is reproducible)."""
    return {"caption": sorted({m["caption"] for m in metas if m.get("caption")}),
            "vqa": sorted({m["answer"] for m in metas if m.get("answer")}),
            "classify": sorted({m["label"] for m in metas if m.get("label") and m.get("label_index", 0) >= 0})}


def target_of(meta: dict, task: str) -> str:
    return meta[ANSWER_KEYS[task]]


def run_on(target: str, other: str) -> str:
    """`other` from the target's words on, when it holds them and goes on after them ("blue", "a blue circle" ->
    "blue circle": the right answer that does not stop), else `other` as it is."""
    words, said = other.split(), target.lower().split()
    lowered = [w.lower() for w in words]
    for i in range(len(words) - len(said)):
        if lowered[i:i + len(said)] == said:
            return " ".join(words[i:])
    return other


def other_answers(meta: dict, task: str) -> list[str]:
    """The record's answers to its other tasks, wrong for `task`: a question answered with the caption or the class,
    or answered right and run on into the caption."""
    target = target_of(meta, task)
    found = [run_on(target, meta[key]) for other, key in ANSWER_KEYS.items()
             if other != task and meta.get(key) and (other != "classify" or meta.get("label_index", 0) >= 0)]
    return sorted({a for a in found if not correct(a, target)})


def corruption(asked: Turn, meta: dict, pool: dict[str, list[str]], other_task: float,
               rng: random.Random) -> str | None:
    """A wrong answer: with probability `other_task` the record's answer to another of its tasks, else one of the
    task's own kind (None: the split has none)."""
    if asked.task == "choice":
        wrong = [c for c in asked.listed if not correct(c, asked.target)]
        return rng.choice(wrong) if wrong else None
    confused = other_answers(meta, asked.task)
    if confused and rng.random() < other_task:
        return rng.choice(confused)
    wrong = [a for a in pool[asked.task] if not correct(a, asked.target)]
    return rng.choice(wrong) if wrong else None


def asked_of(meta: dict, split: str, templates: dict, captions: list[str], pool: dict[str, list[str]],
             n_options: int, seed: int) -> Turn | None:
    """The record's one turn: task (one with a wrong answer to offer) and template drawn from (seed, record id)."""
    # a task whose answer has no wrong alternative in the split (every answer "yes") could end without a pair
    tasks = [t for t in tasks_of(meta, captions) if t == "choice" or any(not correct(a, target_of(meta, t))
                                                                         for a in pool[t])]
    if not tasks:
        return None
    rng = random.Random(f"{seed}:preferences:{meta['id']}")
    task = tasks[rng.randrange(len(tasks))]
    choices = templates[task]["train" if split == "train" else "held_out"]
    return turn(meta, task, choices[rng.randrange(len(choices))], captions, n_options, rng)


@torch.no_grad()
def split_pairs(model, tokenizer, shards: str, split: str, templates: dict, n_options: int, batch_size: int,
                other_task: float, seed: int) -> tuple[list[dict], Counter]:
    """The split's pairs and counts (sample / corruption / no_alternative / unreadable)."""
    metas = read_meta(shards, split)
    captions, pool = [m.get("caption") for m in metas], alternatives(metas)
    pairs, counts = [], Counter()
    device = next(model.parameters()).device
    for batch in tqdm(make_loader(shards, split, batch_size), desc=f"preferences ({split})", unit="batch"):
        batch = to_device(batch, device)
        rows, text = batch["meta"], texts(tokenizer, batch)
        media = media_of(model, batch)
        asked = {}
        for i, meta in enumerate(rows):
            if not readable(model, meta):
                counts["unreadable"] += 1
                continue
            one = asked_of(meta, split, templates, captions, pool, n_options, seed)
            if one is not None:
                asked[i] = one
        for task in {a.task for a in asked.values()}:
            idx = [i for i, a in asked.items() if a.task == task]
            answers = respond(model, tokenizer, prompted(model, tokenizer, batch, media, idx,
                                                         [content(text[i], asked[i].prompt) for i in idx]),
                              BUDGETS[task])
            for i, answer in zip(idx, answers, strict=True):
                one, meta = asked[i], rows[i]
                if answer and not correct(answer, one.target):
                    rejected, source = answer, "sample"
                else:
                    rejected = corruption(one, meta, pool, other_task, random.Random(f"{seed}:corrupt:{meta['id']}"))
                    source = "corruption"
                if rejected is None:
                    counts["no_alternative"] += 1
                    continue
                counts[source] += 1
                pairs.append({"id": f"{meta['id']}:{task}", "inputs": meta["id"], "task": task,
                              "prompt": one.prompt, "chosen": one.target, "rejected": rejected, "source": source})
    return sorted(pairs, key=lambda p: p["id"]), counts


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else list(argv))
    check_templates(params.instructions.templates, params.instructions.options)
    paths, p = params.paths, params.preferences
    if not 0 <= p.other_task <= 1:
        raise ConfigError(f"preferences.other_task must be within [0, 1], got {p.other_task}")
    tokenizer = AutoTokenizer.from_pretrained(paths.instructed)
    model = load_pretrained(paths.instructed).eval()
    pairs, summary = [], {}
    for split in p.splits:
        found, counts = split_pairs(model, tokenizer, p.shards, split, params.instructions.templates,
                                    params.instructions.options, p.batch_size, p.other_task, params.seed)
        pairs += found
        summary.update({f"{split}_pairs": len(found), f"{split}_model_samples": counts["sample"],
                        f"{split}_unreadable": counts["unreadable"]})
        print(f"preferences: {split}: {len(found)} pairs, rejected = the model's own answer {counts['sample']}, a "
              f"corruption {counts['corruption']}; records without a wrong alternative {counts['no_alternative']}, "
              f"unreadable by the model {counts['unreadable']}")
    write_pairs(Path(paths.preferences), pairs)
    write_json(Path(paths.metrics) / "preferences.json", summary)
    print("preferences: " + json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
