"""The DeepSeek-VL family on the shards (docs/model.md "DeepSeek-VL"): a record as text for a causal LM,
the paper's three training stages' steps, the distillation step, and predictions as the records that
trimodal/evaluation/scoring.py scores, so the family is trained and scored on the same data as the trimodal one.

The family reads an image and text, not audio: a record's audio is ignored, and a record with audio only offers
it nothing, so every stage skips it (`usable`) and says how many it skipped (`skipped`).

    plain     <s> {text} </s>                       adaptor warm-up (the caption, after the image) and joint
                                                    pretraining (language-only: the record's text)
    chat      <s> User: {text} {prompt}\\n\\nAssistant: {target}</s>      fine-tuning, one turn per task:
              ce   prompt "Describe it."                      target the caption
              vqa  prompt the question                        target the answer
              cls  prompt "What is it? Answer with one word." target the label's name
{text} is the record's text input (absent: nothing); the turn is rendered by the tokenizer's chat template
(stages/tokenizer.py). The loss counts the target's tokens only; the visual tokens come first
(model/deepseek_vl/modeling.py) and are computed once per batch for all of its turns.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from trimodal.data.batches import to_device
from trimodal.data.loader import read_meta
from trimodal.evaluation.generation import ANSWER_TOKENS
from trimodal.evaluation.scoring import record_of
from trimodal.model import lockstep
from trimodal.model.chat import (
    IGNORE,
    chat_prompt_ids,
    encode,
    left_padded,
    right_padded,
    shifted,
    texts,
    zero_loss,
)
from trimodal.model.losses import cross_entropy, kd_loss

PROMPTS = {"ce": "Describe it.", "cls": "What is it? Answer with one word."}
TASKS = ("ce", "vqa", "cls")  # the fine-tuning turns, named as the trainer's objectives (config.loss_weights)


def usable(meta: dict) -> bool:
    """A record the family can read: it has an image or text (audio alone: no)."""
    return bool({"image", "text"} & set(meta.get("modalities", ())))


def captioned_image(meta: dict) -> bool:
    """The adaptor warm-up's records: image-text pairs."""
    return "image" in meta.get("modalities", ()) and bool(meta.get("caption"))


def skipped(shards: str, split: str) -> dict[str, int]:
    """How many of a split's records the family reads, and how many it skips (audio only)."""
    metas = read_meta(shards, split)
    unusable = sum(not usable(m) for m in metas)
    return {f"{split}_records": len(metas), f"{split}_skipped_audio_only": unusable}


def target(meta: dict, task: str) -> str | None:
    if task == "ce":
        return meta.get("caption") or None
    if task == "vqa":
        return meta.get("answer") or None
    name = meta.get("label")
    return name if name and meta.get("label_index", -1) >= 0 else None


def prompt(tokenizer, text: str, meta: dict, task: str) -> str:
    """The `task` turn's user content: the record's text input, then the question or the task's prompt."""
    ask = meta.get("question") if task == "vqa" else PROMPTS[task]
    return f"{text} {ask}".strip()


def prompt_ids(tokenizer, metas: list[dict], text: list[str], rows: list[int], task: str) -> list[list[int]]:
    """<s> + the `task` prompt (user turn, assistant turn opened) of each of `rows`, as token ids."""
    return chat_prompt_ids(tokenizer, [prompt(tokenizer, text[i], metas[i], task) for i in rows])


class Turns:
    """One batch's turns of one kind for one model: the rows that have them, as model inputs and labels."""

    def __init__(self, rows: list[int], ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None):
        self.rows, self.ids, self.mask, self.labels = rows, ids, mask, labels


def plain_turns(tokenizer, strings: dict[int, str], device: torch.device) -> Turns | None:
    """<s> text </s> rows (row -> text), every token a target (the LM loss of warm-up and joint pretraining)."""
    rows = [i for i, s in strings.items() if s]
    if not rows:
        return None
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokens = encode(tokenizer, [strings[i] for i in rows])
    ids, mask, labels = right_padded([[] for _ in rows], [[bos, *t, eos] for t in tokens], tokenizer.pad_token_id,
                                     device)
    return Turns(rows, ids, mask, labels)


def chat_turns(tokenizer, batch: dict, task: str, text: list[str], device: torch.device,
               with_targets: bool = True) -> Turns | None:
    """The batch's `task` turns (rows with the task's target, or, without targets, every usable row): right-padded
    prompt + target with labels on the target, or left-padded prompts for generation."""
    metas = batch["meta"]
    rows = [i for i, m in enumerate(metas) if usable(m) and (target(m, task) or not with_targets)]
    if task == "vqa" and not with_targets:
        rows = [i for i in rows if metas[i].get("question")]
    if not rows:
        return None
    prompts = prompt_ids(tokenizer, metas, text, rows, task)
    if not with_targets:
        return Turns(rows, *left_padded(prompts, tokenizer.pad_token_id, device))
    targets = [[*t, tokenizer.eos_token_id] for t in encode(tokenizer, [" " + target(metas[i], task) for i in rows])]
    return Turns(rows, *right_padded(prompts, targets, tokenizer.pad_token_id, device))


