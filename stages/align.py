"""Stage `align`: preference tuning (docs/model.md "Alignment") of the instruction-tuned
model (models/instruct) on the pairs table `align.pairs` (trimodal/alignment/pairs.py: the preferences stage's, or
yours) -> the teacher, models/teacher/ (+ tokenizer), which distill, quantize and evaluate take from here.

    method: dpo (default)  DPO against the frozen instruction-tuned model (the reference): per train pair, the
                           policy's and the reference's log-probabilities of chosen and rejected (model/preference.py)
    method: ppo            phase `reward`: a reward model trained on the train pairs with the Bradley-Terry loss,
                           its reward r = beta log(pi_rm / pi_ref) (DPO's parametrisation of a reward model); phase
                           `ppo`: the policy samples a response to each train pair's prompt, r minus kl_coef times
                           its log-ratio to the reference is its reward, advantages are rewards against the batch's
                           mean (no critic), loss = PPO's clipped surrogate with one optimisation pass per sample
                           (the ratio is 1 at the sample and the clip bounds the step, as GRPO's default)

Measured on the held-out (val) pairs, before (the reference) and after: preference accuracy (the chosen response
more likely than the rejected), DPO's reward margin and accuracy; and the task scores on val against
instruct's (metrics/details/instruct.json): `max_task_drop` is the largest fall of a headline score.
-> metrics/align.json, metrics/details/align.json (per task; quarantined rows of the table with their reasons), and
the before / after tables in reports/alignment.md.
"""
from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoTokenizer

from trimodal.alignment.instruction_tasks import instruct_losses, template_changes, template_scores
from trimodal.alignment.instructions import check_templates, content
from trimodal.alignment.pairs import read_pairs, reasons
from trimodal.alignment.responses import Prompted, logprobs, media_of, prompted, readable, respond
from trimodal.atomic import atomic_open, write_json
from trimodal.config_errors import run_main
from trimodal.data.batches import to_device
from trimodal.data.loader import make_loader, read_index
from trimodal.evaluation.predict import val_scores
from trimodal.evaluation.scoring import headline
from trimodal.model import lockstep
from trimodal.model.chat import texts, zero_loss
from trimodal.model.families import family_for, load_pretrained
from trimodal.model.preference import dpo_loss, group_advantages, implicit_rewards, ppo_clip_loss
from trimodal.params import load_params
from trimodal.training.checkpoint import fingerprint
from trimodal.training.distributed import launch
from trimodal.training.models import file_digest, save
from trimodal.training.trainer import TrainJob, checkpoint_dir, clear_checkpoints, fit

METHODS = ("dpo", "ppo")
DPO_MONITORS = ("reward_margin", "reward_accuracy")
PPO_MONITORS = ("mean_reward", "kl")
ACCURACIES = ("vqa_accuracy", "cls_accuracy", "cls_macro_f1", "caption_exact")  # max_task_drop, in points


