"""Stage `finetune`: supervised objectives from models/pretrain -> models/teacher/ (+ tokenizer).

    ce   captioning: decoder cross-entropy on the caption, conditioned on the record's inputs
    vqa  question answering as generation: the question joins the text input, the decoder produces the answer
    cls  classification cross-entropy on pooled R (the record's label)
    itc / atc / vac  the contrastive objectives of pretraining, kept so the embedding spaces stay aligned
After training, the val split is scored (VQA exact match, classification accuracy, caption exact match)
against majority baselines (the most frequent answer, label or caption) -> metrics/finetune.json.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from model.losses import cross_entropy
from model.modeling import TrimodalForConditionalGeneration
from model.objectives import contrastive_losses
from stages.common.atomic import write_json
from stages.common.distributed import launch
from stages.common.loader import make_loader, read_index
from stages.common.params import load_params
from stages.common.trainer import clear_checkpoints, fit, model_inputs, to_device
from stages.pretrain import file_digest, fingerprint, save

PRETRAINED = Path("models/pretrain")
OUT_DIR = Path("models/teacher")
CHECKPOINTS = Path("checkpoints/finetune")
METRICS = Path("metrics/finetune.json")


def decoder_labels(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """'<s> a red circle </s>' -> labels 'a red circle </s>' (the decoder starts from <s>), padding -100."""
    return ids[:, 1:].masked_fill(~mask[:, 1:], -100)


def with_question(batch: dict, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Text input followed by the question (its <s> dropped when text precedes it), re-padded."""
    rows = []
    for text, tmask, question, qmask in zip(batch["text_ids"], batch["text_mask"], batch["question_ids"],
                                            batch["question_mask"], strict=True):
        t, q = text[tmask], question[qmask]
        rows.append(torch.cat([t, q[1:]]) if len(t) and len(q) else torch.cat([t, q]))
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, ids.ne(pad_id) & (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None])


def finetune_step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    inputs = model_inputs(batch)
    caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
    encoded = model.encoder(**inputs)
    out = model(encoder_outputs=encoded, decoder_input_ids=model.shift_right(caption))
    losses = {"ce": cross_entropy(out.logits, caption),
              "cls": cross_entropy(out.class_logits[:, None], batch["label"][:, None]),
              **contrastive_losses(model, encoded)}
    answer = decoder_labels(batch["answer_ids"], batch["answer_mask"])
    if (answer != -100).any():
        text_ids, text_mask = with_question(batch, model.config.pad_token_id)
        vqa = model(**{**inputs, "text_ids": text_ids, "text_mask": text_mask},
                    decoder_input_ids=model.shift_right(answer))
        losses["vqa"] = cross_entropy(vqa.logits, answer)
    return losses


@torch.no_grad()
def evaluate(model, tokenizer, shards: str, split: str = "val", batch_size: int = 32) -> dict:
    hits: Counter = Counter()
    counts: Counter = Counter()
    answers, labels, captions = Counter(), Counter(), Counter()
    device = next(model.parameters()).device
    for batch in make_loader(shards, split, batch_size):
        inputs = model_inputs(to_device(batch, device))
        metas = batch["meta"]
        encoded = model.encoder(**inputs)  # one encoder pass serves classification and captioning
        pred_cls = model(encoder_outputs=encoded).class_logits.argmax(-1)
        text_ids, text_mask = with_question(batch, model.config.pad_token_id)
        vqa = model.generate(**{**inputs, "text_ids": text_ids, "text_mask": text_mask}, max_new_tokens=6,
                             do_sample=False, num_beams=1)
        caps = model.generate(encoder_outputs=encoded, max_new_tokens=12, do_sample=False, num_beams=1)
        for i, meta in enumerate(metas):
            if meta.get("answer"):
                counts["vqa"] += 1
                answers[meta["answer"]] += 1
                hits["vqa"] += tokenizer.decode(vqa[i], skip_special_tokens=True).strip() == meta["answer"]
            if meta.get("label_index", -1) >= 0:
                counts["cls"] += 1
                labels[meta["label_index"]] += 1
                hits["cls"] += int(pred_cls[i]) == meta["label_index"]
            if meta.get("caption"):
                counts["caption"] += 1
                captions[meta["caption"]] += 1
                hits["caption"] += tokenizer.decode(caps[i], skip_special_tokens=True).strip() == meta["caption"]
    metrics = {f"{k}_accuracy": hits[k] / counts[k] for k in counts}
    metrics["vqa_majority_baseline"] = max(answers.values()) / counts["vqa"] if counts["vqa"] else 0.0
    metrics["cls_majority_baseline"] = max(labels.values()) / counts["cls"] if counts["cls"] else 0.0
    metrics["caption_majority_baseline"] = max(captions.values()) / counts["caption"] if counts["caption"] else 0.0
    metrics.update({f"n_{k}": v for k, v in counts.items()})
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    params = load_params("params.yaml", argv)
    if launch(params.trainer.devices, "stages.finetune", argv):
        return
    tokenizer = AutoTokenizer.from_pretrained(PRETRAINED)
    model = TrimodalForConditionalGeneration.from_pretrained(PRETRAINED)
    model = fit(model, finetune_step, params.finetune, params.trainer, params.seed, "finetune",
                fingerprint(params.finetune, params.seed, read_index(params.finetune.shards), file_digest(PRETRAINED)))
    if model is None:  # under torchrun, rank 0 alone evaluates and saves
        return
    metrics = evaluate(model, tokenizer, params.finetune.shards)
    write_json(METRICS, metrics)
    save(model, tokenizer, OUT_DIR)
    clear_checkpoints(CHECKPOINTS)
    print("finetune: " + json.dumps(metrics))


if __name__ == "__main__":
    main()