def visual_of(model, batch: dict, wanted: bool = True) -> torch.Tensor | None:
    """The batch's visual tokens, once for all its turns (None: not `wanted`, or no sample has an image). In
    lockstep (trimodal/model/lockstep.py) a rank whose batch has no image encodes a placeholder when another's has."""
    local = wanted and bool(batch["image_present"].any())
    if not lockstep.needed(local):
        return None
    if local:
        return model.visual_tokens(batch["image"])
    # no visual positions here, yet not None: a caller that encodes when it finds None (responses.media_of) must not
    # decide again on this rank alone; the placeholder's tokens are tied to them, where the LLM reads them
    empty = batch["image"].new_zeros(len(batch["image"]), 0, model.get_input_embeddings().embedding_dim)
    return lockstep.tie(empty, model.visual_tokens(batch["image"][:1]))


def visual_inputs(turns: Turns, visual: torch.Tensor | None, batch: dict) -> dict:
    """The model's visual arguments for the turns' rows of the batch (none: no sample has an image)."""
    rows = torch.tensor(turns.rows, device=turns.ids.device)
    return {} if visual is None else {"visual": visual[rows], "image_present": batch["image_present"][rows]}


def run(model, turns: Turns, visual: torch.Tensor | None, batch: dict) -> torch.Tensor:
    """Logits of the turns' text positions [n, L, V] (the visual positions before them dropped)."""
    logits = model(turns.ids, turns.mask, **visual_inputs(turns, visual, batch)).logits
    return logits[:, -turns.ids.shape[1]:]


def lm_loss(model, turns: Turns | None, visual: torch.Tensor | None, batch: dict) -> torch.Tensor | None:
    if not lockstep.needed(turns is not None):
        return None
    if turns is None:  # another rank has such turns: the LLM runs on a placeholder here
        lockstep.sink(placeholder_logits(model, batch))
        return None
    return cross_entropy(*shifted(run(model, turns, visual, batch), turns.labels))


def placeholder_logits(model, batch: dict) -> torch.Tensor:
    """The LLM on one token (<s>), for a turn another rank's batch has and this one's lacks (lockstep)."""
    ids = torch.full((1, 1), model.config.bos_token_id, dtype=torch.long, device=batch["image"].device)
    return model(ids, torch.ones_like(ids)).logits


def warmup_step(tokenizer) -> Callable:
    """Stage 1: the caption after the image ([visual; <s> caption </s>]); only the adaptor trains (params)."""

    @lockstep.aware
    def step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        captions = {i: m["caption"] for i, m in enumerate(batch["meta"]) if captioned_image(m)}
        turns = plain_turns(tokenizer, captions, batch["image"].device)
        visual = visual_of(model, batch, turns is not None)
        loss = lm_loss(model, turns, visual, batch)
        return {"lm": loss if loss is not None else zero_loss(model)}

    return step


def joint_step(tokenizer) -> Callable:
    """Stage 2: a language-only batch is plain text (no image); a batch of records with an image is the caption
    (or, without one, the text) after the image. The trainer picks the batch kinds (pretrain.language_fraction)."""

    @lockstep.aware
    def step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        text = texts(tokenizer, batch)
        device = batch["image"].device
        strings = {i: (m.get("caption") or text[i]) if "image" in m.get("modalities", ()) else text[i]
                   for i, m in enumerate(batch["meta"]) if usable(m)}
        turns = plain_turns(tokenizer, strings, device)
        visual = visual_of(model, batch, turns is not None)
        loss = lm_loss(model, turns, visual, batch)
        return {"lm": loss if loss is not None else zero_loss(model)}

    return step


def sft_step(tokenizer) -> Callable:
    """Stage 3: the ce / vqa / cls chat turns of every record that has their targets, the images encoded once."""
    losses_of = sft_losses(tokenizer)

    @lockstep.aware
    def step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return losses_of(model, batch, generator)[0]

    return step


