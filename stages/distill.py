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
from trimodal.data.batches import decoder_labels, model_inputs, question_prefixed, same_caption
from trimodal.data.loader import read_index
from trimodal.evaluation.predict import val_scores
from trimodal.evaluation.scoring import headline
from trimodal.model.deepseek_vl.tasks import kd_step, skipped, usable
from trimodal.model.families import DEEPSEEK_VL, family_of_model, load_pretrained
from trimodal.model.losses import kd_loss
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration
from trimodal.model.trimodal.objectives import contrastive_losses, view_losses
from trimodal.params import DistillParams, load_params
from trimodal.training.checkpoint import fingerprint
from trimodal.training.distributed import launch, setup
from trimodal.training.models import file_digest, parameter_count, save
from trimodal.training.trainer import StepFn, TrainJob, checkpoint_dir, clear_checkpoints, fit

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


def distill_step(teacher: TrimodalForConditionalGeneration, alpha: float, temperature: float) -> StepFn:
    """The KD objectives for `train`: ce (caption), vqa (answer) and cls, each soft (teacher) + hard (labels),
    plus the student's own contrastive losses and image views (caption and class from the image alone, on records
    that also hold text or audio: the student's vision path idles beside them as the teacher's did)."""

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
        if (answer != -100).any():
            with torch.no_grad():
                taught = teacher(encoder_outputs=teacher_encoded, decoder_input_ids=asked)
            out = model(encoder_outputs=encoded, decoder_input_ids=asked)
            losses["vqa"] = kd_loss(out.logits, taught.logits, answer, alpha, temperature)
        return losses

    return step


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
    deepseek_vl = family_of_model(teacher) == DEEPSEEK_VL
    step = (kd_step(teacher, tokenizer, params.distill.alpha, params.distill.temperature) if deepseek_vl
            else distill_step(teacher, params.distill.alpha, params.distill.temperature))
    data = skipped(params.distill.shards, "train") if deepseek_vl else {}
    job = TrainJob.of(params, "distill", fingerprint(params.distill, params.seed, read_index(params.distill.shards),
                                                     file_digest(Path(paths.teacher))))
    student = fit(student, step, job, keep=usable if deepseek_vl else None, summary=data)
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
