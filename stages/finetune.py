"""Stage `finetune`: supervised objectives from models/pretrain -> models/teacher/ (+ tokenizer). A DeepSeek-VL
model (`model=deepseek_vl`) is fine-tuned on chat turns instead: seed 002's stage 3 (stages/common/vl_tasks.py),
and the records it skips (audio only) are counted in metrics/finetune.json.

    ce   captioning: decoder cross-entropy on the caption, conditioned on the record's inputs
    vqa  question answering as generation: the question joins the text input, the decoder produces the answer
    cls  classification cross-entropy on pooled R (the record's label)
    itc / atc / vac  the contrastive objectives of pretraining, kept so the embedding spaces stay aligned
After training, the val split is scored, overall and per modality subset (stages/common/predict.py,
stages/common/scoring.py) -> metrics/details/finetune.json, and its headline (overall scores, parameters) ->
metrics/finetune.json.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from model.families import DEEPSEEK_VL, family_of_model, load_pretrained
from model.losses import cross_entropy
from model.objectives import contrastive_losses
from stages.common.atomic import write_json
from stages.common.batches import decoder_labels, model_inputs, same_caption, with_question_streams
from stages.common.checkpoint import fingerprint
from stages.common.distributed import launch
from stages.common.loader import read_index
from stages.common.models import file_digest, parameter_count, save
from stages.common.params import load_params
from stages.common.predict import val_scores
from stages.common.scoring import headline
from stages.common.trainer import checkpoint_dir, clear_checkpoints, fit
from stages.common.vl_tasks import sft_step, skipped, usable


def finetune_step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    streams = model.encoder.streams(**model_inputs(batch))
    caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
    encoded = model.encoder.fuse(streams)
    out = model(encoder_outputs=encoded, decoder_input_ids=model.shift_right(caption))
    losses = {"ce": cross_entropy(out.logits, caption),
              "cls": cross_entropy(out.class_logits[:, None], batch["label"][:, None]),
              **contrastive_losses(model, encoded, same_caption(batch), batch.get("pairable"))}
    answer = decoder_labels(batch["answer_ids"], batch["answer_mask"])
    if (answer != -100).any():
        vqa = model(encoder_outputs=model.encoder.fuse(with_question_streams(model.encoder, streams, batch)),
                    decoder_input_ids=model.shift_right(answer))
        losses["vqa"] = cross_entropy(vqa.logits, answer)
    return losses


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    params = load_params("params.yaml", argv)
    if launch(params.trainer.devices, "stages.finetune", argv):
        return
    paths = params.paths
    tokenizer = AutoTokenizer.from_pretrained(paths.pretrained)
    model = load_pretrained(paths.pretrained)
    # DeepSeek-VL: seed 002's stage 3, supervised fine-tuning on chat turns (stages/common/vl_tasks.py)
    deepseek_vl = family_of_model(model) == DEEPSEEK_VL
    data = skipped(params.finetune.shards, "train") if deepseek_vl else {}
    model = fit(model, sft_step(tokenizer) if deepseek_vl else finetune_step, params.finetune, params.trainer,
                params.seed, "finetune", fingerprint(params.finetune, params.seed, read_index(params.finetune.shards),
                                                     file_digest(Path(paths.pretrained))), paths,
                keep=usable if deepseek_vl else None, summary=data)
    if model is None:  # under torchrun, rank 0 alone evaluates and saves
        return
    scores = val_scores(model, tokenizer, params.finetune.shards)
    write_json(Path(paths.details) / "finetune.json", scores)
    summary = {**headline(scores["overall"]), "parameters": parameter_count(model), **data}
    write_json(Path(paths.metrics) / "finetune.json", summary)
    save(model, tokenizer, Path(paths.teacher))
    clear_checkpoints(checkpoint_dir(paths, "finetune"))
    print("finetune: " + json.dumps(summary))


if __name__ == "__main__":
    main()
