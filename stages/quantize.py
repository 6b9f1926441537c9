"""Stage `quantize`: models/student -> models/student-int8/ (uniform affine INT8, model/quantization.py), for a
student of either family (model/families.py).

Activation ranges are calibrated on `quantize.calibration_batches` val batches, each seen as the passes the model
meets, so every Linear, the decoder's included, sees the inputs it will meet. Trimodal: twice, as the captioning
pass (record inputs, caption decoder inputs) and as the VQA pass (the question as the decoder's prefix).
DeepSeek-VL: as its fine-tuning chat turns (model/deepseek_vl/tasks.py: caption, VQA and class-name turns of the
records it reads, the images in front). Optional L1 magnitude pruning of the Linear weights (torch.nn.utils.prune)
runs first.

Sensitivity sweep: each Linear alone in INT8 (the rest float), scored by the KL divergence of its output
distributions (next tokens at the target positions, and classes where the model has a classifier) from the float
model's on the first `quantize.sensitivity_batches` calibration batches (one model run per Linear and batch: the
stage's largest cost). Then, most fragile first, Linears go back to float while the all-INT8 model's val accuracy
(teacher-forced exact match of captions / answers / class names, and classes) is more than `quantize.max_val_drop`
below the float model's, at most `quantize.max_fp32_linears` of them. The written model is loaded back and must
reproduce the in-memory quantized model's outputs before the stage succeeds -> metrics/details/quantize.json
(sizes, round trip, the sweep, the Linears kept in float, val accuracy float / all-INT8 / shipped) and its
headline -> metrics/quantize.json. A kept Linear computes in float from int8 weights (weight-only, as
embeddings), so the file stays small.

Width rule: INT8 pays only where the GEMM outweighs quantizing the input and dequantizing the output. On the
2-core x86 machine a 48-wide int8 Linear is ~5x slower than the float one at 1 row and ~2.7x at 32 rows, a
256-wide one is faster from ~32 rows (benchmarks/README.md). So Linears with fewer than
`quantize.int8_min_features` inputs or outputs (narrow_linears) compute in float from their int8 weights. The rule
is fixed, not timed, so the artifact is the same on every run and machine.

Speed, measured and reported (metrics/details/quantize.json only, never deciding): each INT8 Linear's calls in one
inference (trimodal/evaluation/latency.py's workload at each of `quantize.speed_batch_sizes`, shapes recorded by a
hook) replayed in INT8 and in float, interleaved, and the Linears found slower in INT8 (`slower_in_int8`: where
the rule may be wrong for this CPU); then the float model, the all-INT8 model and the shipped one timed whole,
interleaved (`latency`).
"""
from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from trimodal.atomic import atomic_dir, write_json
from trimodal.config_errors import run_main
from trimodal.data.loader import make_loader
from trimodal.evaluation.latency import inference, interleaved_ms, latency_ms, timing_batches
from trimodal.model.families import family_for, load_pretrained
from trimodal.model.quantization import (
    SENSITIVITY,
    WEIGHTS,
    export_int8,
    int8_linears,
    layer_sensitivity,
    load_int8,
    quantize_model,
    round_weight_only,
    swap_in,
    weight_only_linear,
)
from trimodal.params import load_params


def calibration_inputs(model, shards: str, batch_size: int, batches: int,
                       tokenizer: PreTrainedTokenizerBase | None = None) -> Iterator[list[dict]]:
    """Forward kwargs for calibration, one list per val batch of the records the family reads, each with `labels`
    aligned with the model's logits (Family.calibration_passes: trimodal's captioning and VQA passes; DeepSeek-VL's
    chat turns, rendered by `tokenizer`)."""
    family = family_for(model)
    for batch in islice(make_loader(shards, "val", batch_size, keep=family.keep), batches):
        yield family.calibration_passes(model, tokenizer, batch)


def forward(model: nn.Module, kwargs: dict):
    return model(**{k: v for k, v in kwargs.items() if k not in ("labels", "class_labels")})


def class_logits(output) -> torch.Tensor | None:
    """The classifier's logits; None for a model without one (DeepSeek-VL names its classes in words)."""
    return getattr(output, "class_logits", None)


