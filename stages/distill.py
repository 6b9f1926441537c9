"""Stage `distill`: the teacher (models/teacher) trains a smaller student -> models/student/ (+ tokenizer).
A DeepSeek-VL teacher distils on its fine-tuning turns (model/deepseek_vl/tasks.py kd_step), the rest is the same.

The student is the teacher's config with `distill.student` overrides (fewer layers, narrower widths). Every
supervised output is distilled with the KD loss (docs/model.md "Distillation and quantization";
model.losses.kd_loss): the decoder's caption and VQA-answer logits and the classifier's logits, each mixing the
teacher's tempered distribution (alpha) with the hard labels (1 - alpha). The teacher runs in eval mode on the very
batch the student sees. The student also keeps the contrastive objectives (itc / atc / vac), which retrieval needs.

With `distill.init_from_teacher` the student starts from the teacher's weights: student layer i of a stack of
S takes teacher layer i * T // S (DistilBERT keeps every other layer), and a narrower tensor takes the
teacher's leading slice (Minitron-style width pruning); only what matches neither way starts random.
Then the val split is scored like the teacher's -> metrics/details/distill.json, beside the teacher's scores
from metrics/details/align.json (align made it); the student's headline (overall scores, parameters) ->
metrics/distill.json.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedConfig, PreTrainedModel

from trimodal.atomic import write_json
from trimodal.config_errors import run_main
from trimodal.data.loader import read_index
from trimodal.evaluation.predict import val_scores
from trimodal.evaluation.scoring import headline
from trimodal.model.families import family_for, load_pretrained
from trimodal.params import DistillParams, load_params
from trimodal.training.checkpoint import fingerprint
from trimodal.training.distributed import launch, setup
from trimodal.training.models import file_digest, parameter_count, save
from trimodal.training.trainer import TrainJob, checkpoint_dir, clear_checkpoints, fit

LAYER = re.compile(r"^(.*\.(?:blocks|joint|layers))\.(\d+)\.(.*)$")  # numbered stacks: model/, transformers'
FREE_DICTS = {"loss_weights", "id2label", "label2id"}  # dicts whose keys are data, not settings


def merged(base: dict, overrides: dict, where: str = "distill.student") -> dict:
    """`overrides` on `base`, a nested dict (a DeepSeek-VL sub-config) merged key by key; unknown keys refused."""
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"{where}: unknown model settings {unknown}")
    return {**base, **{k: merged(base[k], v, f"{where}.{k}") if isinstance(v, dict) and isinstance(base[k], dict)
                       and k not in FREE_DICTS else v for k, v in overrides.items()}}


def student_config(teacher: PreTrainedConfig, overrides: dict) -> PreTrainedConfig:
    """The teacher's config (either family) with distill.student's changes."""
    return type(teacher).from_dict(merged(teacher.to_dict(), overrides))


def stack_depths(names) -> dict[str, int]:
    """Numbered stack (e.g. encoder.text.blocks) -> how many layers it has, from parameter names."""
    depth: dict[str, int] = {}
    for name in names:
        if match := LAYER.match(name):
            depth[match[1]] = max(depth.get(match[1], 0), int(match[2]) + 1)
    return depth


def init_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module) -> tuple[int, int]:
    """Copy (or slice) the teacher's tensors into the student; returns (tensors taken, tensors in student)."""
    source, target = teacher.state_dict(), student.state_dict()
    depth, student_depth = stack_depths(source), stack_depths(target)
    taken = 0
    with torch.no_grad():
        for name, tensor in target.items():
            key = name
            if (match := LAYER.match(name)) and match[1] in depth:
                key = f"{match[1]}.{int(match[2]) * depth[match[1]] // student_depth[match[1]]}.{match[3]}"
            teacher_tensor = source.get(key)
            if teacher_tensor is None or teacher_tensor.ndim != tensor.ndim or any(
                    t < s for t, s in zip(teacher_tensor.shape, tensor.shape, strict=True)):
                continue
            tensor.copy_(teacher_tensor[tuple(slice(0, n) for n in tensor.shape)])
            taken += 1
    return taken, len(target)


def build_student(teacher: PreTrainedModel, params: DistillParams, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    student = type(teacher)(student_config(teacher.config, params.student))
    if params.init_from_teacher:
        taken, total = init_from_teacher(student, teacher)
        print(f"distill: {taken}/{total} student tensors initialised from the teacher")
    return student


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    params = load_params("params.yaml", argv)
    if launch(params.trainer.devices, "stages.distill", argv):
        return
    paths = params.paths
    tokenizer = AutoTokenizer.from_pretrained(paths.teacher)
    # on this rank's device, beside the student (setup binds the rank's GPU)
    teacher = load_pretrained(paths.teacher).eval().requires_grad_(False)
    teacher = teacher.to(setup().device)
    student = build_student(teacher, params.distill, params.seed)
    sizes = {"teacher_parameters": parameter_count(teacher), "student_parameters": parameter_count(student)}
    print(f"distill: student {sizes['student_parameters']:,} parameters, teacher {sizes['teacher_parameters']:,} "
          f"({sizes['student_parameters'] / sizes['teacher_parameters']:.2f}x)")
    family = family_for(teacher)
    step = family.step("distill", tokenizer, teacher=teacher, alpha=params.distill.alpha,
                       temperature=params.distill.temperature)
    data = family.skipped(params.distill.shards, "train")
    job = TrainJob.of(params, "distill", fingerprint(params.distill, params.seed, read_index(params.distill.shards),
                                                     file_digest(Path(paths.teacher))))
    student = fit(student, step, job, keep=family.keep, summary=data)
    if student is None:  # under torchrun, rank 0 alone evaluates and saves
        return
    # the teacher's val scores were measured by align (which made it) on the same split: read, not recomputed
    details = {"student": val_scores(student, tokenizer, params.distill.shards),
               "teacher": json.loads((Path(paths.details) / "align.json").read_text())["val"], **sizes}
    write_json(Path(paths.details) / "distill.json", details)
    summary = {**headline(details["student"]["overall"]), "parameters": sizes["student_parameters"], **data}
    write_json(Path(paths.metrics) / "distill.json", summary)
    save(student, tokenizer, Path(paths.student))
    clear_checkpoints(checkpoint_dir(paths, "distill"))
    print("distill: " + json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
