"""Stage `pretrain`: self-supervised + contrastive objectives (MLM, MIM, MAM, ITC/ATC/VAC, weighted by
model.loss_weights) on the train shards -> models/pretrain/ (save_pretrained + tokenizer). With `model=deepseek_vl`,
DeepSeek-VL's first two stages instead (its family's warmup and pretrain steps; docs/model.md "DeepSeek-VL: training").

Checkpoints go to checkpoints/pretrain/ (kept across runs: a rerun resumes); metrics to metrics/pretrain/ (dvclive).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer

from trimodal.config_errors import run_main
from trimodal.data.limits import KEY as MEDIA_LIMITS
from trimodal.data.loader import read_index
from trimodal.model.families import build_config, family_named, family_of
from trimodal.model.family import Family
from trimodal.params import Params, load_params
from trimodal.training.checkpoint import fingerprint
from trimodal.training.distributed import launch
from trimodal.training.models import save
from trimodal.training.trainer import TrainJob, checkpoint_dir, clear_checkpoints, fit


def build_model(params: Params, shards: str, tokenizer) -> nn.Module:
    """The family params.model names, sized by the data: vocabulary, special tokens, classes, features, and the
    media limits the data was validated with."""
    index = read_index(shards)
    from_data = {"vocab_size": len(tokenizer), "num_classes": max(1, len(index["labels"])),
                 "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                 "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.bos_token_id,
                 "mask_token_id": tokenizer.mask_token_id,
                 # the features of the data (sample_rate is None when the data holds no audio) and the limits
                 # it was validated with
                 **{k: index[k] for k in ("image_size", "n_mels", "sample_rate", "n_fft", "hop_length",
                                          "max_text_tokens", MEDIA_LIMITS) if index.get(k) is not None}}
    config = build_config(params.model, **from_data)
    config.id2label = dict(enumerate(index["labels"]))
    torch.manual_seed(params.seed)
    return family_named(family_of(params.model)).build(config)


def pretrain(model: nn.Module, family: Family, tokenizer, params: Params, index: dict) -> nn.Module | None:
    """The family's pretraining steps. DeepSeek-VL's are its stages 1 and 2: the adaptor warm-up
    (pretrain.adaptor_warmup: captions after images, only the adaptor trains), then joint pretraining (language-only
    and image batches mixed by pretrain.language_fraction); records with audio only are skipped, counted in
    metrics/pretrain/metrics.json."""
    p, warm = params.pretrain, params.pretrain.adaptor_warmup
    summary = family.skipped(p.shards, "train")
    if "warmup" in family.stages and warm is not None and warm.steps > 0:
        warmup = TrainJob.of(params, "pretrain", fingerprint("warmup", warm, params.model, params.seed, index), warm)
        model = fit(model, family.step("warmup", tokenizer), warmup, phase="warmup", keep=family.records("warmup"),
                    summary=summary, every_rank=True)
    joint = TrainJob.of(params, "pretrain", fingerprint(p, params.model, params.seed, index))
    return fit(model, family.step("pretrain", tokenizer), joint, keep=family.records("pretrain"), summary=summary)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    params = load_params("params.yaml", argv)
    family = family_named(family_of(params.model))
    if launch(params.trainer.devices, "stages.pretrain", argv):
        return
    paths = params.paths
    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer)
    model = build_model(params, params.pretrain.shards, tokenizer)
    index = read_index(params.pretrain.shards)
    model = pretrain(model, family, tokenizer, params, index)
    if model is None:  # under torchrun, rank 0 alone saves
        return
    save(model, tokenizer, Path(paths.pretrained))
    clear_checkpoints(checkpoint_dir(paths, "pretrain"))
    print(f"pretrain: {params.pretrain.steps} steps -> {paths.pretrained}")


if __name__ == "__main__":
    run_main(main)
