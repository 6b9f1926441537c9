"""The training objectives (docs/model.md "Objectives") on a TrimodalForConditionalGeneration.

pretraining_losses: one forward pass over masked inputs gives
    mlm  masked text tokens predicted from R's text positions          (model.mlm_head)
    mim  discrete visual tokens of masked patches from R's image positions (model.mim_head, PatchHashTokenizer)
    mam  log-Mel frames behind masked audio frames from R's audio positions (model.mam_head, regression)
    itc / atc / vac  symmetric contrastive losses on pooled unimodal embeddings, over the samples that have
                     both modalities, each pair with its own learnable temperature (model.logit_scale)
supervised_losses: decoder cross-entropy on target tokens and classification cross-entropy.
matching_loss: itm, whether a sample's inputs belong together, from its fused representation (docs/model.md)
view_losses: view_<m>, the caption and class from modality m alone on samples that also hold others
total_loss: sum of lambda_k * L_k with lambda from config.loss_weights.
Masked prediction runs through fusion and the reasoning core, so every modality can help fill in another.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from trimodal.model import lockstep
from trimodal.model.layers import masked_mean
from trimodal.model.losses import contrastive_loss, cross_entropy, mam_loss, masked_lm_loss, mim_loss, weighted_sum
from trimodal.model.masking import mask_spans, mask_tokens, special_ids
from trimodal.model.trimodal.audio import SUBSAMPLING, frame_mask, subsampled_lengths
from trimodal.model.trimodal.fusion import Stream
from trimodal.model.trimodal.visual_tokenizer import PatchHashTokenizer

PAIRS = {"itc": ("image", "text", 0), "atc": ("audio", "text", 1), "vac": ("image", "audio", 2)}


@dataclass
class MaskingConfig:
    mlm_prob: float = 0.15
    mim_prob: float = 0.4
    mim_span: int = 2
    mam_prob: float = 0.3
    mam_span: int = 2


@lru_cache(maxsize=4)
def visual_tokenizer(patch_size: int, channels: int, bits: int) -> PatchHashTokenizer:
    return PatchHashTokenizer(patch_size, channels, bits=bits, seed=0)


def mel_targets(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, n_mels, T] -> [B, frames, SUBSAMPLING * n_mels]: the log-Mel frames behind each subsampled frame."""
    b, f, t = mel.shape
    mel = F.pad(mel, (0, max(0, frames * SUBSAMPLING - t)))[:, :, : frames * SUBSAMPLING]
    return mel.reshape(b, f, frames, SUBSAMPLING).permute(0, 2, 3, 1).reshape(b, frames, SUBSAMPLING * f)


def pretraining_losses(model, inputs: dict, generator: torch.Generator, masking: MaskingConfig | None = None,
                       positives: torch.Tensor | None = None, pairable: torch.Tensor | None = None
                       ) -> dict[str, torch.Tensor]:
    """inputs: the model's encoder arguments (pixel_values, image_present, input_features, mel_lengths,
    text_ids, text_mask; any subset); positives, pairable: see contrastive_losses. Returns the objectives that
    this batch's modalities allow."""
    m, c = masking or MaskingConfig(), model.config
    enc_inputs = dict(inputs)
    targets = {}
    if inputs.get("text_ids") is not None:
        text_mask = inputs.get("text_mask", inputs["text_ids"].ne(c.pad_token_id))
        enc_inputs["text_ids"], targets["mlm"] = mask_tokens(inputs["text_ids"], text_mask, c.mask_token_id,
                                                             special_ids(c),
                                                             c.vocab_size, m.mlm_prob, generator)
    if inputs.get("pixel_values") is not None:
        pixels = inputs["pixel_values"]
        present = inputs.get("image_present", torch.ones(pixels.shape[0], dtype=torch.bool))
        valid = present[:, None].expand(-1, c.num_patches)
        enc_inputs["patch_mask"] = targets["mim"] = mask_spans(valid, m.mim_prob, m.mim_span, generator)
    if inputs.get("input_features") is not None:
        mel = inputs["input_features"]
        lengths = inputs.get("mel_lengths", torch.full((mel.shape[0],), mel.shape[-1]))
        frames = int(subsampled_lengths(torch.tensor(mel.shape[-1])))
        valid = frame_mask(subsampled_lengths(lengths), frames)
        enc_inputs["frame_mask"] = targets["mam"] = mask_spans(valid, m.mam_prob, m.mam_span, generator)
    enc = model.encoder(**enc_inputs)
    r, seg = enc.last_hidden_state, enc.segments
    # a modality only another rank holds is a stream here too (lockstep), with nothing of this rank's to predict
    held = {m for m in seg if enc.unimodal_masks[m].any()}
    losses = {}
    if "text" in held:
        losses["mlm"] = masked_lm_loss(model.mlm_head(r[:, seg["text"]]), inputs["text_ids"], targets["mlm"])
    if "image" in held:
        tokens = visual_tokenizer(c.patch_size, c.num_channels, c.mim_bits)(inputs["pixel_values"])
        losses["mim"] = mim_loss(model.mim_head(r[:, seg["image"]]), tokens, targets["mim"])
    if "audio" in held:
        target = mel_targets(inputs["input_features"], r[:, seg["audio"]].shape[1])
        losses["mam"] = mam_loss(model.mam_head(r[:, seg["audio"]]), target, targets["mam"])
    losses.update(contrastive_losses(model, enc, positives, pairable))
    return losses