def sft_losses(tokenizer) -> Callable:
    """sft_step's losses and the visual tokens they were computed on (None when no turn needed them), so a
    step that asks more of the same images (`instruct`) does not encode them again."""

    def step(model, batch: dict, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        text, device = texts(tokenizer, batch), batch["image"].device
        turns = {task: chat_turns(tokenizer, batch, task, text, device) for task in TASKS}
        visual = visual_of(model, batch, any(turns.values()))
        losses = {task: lm_loss(model, t, visual, batch) for task, t in turns.items()}
        return {task: loss for task, loss in losses.items() if loss is not None} or {"ce": zero_loss(model)}, visual

    return step


def kd_step(teacher, tokenizer, alpha: float, temperature: float) -> Callable:
    """Distillation on the fine-tuning turns: each task's next-token distributions, the teacher's tempered ones
    (alpha) and the targets (1 - alpha), with model.losses.kd_loss (docs/model.md "Distillation and
    quantization"). Teacher and student share the tokenizer, so their vocabularies and positions line up."""

    @lockstep.aware
    def step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        text, device = texts(tokenizer, batch), batch["image"].device
        turns = {task: chat_turns(tokenizer, batch, task, text, device) for task in TASKS}
        if not lockstep.needed(any(turns.values())):
            return {"ce": zero_loss(model)}
        with torch.no_grad():  # the teacher is not sharded: it runs what this rank's batch needs
            taught_visual = teacher.visual_tokens(batch["image"]) if batch["image_present"].any() else None
            taught = {task: run(teacher, t, taught_visual, batch) for task, t in turns.items() if t is not None}
        visual = visual_of(model, batch)
        losses = {}
        for task, t in turns.items():
            if not lockstep.needed(t is not None):
                continue
            if t is None:  # lockstep: another rank's batch has this turn
                lockstep.sink(placeholder_logits(model, batch))
                continue
            logits, targets = shifted(run(model, t, visual, batch), t.labels)
            losses[task] = kd_loss(logits, taught[task][:, :-1], targets, alpha, temperature)
        return losses or {"ce": zero_loss(model)}

    return step


@torch.no_grad()
def generated(model, tokenizer, turns: Turns, visual: torch.Tensor | None, batch: dict,
              max_new_tokens: int, sample: bool = False) -> list[str]:
    """Greedy continuations of the prompts, or with `sample` drawn (temperature 1, no top-k; torch's global
    generator)."""
    search = {"do_sample": True, "top_k": 0} if sample else {"do_sample": False}
    new = model.generate(input_ids=turns.ids, attention_mask=turns.mask, max_new_tokens=max_new_tokens,
                         num_beams=1, **search, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, **visual_inputs(turns, visual, batch))
    return [s.strip() for s in tokenizer.batch_decode(new, skip_special_tokens=True)]


@torch.no_grad()
def class_scores(model, tokenizer, batch: dict, text: list[str], visual: torch.Tensor | None,
                 ) -> tuple[list[int], torch.Tensor] | None:
    """(usable rows, [rows, C] log-likelihood of each class name as the answer to the class turn): the family
    classifies over the closed set of classes, as the trimodal classifier does, by ranking the names it was
    fine-tuned to say. None when the batch has no usable row or the model knows no classes."""
    names = [model.config.id2label[k] for k in sorted(model.config.id2label, key=int)]
    rows = [i for i, m in enumerate(batch["meta"]) if usable(m)]
    if not rows or not names:
        return None
    device = batch["image"].device
    prompts = prompt_ids(tokenizer, batch["meta"], text, rows, "cls")
    answers = [[*t, tokenizer.eos_token_id] for t in encode(tokenizer, [f" {name}" for name in names])]
    pairs = [(r, c) for r in range(len(rows)) for c in range(len(names))]
    turns = Turns([rows[r] for r, _ in pairs], *right_padded([prompts[r] for r, _ in pairs],
                                                              [answers[c] for _, c in pairs], tokenizer.pad_token_id,
                                                              device))
    logits, targets = shifted(run(model, turns, visual, batch), turns.labels)
    logp = -torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE,
                                              reduction="none").sum(1)
    return rows, logp.view(len(rows), len(names))


@torch.no_grad()
def predict_batch(model, tokenizer, batch: dict, max_new_tokens: int, captions: bool = True) -> list[dict]:
    """The scoring records of a batch's usable samples (trimodal/evaluation/predict.py's fields): generated caption and
    answer, the most likely class name (class_scores), the teacher-forced caption NLL; no contrastive embeddings."""
    device = next(model.parameters()).device
    batch = to_device(batch, device)
    text, metas = texts(tokenizer, batch), batch["meta"]
    visual = visual_of(model, batch)
    out = {i: {**record_of(m), "label_pred": -1, "answer_pred": ""} for i, m in enumerate(metas) if usable(m)}
    forced = chat_turns(tokenizer, batch, "ce", text, device)
    if forced is not None:
        logits, targets = shifted(run(model, forced, visual, batch), forced.labels)
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE,
                                                reduction="none").sum(1)
        for j, i in enumerate(forced.rows):
            out[i].update(nll=float(nll[j]), tokens=int(targets[j].ne(IGNORE).sum()))
    scored = class_scores(model, tokenizer, batch, text, visual)
    if scored is not None:
        for i, row in zip(*scored, strict=True):
            out[i]["label_pred"] = int(row.argmax())
    tasks = {"vqa": ("answer_pred", ANSWER_TOKENS)}
    if captions:
        tasks["ce"] = ("caption_pred", max_new_tokens)
    for task, (key, budget) in tasks.items():
        turns = chat_turns(tokenizer, batch, task, text, device, with_targets=False)
        if turns is None:
            continue
        for i, s in zip(turns.rows, generated(model, tokenizer, turns, visual, batch, budget), strict=True):
            out[i][key] = s
    if captions:
        for record in out.values():
            record.setdefault("caption_pred", "")
    return list(out.values())

