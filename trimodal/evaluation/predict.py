"""A model's predictions on one split of the shards, one record per sample (the input of
trimodal/evaluation/scoring.py). A DeepSeek-VL model's come from model/deepseek_vl/tasks.py (the same fields, no
embeddings, audio-only records skipped); what follows is the trimodal family's.

Per sample: the generated caption (greedy, from the record's inputs), the generated answer (greedy, after the
question as the decoder's prefix), the predicted class, the teacher-forced caption NLL, and the contrastive embedding of
each modality it holds. Shared by the val scores of finetune / distill and the `evaluate` stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trimodal.data.batches import decoder_labels, model_inputs, question_prompts, to_device
from trimodal.data.loader import make_loader
from trimodal.data.records import MODALITIES
from trimodal.evaluation.generation import ANSWER_TOKENS, answered, greedy
from trimodal.evaluation.scoring import by_subset, fill_cider, record_of
from trimodal.model.deepseek_vl.tasks import predict_batch
from trimodal.model.families import DEEPSEEK_VL, family_of_model


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
    deepseek_vl = family_of_model(model) == DEEPSEEK_VL
    for batch in make_loader(shards, split, batch_size):
        batch = to_device(add_noise(batch, image_std, audio_std, generator), device)
        if deepseek_vl:  # no embeddings (present: none), so its rows hold no retrieval scores
            records = predict_batch(model, tokenizer, batch, max_new_tokens, captions)
            out["records"] += records
            for modality in MODALITIES:
                out["embeddings"][modality].append(torch.zeros(len(records), 1))
                out["present"][modality].append(torch.zeros(len(records), dtype=torch.bool))
            continue
        encoded = model.encoder(**model_inputs(batch))
        caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
        forced = model(encoder_outputs=encoded, decoder_input_ids=model.shift_right(caption))
        nll = F.cross_entropy(forced.logits.float().transpose(1, 2), caption, ignore_index=-100,
                              reduction="none").sum(1)
        generated = greedy(model, tokenizer, encoded, max_new_tokens) if captions else None
        answers = answered(model, tokenizer, encoded, question_prompts(batch, model.config.decoder_start_token_id),
                           ANSWER_TOKENS)
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


def val_scores(model, tokenizer, shards: str, split: str = "val", batch_size: int = 32) -> dict:
    """A trained model's task scores on `split`, overall and per modality subset (training stages' metrics)."""
    return by_subset(predict(model, tokenizer, shards, split, batch_size)["records"])
