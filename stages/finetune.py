"""Stage `finetune`: supervised objectives from models/pretrain -> models/finetune/ (+ tokenizer), which `instruct`
and `align` turn into the teacher. The trimodal family's objectives (ce, vqa, cls, itc / atc / vac) are
model/trimodal/tasks.py's. A DeepSeek-VL model (`model=deepseek_vl`) is fine-tuned on chat turns instead:
DeepSeek-VL's stage 3 (model/deepseek_vl/tasks.py), and the records it skips (audio only) are counted in
metrics/finetune.json.
After training, the val split is scored, overall and per modality subset (trimodal/evaluation/predict.py,
trimodal/evaluation/scoring.py) -> metrics/details/finetune.json, and its headline (overall scores, parameters) ->
metrics/finetune.json.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer

from trimodal.atomic import write_json
from trimodal.config_errors import run_main
from trimodal.data.loader import read_index
from trimodal.evaluation.predict import val_scores
from trimodal.evaluation.scoring import headline
from trimodal.model.families import family_for, load_pretrained
from trimodal.params import load_params
from trimodal.training.checkpoint import fingerprint
from trimodal.training.distributed import launch
from trimodal.training.models import file_digest, parameter_count, save
from trimodal.training.trainer import TrainJob, checkpoint_dir, clear_checkpoints, fit


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    params = load_params("params.yaml", argv)
    if launch(params.trainer.devices, "stages.finetune", argv):
        return
    paths = params.paths
    tokenizer = AutoTokenizer.from_pretrained(paths.pretrained)
    model = load_pretrained(paths.pretrained)
    family = family_for(model)  # DeepSeek-VL: its stage 3, supervised fine-tuning on chat turns
    data = family.skipped(params.finetune.shards, "train")
    job = TrainJob.of(params, "finetune", fingerprint(params.finetune, params.seed, read_index(params.finetune.shards),
                                                      file_digest(Path(paths.pretrained))))
    model = fit(model, family.step("finetune", tokenizer), job, keep=family.keep, summary=data)
    if model is None:  # under torchrun, rank 0 alone evaluates and saves
        return
    scores = val_scores(model, tokenizer, params.finetune.shards)
    write_json(Path(paths.details) / "finetune.json", scores)
    summary = {**headline(scores["overall"]), "parameters": parameter_count(model), **data}
    write_json(Path(paths.metrics) / "finetune.json", summary)
    save(model, tokenizer, Path(paths.finetuned))
    clear_checkpoints(checkpoint_dir(paths, "finetune"))
    print("finetune: " + json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
