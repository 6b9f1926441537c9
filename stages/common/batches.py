"""Loader batches (stages/common/loader.py) -> the model's arguments and targets, shared by every stage that
runs the model on shards (training, scoring, calibration, evaluation)."""
from __future__ import annotations

import torch

from stages.common.records import MODALITIES


def model_inputs(batch: dict) -> dict:
    """Loader batch (stages.common.loader) -> the model's encoder arguments."""
    return {"pixel_values": batch["image"], "image_present": batch["image_present"],
            "input_features": batch["mel"], "mel_lengths": batch["mel_lengths"],
            "text_ids": batch["text_ids"], "text_mask": batch["text_mask"]}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def decoder_labels(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """'<s> a red circle </s>' -> labels 'a red circle </s>' (the decoder starts from <s>), padding -100."""
    return ids[:, 1:].masked_fill(~mask[:, 1:], -100)


def with_question(batch: dict, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Text input followed by the question (its <s> dropped when text precedes it), re-padded, on the batch's
    device."""
    rows = []
    for text, tmask, question, qmask in zip(batch["text_ids"], batch["text_mask"], batch["question_ids"],
                                            batch["question_mask"], strict=True):
        t, q = text[tmask], question[qmask]
        rows.append(torch.cat([t, q[1:]]) if len(t) and len(q) else torch.cat([t, q]))
    device = batch["text_ids"].device
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    lengths = torch.tensor([len(r) for r in rows], device=device)
    return ids, ids.ne(pad_id) & (torch.arange(width, device=device)[None] < lengths[:, None])


def with_question_streams(encoder, streams: dict, batch: dict) -> dict:
    """The unimodal streams of a batch (encoder.streams) with the text stream replaced by text + question
    (with_question): the VQA pass reuses the image and audio encodings of the caption pass instead of running
    those encoders again on the same media."""
    text_ids, text_mask = with_question(batch, encoder.config.pad_token_id)
    if not text_mask.any():  # neither text nor a question anywhere in the batch: nothing to swap
        return streams
    return {**streams, **encoder.streams(text_ids=text_ids, text_mask=text_mask)}


def pairable(batch: dict, skip_groups=()) -> torch.Tensor:
    """[B] bool: samples whose inputs are views of one content, so the contrastive objectives may pair them; a
    sample of a group in `skip_groups` (e.g. "fusion": two inputs that may disagree, and the answer says whether
    they do) is not."""
    return torch.tensor([meta.get("group") not in skip_groups for meta in batch["meta"]], dtype=torch.bool,
                        device=batch["caption_ids"].device)


def same_caption(batch: dict) -> torch.Tensor:
    """[B, B] bool: samples i, j whose captions are the same token sequence (every sample with itself; a sample
    without a caption only with itself): the positives of the contrastive objectives."""
    ids = batch["caption_ids"].masked_fill(~batch["caption_mask"], -1)
    same = (ids[:, None] == ids[None]).all(-1) & batch["caption_mask"].any(1)[:, None]
    return same | torch.eye(len(ids), dtype=torch.bool, device=ids.device)


def present_modalities(batch: dict) -> dict[str, torch.Tensor]:
    """modality -> [B] bool: which samples of the batch carry it."""
    return {"image": batch["image_present"], "audio": batch["mel_lengths"] > 0, "text": batch["text_mask"].any(1)}


def drop_modalities(batch: dict, p: float, generator: torch.Generator, keep_groups=()) -> dict:
    """Modality dropout: each sample with two or more inputs, with probability p, keeps only a random non-empty
    proper subset of them (uniform over the 2^k - 2 choices), so the model also learns to answer from each input
    alone instead of leaning on the easiest one. Samples of a group in `keep_groups` (e.g. "fusion", whose answer
    needs every input) keep all of theirs. The draws do not depend on the batch's content (same generator state
    after any batch of the same size), so resumed training draws what the uninterrupted run drew."""
    if p <= 0:  # off: not even a draw, so the step's generator is what it was without this feature
        return batch
    n = len(batch["ids"])
    draws, picks = torch.rand(n, generator=generator), torch.randint(0, 2**30, (n,), generator=generator)
    present = {m: v.tolist() for m, v in present_modalities(batch).items()}
    drops: dict[str, list[int]] = {m: [] for m in MODALITIES}
    metas = list(batch["meta"])
    for i in range(n):
        have = [m for m in MODALITIES if present[m][i]]
        if len(have) < 2 or draws[i] >= p or metas[i].get("group") in keep_groups:
            continue
        subsets = [[m for j, m in enumerate(have) if mask >> j & 1] for mask in range(1, 2 ** len(have) - 1)]
        keep = subsets[int(picks[i]) % len(subsets)]
        for m in have:
            if m not in keep:
                drops[m].append(i)
        metas[i] = {**metas[i], "modalities": keep}
    out = {**batch, "meta": metas}
    if drops["image"]:
        out["image"], out["image_present"] = batch["image"].clone(), batch["image_present"].clone()
        out["image"][drops["image"]], out["image_present"][drops["image"]] = 0.0, False
    if drops["audio"]:
        out["mel"], out["mel_lengths"] = batch["mel"].clone(), batch["mel_lengths"].clone()
        out["mel"][drops["audio"]], out["mel_lengths"][drops["audio"]] = 0.0, 0
    if drops["text"]:
        out["text_mask"] = batch["text_mask"].clone()
        out["text_mask"][drops["text"]] = False
    return out
