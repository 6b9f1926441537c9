"""A model's predictions on one split of the shards, one record per sample (the input of
trimodal/evaluation/scoring.py), each batch's from its family's `predict` (model/family.py): the trimodal family's
(model/trimodal/family.py) hold the generated caption and answer, the predicted class, the teacher-forced caption
NLL and the contrastive embedding of each modality; a DeepSeek-VL model's (model/deepseek_vl/family.py) the same
fields, no embeddings, audio-only records skipped. Shared by the val scores of the training stages and the
`evaluate` stage.
"""
from __future__ import annotations

import torch

from trimodal.data.batches import to_device
from trimodal.data.loader import make_loader
from trimodal.data.records import MODALITIES
from trimodal.evaluation.scoring import by_subset, fill_cider
from trimodal.model.families import family_for


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
    family = family_for(model)
    for batch in make_loader(shards, split, batch_size):
        batch = to_device(add_noise(batch, image_std, audio_std, generator), device)
        predicted = family.predict(model, tokenizer, batch, max_new_tokens, captions)
        out["records"] += predicted.records
        for modality in MODALITIES:
            out["embeddings"][modality].append(predicted.embeddings[modality])
            out["present"][modality].append(predicted.present[modality])
    for key in ("embeddings", "present"):
        out[key] = {m: torch.cat(v) if v else torch.zeros(0) for m, v in out[key].items()}
    if captions:
        fill_cider(out["records"])
    return out


def val_scores(model, tokenizer, shards: str, split: str = "val", batch_size: int = 32) -> dict:
    """A trained model's task scores on `split`, overall and per modality subset (training stages' metrics)."""
    return by_subset(predict(model, tokenizer, shards, split, batch_size)["records"])
