"""Stage `instruct`: instruction tuning (docs/model.md "Alignment") of the fine-tuned model
(models/finetune) -> models/instruct/ (+ tokenizer), which `align` tunes on preferences into the teacher.

Every record is asked its tasks (caption, VQA, class name, which-of-these caption) as natural-language
instructions from conf's `instruct.templates` through the tokenizer's chat template (trimodal/alignment/instructions.py,
trimodal/alignment/instruction_tasks.py); the fine-tuning objectives keep training beside them (the trimodal family's
model/trimodal/tasks.py, DeepSeek-VL's chat turns), so the formats the evaluation asks in do not regress.

Measured on the val split, before (the fine-tuned model) and after: exact-match accuracy per task on the
`held_out` templates, which no stage trains on -> metrics/instruct.json (the tasks' mean before and after, each
task after, the task scores) and metrics/details/instruct.json (per task and template before and after, the task
scores per modality subset, and `cut_prompts`: per template, how many val prompts are longer than the trimodal
decoder reads whole, each also a line of the log).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer

from trimodal.alignment.instruction_tasks import cut_lines, cut_prompts, instruct_step, template_scores
from trimodal.alignment.instructions import TASKS, check_templates
from trimodal.alignment.responses import prompt_width
from trimodal.atomic import write_json
from trimodal.config_errors import run_main
from trimodal.data.loader import read_index
from trimodal.evaluation.predict import val_scores
from trimodal.evaluation.scoring import headline
from trimodal.model.families import family_for, load_pretrained
from trimodal.params import load_params
from trimodal.training.checkpoint import fingerprint
from trimodal.training.distributed import launch
from trimodal.training.models import file_digest, save
from trimodal.training.trainer import TrainJob, checkpoint_dir, clear_checkpoints, fit


def held_out(model, tokenizer, params) -> dict:
    asked = params.instructions
    return template_scores(model, tokenizer, params.instruct.shards, "val", asked.templates, "held_out",
                           asked.options, params.instruct.eval_batch_size, params.seed)


def summary_of(before: dict, after: dict) -> dict:
    """metrics/instruct.json: held-out template accuracy, the tasks' mean before and after, each task after."""
    tasks = {f"held_out_{task}": after[task]["accuracy"] for task in TASKS if task in after}
    return {"held_out_mean_before": before["mean"], "held_out_mean": after["mean"], **tasks}


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    params = load_params("params.yaml", argv)
    check_templates(params.instructions.templates, params.instructions.options)
    if launch(params.trainer.devices, "stages.instruct", argv):
        return
    paths, p = params.paths, params.instruct
    tokenizer = AutoTokenizer.from_pretrained(paths.finetuned)
    model = load_pretrained(paths.finetuned)
    family = family_for(model)
    replay = family.replay(tokenizer)
    data = family.skipped(p.shards, "train")
    asked = params.instructions
    step = instruct_step(tokenizer, asked.templates, asked.options, replay, asked.prompt_noise)
    job = TrainJob.of(params, "instruct", fingerprint(p, params.instructions, params.seed, read_index(p.shards),
                                                      file_digest(Path(paths.finetuned))))
    model = fit(model, step, job, keep=family.keep, summary=data)
    if model is None:  # under torchrun, rank 0 alone evaluates and saves
        return
    cut = cut_prompts(model, tokenizer, p.shards, "val", asked.templates, asked.options, params.seed)
    for line in cut_lines(cut, prompt_width(model), "val"):
        print(f"instruct: {line}")
    before = held_out(load_pretrained(paths.finetuned).to(next(model.parameters()).device), tokenizer, params)
    after = held_out(model, tokenizer, params)
    scores = val_scores(model, tokenizer, p.shards)
    write_json(Path(paths.details) / "instruct.json", {"held_out": {"before": before, "after": after},
                                                       "val": scores, "cut_prompts": cut})
    summary = {**summary_of(before, after), **headline(scores["overall"]), **data}
    write_json(Path(paths.metrics) / "instruct.json", summary)
    save(model, tokenizer, Path(paths.instructed))
    clear_checkpoints(checkpoint_dir(paths, "instruct"))
    print("instruct: " + json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