def contrastive_losses(model, enc, positives: torch.Tensor | None = None,
                       pairable: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """itc / atc / vac on an encoder output: over the samples holding both modalities, each pair with its own
    learnable temperature. Fine-tuning and distillation keep them so the embedding spaces stay aligned.
    positives [B, B] bool: samples that describe the same thing (losses.contrastive_loss); None = only i~i.
    pairable [B] bool: samples whose inputs are views of one content; the others (e.g. a fusion record's red
    circle beside a blue tone) take no part, since as a positive pair they would teach the encoders that
    different contents match. None = all."""
    losses = {}
    for name, (a, b, scale) in PAIRS.items():
        if a in enc.unimodal and b in enc.unimodal:
            both = enc.unimodal_masks[a].any(-1) & enc.unimodal_masks[b].any(-1)
            if pairable is not None:
                both = both & pairable
            if both.sum() >= 2:
                pos = positives[both][:, both] if positives is not None else None
                losses[name] = contrastive_loss(model.global_embedding(enc, a)[both],
                                                model.global_embedding(enc, b)[both], model.logit_scale[scale], pos)
    return losses


def mismatched(streams: dict[str, Stream], rows: torch.Tensor, positives: torch.Tensor, donors: torch.Tensor,
               generator: torch.Generator) -> tuple[dict[str, Stream], torch.Tensor]:
    """Negatives for the matching objective: each sample of `rows` with one of its modalities (drawn uniformly)
    taken from another sample (drawn uniformly among the `donors` that hold that modality and are not its
    `positives`). Returns the streams of the negatives, in `rows` order, and the rows that found a donor."""
    names = list(streams)
    present = torch.stack([streams[m].present for m in names], 1).cpu()  # [B, M]
    rows = rows.cpu()
    pick = torch.multinomial(present[rows].float(), 1, generator=generator).squeeze(1)  # a modality per row
    candidates = present[:, pick].T & ~positives.cpu()[rows] & donors.cpu()[None]  # [R, B]
    found = candidates.any(1)
    rows, pick, candidates = rows[found], pick[found], candidates[found]
    if not len(rows):
        return {}, rows
    donor = torch.multinomial(candidates.float(), 1, generator=generator).squeeze(1)
    negatives = {}
    for k, m in enumerate(names):
        source = torch.where(pick == k, donor, rows).to(streams[m].hidden.device)
        # in lockstep every stream stays, all False where no negative holds it: every rank fuses the same streams
        if streams[m].mask[source].any() or lockstep.active():
            negatives[m] = Stream(streams[m].hidden[source], streams[m].mask[source])
    return negatives, rows


def matching_loss(model, streams: dict[str, Stream], encoded, positives: torch.Tensor,
                  pairable: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor | None:
    """itm (image-text matching of ALBEF / BLIP, here for any pair of modalities): binary cross-entropy of
    model.itm_head on the pooled fused representation R, 'these inputs belong together' for the samples holding
    two or more modalities as they are (`encoded`, fused from `streams`), 'they do not' for the same samples with
    one modality swapped for another sample's (`mismatched`). Only fusion and the reasoning core see both
    inputs at once, so this is the objective that teaches them to compare modalities. positives [B, B]: samples
    with the same content (never a negative of each other); pairable [B]: samples whose inputs are views of one
    content (None = all). None when its weight is 0 or fewer than two samples qualify."""
    if not model.config.loss_weights.get("itm"):
        return None
    present = torch.stack([s.present for s in streams.values()], 1)
    ok = present.sum(1) >= 2
    if pairable is not None:
        ok = ok & pairable
    negatives, rows = mismatched(streams, ok.nonzero().flatten(), positives, ok, generator) if ok.sum() >= 2 \
        else ({}, None)
    if not lockstep.needed(bool(negatives)):
        return None
    if not negatives:  # another rank matches: fusion and the core run on a placeholder here
        fused = model.encoder.fuse(placeholder_streams(streams))
        lockstep.sink(model.itm_head(masked_mean(fused.last_hidden_state, fused.attention_mask)))
        return None
    matched = masked_mean(encoded.last_hidden_state[ok], encoded.attention_mask[ok])
    fused = model.encoder.fuse(negatives)
    logits = model.itm_head(torch.cat([matched, masked_mean(fused.last_hidden_state, fused.attention_mask)]))
    target = torch.cat([torch.ones(len(matched)), torch.zeros(len(rows))]).long().to(logits.device)
    return cross_entropy(logits[:, None], target[:, None])


def view_losses(model, streams: dict[str, Stream], caption: torch.Tensor, class_labels: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """view_<m> for each modality m whose weight is non-zero: the caption cross-entropy plus the class
    cross-entropy from m alone, on the samples that hold m and at least one more modality (those answer from the
    easiest input and teach m little; docs/model.md). The encoders' output is reused: only fusion, the core and
    the heads run again. caption [B, T] decoder labels (-100 = ignore), class_labels [B] (-100 = none)."""
    present = {m: s.present for m, s in streams.items()}
    others = torch.stack(list(present.values())).sum(0) >= 2
    targeted = caption.ne(-100).any(1) | class_labels.ne(-100)
    losses = {}
    for m, stream in streams.items():
        rows = stream.present & others & targeted
        if not model.config.loss_weights.get(f"view_{m}") or not lockstep.needed(bool(rows.any())):
            continue
        if not rows.any():  # another rank has such samples: the same blocks run on a placeholder here
            alone = model.encoder.fuse(placeholder_streams({m: stream}))
            out = model(encoder_outputs=alone, decoder_input_ids=model.shift_right(caption[:1]))
            lockstep.sink((out.logits, out.class_logits))
            continue
        alone = model.encoder.fuse({m: Stream(stream.hidden[rows], stream.mask[rows])})
        out = model(encoder_outputs=alone, decoder_input_ids=model.shift_right(caption[rows]))
        losses[f"view_{m}"] = (cross_entropy(out.logits, caption[rows])
                               + cross_entropy(out.class_logits[:, None], class_labels[rows][:, None]))
    return losses


def placeholder_streams(streams: dict[str, Stream]) -> dict[str, Stream]:
    """The streams' first sample, every position unmasked: a valid input for a pass run only to keep ranks in
    lockstep (its output is sunk, trimodal/model/lockstep.py)."""
    return {m: Stream(s.hidden[:1], torch.ones_like(s.mask[:1])) for m, s in streams.items()}


def supervised_losses(model, inputs: dict, labels: torch.Tensor | None = None,
                      class_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """ce: decoder targets [B, T] (-100 = ignore); cls: class indices [B] (-100 = no label)."""
    decoder_input_ids = model.shift_right(labels) if labels is not None else None
    out = model(**inputs, decoder_input_ids=decoder_input_ids)
    losses = {}
    if labels is not None:
        losses["ce"] = cross_entropy(out.logits, labels)
    if class_labels is not None:
        losses["cls"] = cross_entropy(out.class_logits[:, None], class_labels[:, None])
    return losses


def total_loss(model, losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return weighted_sum(losses, model.config.loss_weights)