@torch.no_grad()
def reference(model: nn.Module, batches: Sequence[dict]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The float model's log-probabilities per batch: (tokens at target positions, classes or None)."""
    out = []
    for kwargs in batches:
        o = forward(model, kwargs)
        classes = class_logits(o)
        out.append((F.log_softmax(o.logits[kwargs["labels"].ne(-100)], -1),
                    None if classes is None else F.log_softmax(classes, -1)))
    return out


@torch.no_grad()
def divergence(model: nn.Module, batches: Sequence[dict],
               ref: list[tuple[torch.Tensor, torch.Tensor | None]]) -> float:
    """Mean KL(float || model) over the target tokens and the class distributions of `batches`."""
    total, count = 0.0, 0
    for kwargs, (tokens, classes) in zip(batches, ref, strict=True):
        o = forward(model, kwargs)
        for r, logits in ((tokens, o.logits[kwargs["labels"].ne(-100)]), (classes, class_logits(o))):
            if r is None:
                continue
            total += float(F.kl_div(F.log_softmax(logits, -1), r, log_target=True, reduction="sum"))
            count += len(r)
    return total / max(1, count)


@torch.no_grad()
def val_accuracy(model: nn.Module, batches: Sequence[dict]) -> float:
    """Teacher-forced exact match of every target sequence (captions, answers, class names) and class accuracy
    (a model with a classifier), pooled."""
    hits, count = 0, 0
    for kwargs in batches:
        o, labels = forward(model, kwargs), kwargs["labels"]
        has = labels.ne(-100).any(1)
        hits += int(((o.logits.argmax(-1) == labels) | labels.eq(-100)).all(1)[has].sum())
        count += int(has.sum())
        if "class_labels" in kwargs:
            known = kwargs["class_labels"].ge(0)
            hits += int((o.class_logits.argmax(-1) == kwargs["class_labels"])[known].sum())
            count += int(known.sum())
    return hits / max(1, count)


def keep_fragile(fp32: nn.Module, quantized: nn.Module, sensitivity: dict[str, float], batches: Sequence[dict],
                 max_drop: float, max_layers: int) -> tuple[list[str], dict[str, float]]:
    """Most sensitive first, Linears return to float (weight-only int8, as shipped) until the val accuracy is
    within max_drop of the float model's, or max_layers are back. Returns the kept names and the accuracies
    (float, all-INT8, with the kept ones)."""
    base = val_accuracy(fp32, batches)
    int8 = int8_linears(quantized)
    originals = {name: fp32.get_submodule(name) for name in int8}
    keep: list[str] = []
    accuracy = {"fp32": base}
    for name in [None, *sorted(sensitivity, key=sensitivity.get, reverse=True)[:max_layers]]:
        if name is not None:
            keep.append(name)
        swap_in(fp32, {n: weight_only_linear(originals[n]) if n in keep else m for n, m in int8.items()})
        current = val_accuracy(fp32, batches)
        swap_in(fp32, originals)
        accuracy.setdefault("int8_all", current)
        accuracy["int8"] = current
        if base - current <= max_drop:
            break
    return keep, accuracy


def linear_calls(model: nn.Module, workload: Callable[[], None]) -> dict[str, list[torch.Size]]:
    """The input shapes each INT8 Linear of `model` is called with while `workload` (which runs `model`) runs."""
    shapes: dict[str, list[torch.Size]] = {name: [] for name in int8_linears(model)}
    handles = [module.register_forward_pre_hook(lambda _, args, name=name: shapes[name].append(args[0].shape))
               for name, module in int8_linears(model).items()]
    try:
        workload()
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def replay(module: nn.Module, inputs: list[torch.Tensor]):
    @torch.no_grad()
    def run() -> None:
        for x in inputs:
            module(x)

    return run


def speed_sweep(fp32: nn.Module, quantized: nn.Module, workloads: dict[str, Callable[[], None]],
                repeats: int) -> dict[str, dict[str, float]]:
    """Per INT8 Linear of `quantized` and workload w (a callable running `quantized`, e.g. one inference at a
    batch size): "calls_<w>" (its calls in w), "int8_ms_<w>" and "float_ms_<w>" (the time of those calls on
    inputs of the recorded shapes, INT8 and its float twin in `fp32`, interleaved)."""
    if not workloads:
        return {}
    calls = {w: linear_calls(quantized, workload) for w, workload in workloads.items()}
    generator = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, float]] = {}
    for name, module in int8_linears(quantized).items():
        out[name] = {}
        for w, shapes in calls.items():
            inputs = [torch.randn(shape, generator=generator) for shape in shapes[name]]
            ms = interleaved_ms({"int8": replay(module, inputs), "float": replay(fp32.get_submodule(name), inputs)},
                                repeats) if inputs else {"int8": 0.0, "float": 0.0}
            out[name] |= {f"calls_{w}": len(inputs), f"int8_ms_{w}": ms["int8"], f"float_ms_{w}": ms["float"]}
    return out


