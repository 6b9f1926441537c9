"""A model's predictions on one split of the shards, one record per sample (the input of stages/common/scoring.py).

Per sample: the generated caption (greedy, from the record's inputs), the generated answer (greedy, the question
joined to the text input), the predicted class, the teacher-forced caption NLL, and the contrastive embedding of
each modality it holds. Shared by the val scores of finetune / distill and the `evaluate` stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.common.batches import decoder_labels, model_inputs, to_device, with_question_streams
from stages.common.generation import ANSWER_TOKENS, greedy
from stages.common.loader import make_loader
from stages.common.records import MODALITIES
from stages.common.scoring import by_subset, cider_per_record, subset_name


def record_of(meta: dict) -> dict:
    """A shard sample's json -> the target half of a scoring record."""
    return {"id": meta.get("id"), "subset": subset_name(meta.get("modalities", ())), "group": meta.get("group"),
            "caption": meta.get("caption"), "question": meta.get("question"), "answer": meta.get("answer"),
            "label": meta.get("label_index", -1)}


def add_noise(batch: dict, image_std: float, audio_std: float, generator: torch.Generator) -> dict:
    """Gaussian noise on pixels (kept in [0, 1]) and on log-Mel features, for the robustness scores."""
    batch = dict(batch)
    if image_std:
        noise = torch.randn(batch["image"].shape, generator=generator) * image_std
        batch["image"] = (batch["image"] + noise).clamp(0, 1)
    if audio_std:
        batch["mel"] = batch["mel"] + torch.randn(batch["mel"].shape, generator=generator) * audio_std
    return batch


@torch.no_grad()
def predict(model, tokenizer, shards: str, split: str, batch_size: int, max_new_tokens: int = 12,
            image_std: float = 0.0, audio_std: float = 0.0, seed: int = 0, captions: bool = True) -> dict:
    """{"records": [...], "embeddings": {modality: [N, D] unit vectors}, "present": {modality: [N] bool}};
    every record's CIDEr is filled in against the references of the whole split. captions=False skips the
    greedy captions (and CIDEr) when only answers and classes are scored: `caption_pred` is then absent."""
    device = next(model.parameters()).device
    out = {"records": [], "embeddings": {m: [] for m in MODALITIES}, "present": {m: [] for m in MODALITIES}}
    generator = torch.Generator().manual_seed(seed)
    for batch in make_loader(shards, split, batch_size):
        batch = to_device(add_noise(batch, image_std, audio_std, generator), device)
        streams = model.encoder.streams(**model_inputs(batch))
        encoded = model.encoder.fuse(streams)
        caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
        forced = model(encoder_outputs=encoded, decoder_input_ids=model.shift_right(caption))
        nll = F.cross_entropy(forced.logits.float().transpose(1, 2), caption, ignore_index=-100,
                              reduction="none").sum(1)
        generated = greedy(model, tokenizer, encoded, max_new_tokens) if captions else None
        asked = model.encoder.fuse(with_question_streams(model.encoder, streams, batch))  # media encoded once
        answers = greedy(model, tokenizer, asked, ANSWER_TOKENS)
        classes = forced.class_logits.argmax(-1).tolist()
        size = len(batch["ids"])
        for modality in MODALITIES:
            if modality in encoded.unimodal:
                out["embeddings"][modality].append(F.normalize(model.global_embedding(encoded, modality).float(),
                                                               dim=-1).cpu())
                out["present"][modality].append(encoded.unimodal_masks[modality].any(-1).cpu())
            else:
                out["embeddings"][modality].append(torch.zeros(size, model.config.projection_dim))
                out["present"][modality].append(torch.zeros(size, dtype=torch.bool))
        for i, meta in enumerate(batch["meta"]):
            record = {**record_of(meta), "answer_pred": answers[i], "label_pred": classes[i], "nll": float(nll[i]),
                      "tokens": int(caption[i].ne(-100).sum())}
            if generated is not None:
                record["caption_pred"] = generated[i]
            out["records"].append(record)
    for key in ("embeddings", "present"):
        out[key] = {m: torch.cat(v) if v else torch.zeros(0) for m, v in out[key].items()}
    if captions:
        fill_cider(out["records"])
    return out


def fill_cider(records: list[dict]) -> None:
    """Each captioned record's CIDEr-D, document frequencies from all the captioned records given."""
    captioned = [r for r in records if r.get("caption")]
    for r, score in zip(captioned, cider_per_record([r["caption"] for r in captioned],
                                                    [r["caption_pred"] for r in captioned]), strict=True):
        r["cider"] = score


def val_scores(model, tokenizer, shards: str, split: str = "val", batch_size: int = 32) -> dict:
    """A trained model's task scores on `split`, overall and per modality subset (training stages' metrics)."""
    return by_subset(predict(model, tokenizer, shards, split, batch_size)["records"])
