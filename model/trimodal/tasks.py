"""The trimodal family's training steps, one per stage, each `step(model, batch, generator) -> losses`:

    pretrain_step   the pretraining objectives (model/trimodal/objectives.py)
    finetune_step   the supervised objectives below (stage `finetune`, and replayed by `instruct` and `align` so
                    the tuned model keeps the formats the evaluation asks in)
    distill_step    knowledge distillation from a teacher of the same family (stage `distill`)

The supervised objectives:

    ce   captioning: decoder cross-entropy on the caption, conditioned on the record's inputs
    vqa  question answering as generation: the decoder reads the question as its prefix, then the answer, from the
         same fused R as the caption (trimodal/data/batches.question_prefixed)
    cls  classification cross-entropy on pooled R (the record's label)
    itc / atc / vac  the contrastive objectives of pretraining, kept so the embedding spaces stay aligned
    itm  whether a sample's inputs belong together, against the same sample with one input swapped (fusion)
    view_<m>  caption and class from modality m alone, on samples that also hold others (the vision path)
Objectives whose weight is 0 are not computed.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from trimodal.data.batches import decoder_labels, model_inputs, question_prefixed, same_caption
from trimodal.model import lockstep
from trimodal.model.losses import cross_entropy, kd_loss
from trimodal.model.trimodal.fusion import Stream
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration
from trimodal.model.trimodal.objectives import contrastive_losses, matching_loss, pretraining_losses, view_losses


@lockstep.aware
def finetune_step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return finetune_losses(model, batch, generator)[0]


def finetune_losses(model, batch: dict, generator: torch.Generator
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Stream]]:
    """finetune_step's losses and the batch's streams (what responses.media_of encodes), so a step that asks more
    of the same inputs (`instruct`) does not run the encoders again."""
    streams = model.encoder.streams(**model_inputs(batch))
    caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
    encoded = model.encoder.fuse(streams)
    out = model(encoder_outputs=encoded, decoder_input_ids=model.shift_right(caption))
    positives = same_caption(batch)
    losses = {"ce": cross_entropy(out.logits, caption),
              "cls": cross_entropy(out.class_logits[:, None], batch["label"][:, None]),
              **contrastive_losses(model, encoded, positives, batch.get("pairable")),
              **view_losses(model, streams, caption, batch["label"])}
    itm = matching_loss(model, streams, encoded, positives, batch.get("pairable"), generator)
    if itm is not None:
        losses["itm"] = itm
    asked, answer = question_prefixed(batch, model.config)
    if lockstep.needed(bool((answer != -100).any())):
        logits = model(encoder_outputs=encoded, decoder_input_ids=asked).logits
        if (answer != -100).any():
            losses["vqa"] = cross_entropy(logits, answer)
        else:  # another rank's batch asks: the decoder ran in step, nothing here to learn from
            lockstep.sink(logits)
    return losses, streams


@lockstep.aware
def pretrain_step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return pretraining_losses(model, model_inputs(batch), generator, positives=same_caption(batch),
                              pairable=batch.get("pairable"))


def distill_step(teacher: TrimodalForConditionalGeneration, alpha: float, temperature: float) -> Callable:
    """The KD objectives for `train`: ce (caption), vqa (answer) and cls, each soft (teacher) + hard (labels),
    plus the student's own contrastive losses and image views (caption and class from the image alone, on records
    that also hold text or audio: the student's vision path idles beside them as the teacher's did)."""

    @lockstep.aware
    def step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        inputs = model_inputs(batch)
        caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
        decoder_input_ids = model.shift_right(caption)
        with torch.no_grad():
            teacher_encoded = teacher.encoder(**inputs)
            taught = teacher(encoder_outputs=teacher_encoded, decoder_input_ids=decoder_input_ids)
        streams = model.encoder.streams(**inputs)
        encoded = model.encoder.fuse(streams)
        out = model(encoder_outputs=encoded, decoder_input_ids=decoder_input_ids)
        losses = {"ce": kd_loss(out.logits, taught.logits, caption, alpha, temperature),
                  "cls": kd_loss(out.class_logits, taught.class_logits, batch["label"], alpha, temperature),
                  **contrastive_losses(model, encoded, same_caption(batch), batch.get("pairable")),
                  **view_losses(model, streams, caption, batch["label"])}
        asked, answer = question_prefixed(batch, model.config)  # the question as the decoder's prefix
        if lockstep.needed(bool((answer != -100).any())):
            out = model(encoder_outputs=encoded, decoder_input_ids=asked)
            if (answer != -100).any():
                with torch.no_grad():
                    taught = teacher(encoder_outputs=teacher_encoded, decoder_input_ids=asked)
                losses["vqa"] = kd_loss(out.logits, taught.logits, answer, alpha, temperature)
            else:  # lockstep: another rank's batch asks
                lockstep.sink(out.logits)
        return losses

    return step