def narrow_linears(model: nn.Module, names: Iterable[str], min_features: int) -> list[str]:
    """The Linears of `names` with fewer than `min_features` inputs or outputs. Dynamic INT8 quantizes each input
    row (cost ~ inputs) and dequantizes each output row (~ outputs) around a GEMM of ~ inputs x outputs, so the
    overhead per GEMM operation is ~ 1/outputs + 1/inputs: a narrow side on either end makes INT8 lose."""
    return [name for name in names
            if min(model.get_submodule(name).in_features, model.get_submodule(name).out_features) < min_features]


def slower_in_int8(speed: dict[str, dict[str, float]]) -> list[str]:
    """The Linears whose INT8 calls took longer than their float twin's in some workload, most time lost first
    (a Linear the inference never calls, e.g. a pre-training head, is not timed and stays INT8)."""
    def lost(row: dict[str, float]) -> float:
        called = [k.removeprefix("calls_") for k in row if k.startswith("calls_") and row[k]]
        return max((row[f"int8_ms_{w}"] - row[f"float_ms_{w}"] for w in called), default=0.0)

    return sorted((name for name, row in speed.items() if lost(row) > 0), key=lambda name: -lost(speed[name]))


def workloads(model: nn.Module, batches: dict[str, dict], new_tokens: int) -> dict[str, Callable[[], None]]:
    """One inference of `model` per timing batch."""
    return {w: inference(model, batch, new_tokens) for w, batch in batches.items()}


def prune_linears(model: nn.Module, amount: float) -> int:
    """Zero the smallest-|w| `amount` of every Linear weight (made permanent); returns the weights zeroed."""
    zeroed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            prune.l1_unstructured(module, "weight", amount)
            prune.remove(module, "weight")
            zeroed += int(module.weight.eq(0).sum())
    return zeroed


def max_difference(a: nn.Module, b: nn.Module, kwargs: dict) -> float:
    """Largest |difference| of the two models' logits (and class logits, where they have them) on `kwargs`."""
    with torch.no_grad():
        x, y = a(**kwargs), b(**kwargs)
    pairs = [(x.logits, y.logits), (class_logits(x), class_logits(y))]
    return max(float((p - q).abs().max()) for p, q in pairs if p is not None)


