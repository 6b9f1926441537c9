"""Stage `pretrain`: self-supervised + contrastive objectives (MLM, MIM, MAM, ITC/ATC/VAC, weighted by
model.loss_weights) on the train shards -> models/pretrain/ (save_pretrained + tokenizer).

Checkpoints go to checkpoints/pretrain/ (kept across runs: a rerun resumes); metrics to metrics/pretrain/ (dvclive).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration
from model.objectives import pretraining_losses
from stages.common.batches import model_inputs, same_caption
from stages.common.checkpoint import fingerprint
from stages.common.distributed import launch
from stages.common.loader import read_index
from stages.common.models import save
from stages.common.params import Params, load_params
from stages.common.trainer import checkpoint_dir, clear_checkpoints, fit


def build_model(params: Params, shards: str, tokenizer) -> TrimodalForConditionalGeneration:
    index = read_index(shards)
    from_data = {"vocab_size": len(tokenizer), "num_classes": max(1, len(index["labels"])),
                 "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                 "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.bos_token_id,
                 "mask_token_id": tokenizer.mask_token_id,
                 # the features of the data (sample_rate is None when the data holds no audio)
                 **{k: index[k] for k in ("image_size", "n_mels", "sample_rate", "n_fft", "hop_length",
                                          "max_text_tokens") if index.get(k) is not None}}
    config = TrimodalConfig(**{**params.model, **from_data})
    config.id2label = dict(enumerate(index["labels"]))
    torch.manual_seed(params.seed)
    return TrimodalForConditionalGeneration(config)


def pretrain_step(model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return pretraining_losses(model, model_inputs(batch), generator, positives=same_caption(batch),
                              pairable=batch.get("pairable"))


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    params = load_params("params.yaml", argv)
    if launch(params.trainer.devices, "stages.pretrain", argv):
        return
    paths = params.paths
    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer)
    model = build_model(params, params.pretrain.shards, tokenizer)
    model = fit(model, pretrain_step, params.pretrain, params.trainer, params.seed, "pretrain",
                fingerprint(params.pretrain, params.model, params.seed, read_index(params.pretrain.shards)), paths)
    if model is None:  # under torchrun, rank 0 alone saves
        return
    save(model, tokenizer, Path(paths.pretrained))
    clear_checkpoints(checkpoint_dir(paths, "pretrain"))
    print(f"pretrain: {params.pretrain.steps} steps -> {paths.pretrained}")


if __name__ == "__main__":
    main()
