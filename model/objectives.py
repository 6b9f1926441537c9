"""The training objectives of seed 001 section 4.3 on a TrimodalForConditionalGeneration.

pretraining_losses: one forward pass over masked inputs gives
    mlm  masked text tokens predicted from R's text positions          (model.mlm_head)
    mim  discrete visual tokens of masked patches from R's image positions (model.mim_head, PatchHashTokenizer)
    mam  log-Mel frames behind masked audio frames from R's audio positions (model.mam_head, regression)
    itc / atc / vac  symmetric contrastive losses on pooled unimodal embeddings, over the samples that have
                     both modalities, each pair with its own learnable temperature (model.logit_scale)
supervised_losses: decoder cross-entropy on target tokens and classification cross-entropy.
total_loss: sum of lambda_k * L_k with lambda from config.loss_weights.
Masked prediction runs through fusion and the reasoning core, so every modality can help fill in another.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from model.audio import SUBSAMPLING, frame_mask, subsampled_lengths
from model.losses import contrastive_loss, cross_entropy, mam_loss, masked_lm_loss, mim_loss, weighted_sum
from model.masking import mask_spans, mask_tokens
from model.visual_tokenizer import PatchHashTokenizer

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
        specials = {c.pad_token_id, c.bos_token_id, c.eos_token_id, c.mask_token_id}
        enc_inputs["text_ids"], targets["mlm"] = mask_tokens(inputs["text_ids"], text_mask, c.mask_token_id, specials,
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
    losses = {}
    if "text" in seg:
        losses["mlm"] = masked_lm_loss(model.mlm_head(r[:, seg["text"]]), inputs["text_ids"], targets["mlm"])
    if "image" in seg:
        tokens = visual_tokenizer(c.patch_size, c.num_channels, c.mim_bits)(inputs["pixel_values"])
        losses["mim"] = mim_loss(model.mim_head(r[:, seg["image"]]), tokens, targets["mim"])
    if "audio" in seg:
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