def headline(metrics: dict) -> dict:
    """What `dvc metrics show` lists for the stage: the shipped file's size (`size_bytes`, as the eval rows name
    it) and its ratio to the float file, how many Linears run in INT8 and how many stay float, the round trip, and
    val accuracy float vs shipped."""
    return {"size_bytes": metrics["int8_bytes"], "size_ratio": metrics["size_ratio"],
            "linear_int8": metrics["linear_int8"], "linear_fp32": len(metrics["kept_fp32"]),
            "round_trip_max_difference": metrics["round_trip_max_difference"],
            "val_accuracy_fp32": metrics["val_accuracy"]["fp32"], "val_accuracy_int8": metrics["val_accuracy"]["int8"]}


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else list(argv))
    q = params.quantize
    if not 0.0 <= q.prune_amount < 1.0:
        raise ValueError(f"quantize.prune_amount must be in [0, 1), got {q.prune_amount}")
    if q.sensitivity_batches < 1:
        raise ValueError(f"quantize.sensitivity_batches must be at least 1, got {q.sensitivity_batches}")
    if any(size < 1 for size in q.speed_batch_sizes):
        raise ValueError(f"quantize.speed_batch_sizes must be positive, got {q.speed_batch_sizes}")
    student, out_dir = Path(params.paths.student), Path(params.paths.student_int8)
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = load_pretrained(student).eval()
    zeroed = prune_linears(model, q.prune_amount) if q.prune_amount > 0 else 0
    per_batch = list(calibration_inputs(model, q.shards, q.batch_size, q.calibration_batches, tokenizer))
    batches = [kwargs for passes in per_batch for kwargs in passes]
    fp32 = round_weight_only(copy.deepcopy(model))  # differs from the INT8 model in its Linears only
    quantized = quantize_model(copy.deepcopy(model), batches)
    # the sweep runs the model once per Linear: on the first `sensitivity_batches` calibration batches only
    sweep = [kwargs for passes in per_batch[:q.sensitivity_batches] for kwargs in passes]
    ref = reference(fp32, sweep)
    sensitivity = layer_sensitivity(fp32, quantized, lambda m: divergence(m, sweep, ref))
    fragile, accuracy = keep_fragile(fp32, quantized, sensitivity, batches, q.max_val_drop, q.max_fp32_linears)
    narrow = [name for name in narrow_linears(fp32, int8_linears(quantized), q.int8_min_features)
              if name not in fragile]
    keep = fragile + narrow
    shipped = quantize_model(copy.deepcopy(model), batches, keep_fp32=keep) if keep else quantized
    if keep:
        accuracy["int8"] = val_accuracy(shipped, batches)  # as shipped: the kept Linears' weights are int8 too
    # speed: measured and reported, never deciding (timings differ run to run; the artifact must not)
    timing_at = timing_batches(q.shards, "val", q.speed_batch_sizes, family_for(model), tokenizer)
    speed = speed_sweep(fp32, quantized, workloads(quantized, timing_at, q.speed_new_tokens), q.speed_repeats)
    timed_models = latency_ms({"fp32": model, "int8_all": quantized, "shipped": shipped}, timing_at,
                              q.speed_new_tokens, q.speed_repeats) if timing_at else {}
    latency = {name: {f"ms_{w}": round(ms, 3) for w, ms in row.items()} for name, row in timed_models.items()}
    ranked = [{"linear": name, "kl": max(0.0, kl), "fp32": name in keep}  # float noise can dip a hair below 0
              for name, kl in sorted(sensitivity.items(), key=lambda kv: kv[1], reverse=True)]
    timed = [{"linear": name, **{k: round(v, 5) for k, v in row.items()}, "fp32": name in keep}
             for name, row in speed.items()]
    kept = {"kept_fp32": keep, "kept_fp32_fragile": fragile, "kept_fp32_narrow": narrow,
            "int8_min_features": q.int8_min_features}
    measured = {"speed": timed, "slower_in_int8": slower_in_int8(speed), "latency": latency}
    probe = {k: v for k, v in batches[0].items() if k not in ("labels", "class_labels")}
    with atomic_dir(out_dir) as tmp:
        summary = export_int8(shipped, model.config, tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / SENSITIVITY, {**kept, "val_accuracy": accuracy, "sensitivity": ranked})
        difference = max_difference(shipped, load_int8(tmp), probe)
        if difference > 1e-4:
            raise RuntimeError(f"quantize: the INT8 model read back from {WEIGHTS} differs from the one written "
                               f"(max |logit difference| {difference:.3g})")
    fp32_bytes = (student / "model.safetensors").stat().st_size
    int8_bytes = (out_dir / WEIGHTS).stat().st_size
    metrics = {**summary, "fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "size_ratio": int8_bytes / fp32_bytes,
               "pruned_weights": zeroed, "round_trip_max_difference": difference, **kept,
               "val_accuracy": accuracy, "sensitivity": ranked, **measured}
    write_json(Path(params.paths.details) / "quantize.json", metrics)
    summary = headline(metrics)
    write_json(Path(params.paths.metrics) / "quantize.json", summary)
    print("quantize: " + json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