def by_record(pairs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for pair in pairs:
        out.setdefault(pair["inputs"], []).append(pair)
    return out


def frozen_copy(model, device: torch.device):
    """A model that only scores (the reference, the reward model): eval mode, no gradients, on `device`."""
    if next(model.parameters()).device != device:
        model.to(device)
    return model.eval().requires_grad_(False)


def asked_pairs(model, tokenizer, batch: dict, pairs: dict[str, list[dict]], generator: torch.Generator | None
                ) -> tuple[list[int], list[dict], list[str]]:
    """(rows, one pair per row, the rows' user turns): with a generator each record's pair is drawn, without
    it every pair of every record is asked (a row repeats)."""
    metas, text = batch["meta"], texts(tokenizer, batch)
    draws = torch.randint(0, 2**30, (len(metas),), generator=generator).tolist() if generator is not None else None
    rows, chosen = [], []
    for i, meta in enumerate(metas):
        mine = pairs.get(meta["id"], []) if readable(model, meta) else []
        picked = [mine[draws[i] % len(mine)]] if mine and draws is not None else mine
        rows += [i] * len(picked)
        chosen += picked
    return rows, chosen, [content(text[i], p["prompt"]) for i, p in zip(rows, chosen, strict=True)]


def pair_logprobs(model, tokenizer, batch: dict, rows: list[int], contents: list[str], pairs: list[dict],
                  media=None) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(chosen), log pi(rejected) of each pair: the prompt is encoded once for both (`media`: the batch's,
    already encoded by this model; None: encode them)."""
    asked = prompted(model, tokenizer, batch, media_of(model, batch) if media is None else media, rows, contents)
    chosen, _ = logprobs(model, tokenizer, asked, [p["chosen"] for p in pairs])
    rejected, _ = logprobs(model, tokenizer, asked, [p["rejected"] for p in pairs])
    return chosen, rejected


def preference_step(tokenizer, reference, pairs: dict[str, list[dict]], beta: float, key: str,
                    replay: Callable | None = None) -> Callable:
    """DPO (key "dpo") or the reward model's Bradley-Terry loss on r = beta log(pi / pi_ref) (key "reward"): the
    same loss (DPO's insight), logged as what it trains; reward margin and accuracy as monitors. `replay`:
    losses to add and the media they encoded (instruction_tasks.instruct_losses: the instruction turns and the
    fine-tuning objectives, so the evaluation's formats do not regress)."""

    @lockstep.aware
    def step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        frozen = frozen_copy(reference, batch["image"].device)  # before replay: an anchored replay reads it too
        losses, media = replay(model, batch, generator) if replay is not None else ({}, None)
        rows, picked, contents = asked_pairs(model, tokenizer, batch, pairs, generator)
        if not lockstep.needed(bool(rows)):
            return {**losses, key: zero_loss(model)}
        if not rows:  # lockstep: another rank's batch has pairs; the model scores a placeholder pair here
            lockstep.sink(pair_logprobs(model, tokenizer, batch, [0], ["?"], [{"chosen": "?", "rejected": "?"}],
                                        media))
            return {**losses, key: zero_loss(model)}
        policy = pair_logprobs(model, tokenizer, batch, rows, contents, picked, media)
        with torch.no_grad():
            ref = pair_logprobs(frozen, tokenizer, batch, rows, contents, picked)
        loss, chosen, rejected = dpo_loss(*policy, *ref, beta)
        margin = (chosen - rejected).detach()
        return {**losses, key: loss, "reward_margin": margin.mean(), "reward_accuracy": margin.gt(0).float().mean()}

    return step


def ppo_step(tokenizer, reference, reward_model, pairs: dict[str, list[dict]], beta: float, kl_coef: float,
             clip: float, max_new_tokens: int, replay: Callable | None = None) -> Callable:
    """One PPO pass per sampled response: sample (the step's generator seeds it), reward by the reward model
    minus the KL penalty, advantages against the batch's mean, the clipped surrogate (+ `replay`'s losses)."""

    def step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        device = batch["image"].device
        frozen = frozen_copy(reference, device)  # before replay: an anchored replay reads it too
        losses, media = replay(model, batch, generator) if replay is not None else ({}, None)
        rows, _, contents = asked_pairs(model, tokenizer, batch, pairs, generator)
        if not rows:
            return {**losses, "ppo": zero_loss(model)}
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model.eval()
            with torch.no_grad():  # the sampling pass's encoding needs no graph
                samples = respond(model, tokenizer, prompted(model, tokenizer, batch, media_of(model, batch), rows,
                                                             contents), max_new_tokens, sample=True)
            model.train()
        asked = prompted(model, tokenizer, batch, media_of(model, batch) if media is None else media, rows, contents)
        policy, _ = logprobs(model, tokenizer, asked, samples)
        with torch.no_grad():
            ref = score(frozen, tokenizer, batch, rows, contents, samples)
            rm = score(frozen_copy(reward_model, device), tokenizer, batch, rows, contents, samples)
            reward = implicit_rewards(rm, ref, beta)
            kl = policy.detach() - ref
            advantages = group_advantages(reward - kl_coef * kl)
        return {**losses, "ppo": ppo_clip_loss(policy, policy.detach(), advantages, clip),
                "mean_reward": reward.mean(), "kl": kl.mean()}

    return step


def score(model, tokenizer, batch: dict, rows: list[int], contents: list[str], responses: list[str]) -> torch.Tensor:
    asked: Prompted = prompted(model, tokenizer, batch, media_of(model, batch), rows, contents)
    return logprobs(model, tokenizer, asked, responses)[0]


@torch.no_grad()
def pair_scores(model, reference, tokenizer, shards: str, pairs: list[dict], batch_size: int, beta: float) -> dict:
    """On `pairs` (held out): preference accuracy of the model and of the reference (chosen more likely than
    rejected), and the model's DPO reward margin and accuracy against the reference; per task too."""
    device = next(model.parameters()).device
    reference = frozen_copy(reference, device)
    grouped, rows_out = by_record(pairs), []
    split = pairs[0]["split"] if pairs else "val"
    for batch in make_loader(shards, split, batch_size, keep=lambda meta: meta["id"] in grouped):
        batch = to_device(batch, device)
        rows, picked, contents = asked_pairs(model, tokenizer, batch, grouped, None)
        if not rows:
            continue
        pc, pr = pair_logprobs(model, tokenizer, batch, rows, contents, picked)
        rc, rr = pair_logprobs(reference, tokenizer, batch, rows, contents, picked)
        margin = implicit_rewards(pc, rc, beta) - implicit_rewards(pr, rr, beta)
        rows_out += [{"task": p.get("task", "all"), "after": bool(a), "before": bool(b), "margin": float(m)}
                     for p, a, b, m in zip(picked, (pc > pr).tolist(), (rc > rr).tolist(), margin.tolist(),
                                           strict=True)]
    return {task: summarise([r for r in rows_out if task == "overall" or r["task"] == task])
            for task in ["overall", *sorted({r["task"] for r in rows_out})]}


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    return {"pairs": n, "preference_accuracy_before": sum(r["before"] for r in rows) / n if n else None,
            "preference_accuracy": sum(r["after"] for r in rows) / n if n else None,
            "reward_margin": sum(r["margin"] for r in rows) / n if n else None,
            "reward_accuracy": sum(r["margin"] > 0 for r in rows) / n if n else None}


def task_changes(before: dict, after: dict) -> dict:
    """Each headline score before -> after (val, overall), and the largest fall of an accuracy in points (the
    exact-match and F1 scores, fractions x 100)."""
    changes = {k: {"before": before[k], "after": after[k]} for k in headline(after) if k in before}
    drops = [100 * (before[k] - after[k]) for k in ACCURACIES if k in changes]
    return {"scores": changes, "max_task_drop": max(drops) if drops else 0.0}


def table(rows: list[list], header: list[str]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)])


def report(method: str, pairs: dict, changes: dict, templates: dict) -> str:
    """reports/alignment.md: the before / after tables of instruct and align on the val split."""
    before, after = templates["before"], templates["after"]
    tasks = [t for t in after if t != "mean"]
    return "\n\n".join([
        f"# Alignment on val (align.method: {method})",
        "## Held-out preference pairs (before: the instruction-tuned model, after: the teacher)",
        table([[task, row["pairs"], row["preference_accuracy_before"], row["preference_accuracy"],
                row["reward_margin"], row["reward_accuracy"]] for task, row in pairs.items()],
              ["task", "pairs", "preference accuracy before", "after", "DPO reward margin", "reward accuracy"]),
        "## Task scores (val, overall; before: instruct's model)",
        table([[k, v["before"], v["after"]] for k, v in changes["scores"].items()], ["score", "before", "after"])
        + f"\n\nLargest fall of an accuracy: {changes['max_task_drop']:.2f} points.",
        "## Held-out instruction templates, exact match (before: instruct's model)",
        table([[t, before.get(t, {}).get("accuracy"), after[t]["accuracy"], after[t]["n"]] for t in tasks]
              + [["mean", before.get("mean"), after["mean"], None]], ["task", "before", "after", "n"]),
        "## Held-out instruction templates, record by record (lost: right before align, wrong after; p: exact "
        "McNemar, one-sided, that the template fell)",
        table([[task, template, c["lost"], c["gained"], c["p"]]
               for task, per in templates["changes"].items() for template, c in per.items()],
              ["task", "template", "records lost", "gained", "p"]),
    ]) + "\n"


def train(params, model, reference, tokenizer, pairs: dict[str, list[dict]], summary: dict):
    paths, p = params.paths, params.align
    keep = lambda meta: meta["id"] in pairs  # noqa: E731
    base = fingerprint(p, params.instructions, params.seed, read_index(p.shards), file_digest(Path(paths.instructed)),
                       Path(p.pairs).read_bytes())
    # the instruction turns and, through them, the fine-tuning objectives keep training (stages/instruct.py's
    # step): DPO alone on the pairs lowers what the model says to prompts outside them
    asked = params.instructions
    replay = instruct_losses(tokenizer, asked.templates, asked.options, family_for(model).replay(tokenizer),
                             asked.prompt_noise, reference if p.anchor else None) if p.replay else None
    if p.method == "dpo":
        return fit(model, preference_step(tokenizer, reference, pairs, p.beta, "dpo", replay),
                   TrainJob.of(params, "align", base), keep=keep, summary=summary, monitors=DPO_MONITORS), None
    reward = TrainJob.of(params, "align", fingerprint("reward", base), replace(p, steps=p.ppo.reward_steps))
    reward_model = fit(copy.deepcopy(model), preference_step(tokenizer, reference, pairs, p.beta, "reward"), reward,
                       phase="reward", keep=keep, summary=summary, every_rank=True, monitors=DPO_MONITORS)
    policy = fit(model, ppo_step(tokenizer, reference, reward_model, pairs, p.beta, p.ppo.kl_coef, p.ppo.clip,
                                 p.ppo.max_new_tokens, replay), TrainJob.of(params, "align", fingerprint("ppo", base)),
                 phase="ppo", keep=keep, monitors=PPO_MONITORS)
    return policy, reward_model


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    params = load_params("params.yaml", argv)
    paths, p = params.paths, params.align
    if p.method not in METHODS:
        raise ValueError(f"align.method must be one of {list(METHODS)}, got {p.method!r}")
    if p.method == "ppo" and params.trainer.devices > 1 and params.trainer.strategy == "fsdp":
        raise ValueError("align.method=ppo hands its reward model on to the PPO phase, which needs trainer.strategy="
                         "ddp with trainer.devices > 1 (FSDP's sharded weights are not gathered on every rank)")
    check_templates(params.instructions.templates, params.instructions.options)
    if launch(params.trainer.devices, "stages.align", argv):
        return
    by_split, quarantined = read_pairs(p.pairs, p.shards)
    train_pairs, held_out = by_split.get("train", []), by_split.get("val", [])
    if not train_pairs:
        raise ValueError(f"align: no usable pair of a train record in {p.pairs} ({len(quarantined)} rows "
                         f"quarantined: {reasons(quarantined)}): run `dvc repro preferences` or fix the table")
    tokenizer = AutoTokenizer.from_pretrained(paths.instructed)
    model, reference = load_pretrained(paths.instructed), load_pretrained(paths.instructed)
    summary = {"train_pairs": len(train_pairs), "quarantined_pairs": len(quarantined)}
    model, reward_model = train(params, model, reference, tokenizer, by_record(train_pairs), summary)
    if model is None:  # under torchrun, rank 0 alone evaluates and saves
        return
    pairs = pair_scores(model, reference, tokenizer, p.shards, held_out, p.eval_batch_size, p.beta)
    if reward_model is not None:
        pairs["reward_model"] = pair_scores(reward_model, reference, tokenizer, p.shards, held_out,
                                            p.eval_batch_size, p.beta)["overall"]
    scores = val_scores(model, tokenizer, p.shards)
    instructed = json.loads((Path(paths.details) / "instruct.json").read_text())
    changes = task_changes(instructed["val"]["overall"], scores["overall"])
    templates = template_scores(model, tokenizer, p.shards, "val", params.instructions.templates, "held_out",
                                params.instructions.options, p.eval_batch_size, params.seed)
    held_out_templates = {"before": instructed["held_out"]["after"], "after": templates,
                          "changes": template_changes(instructed["held_out"]["after"], templates)}
    write_json(Path(paths.details) / "align.json", {
        "method": p.method, "held_out_pairs": pairs, "tasks": changes, "held_out_templates": held_out_templates,
        "val": scores, "quarantined": quarantined})
    overall = pairs["overall"]
    metrics = {"method": p.method, "held_out_pairs": overall["pairs"], **{k: v for k, v in overall.items()
                                                                          if k != "pairs"},
               "max_task_drop": changes["max_task_drop"], "held_out_templates": templates["mean"],
               **headline(scores["overall"]), **summary}
    write_json(Path(paths.metrics) / "align.json", metrics)
    with atomic_open(Path(paths.alignment_report), "w") as f:
        f.write(report(p.method, pairs, changes, held_out_templates))
    save(model, tokenizer, Path(paths.teacher))
    clear_checkpoints(checkpoint_dir(paths, "align"))
    print("align: " + json.dumps(metrics))


if __name__ == "__main__":
    run_main(main)
