"""Stage `quantize`: models/student -> models/student-int8/ (uniform affine INT8, model/quantization.py).

Activation ranges are calibrated on `quantize.calibration_batches` val batches, each seen twice: as the
captioning pass (record inputs, caption decoder inputs) and as the VQA pass (question joined to the text),
so every Linear, the decoder's included, sees the inputs it will meet. Optional L1 magnitude pruning of the
Linear weights (torch.nn.utils.prune) runs first. The written model is loaded back and must reproduce the
in-memory quantized model's outputs before the stage succeeds -> metrics/quantize.json (sizes, round trip).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune
from transformers import AutoTokenizer

from model.modeling import TrimodalForConditionalGeneration
from model.quantization import WEIGHTS, export_int8, load_int8, quantize_model
from stages.common.atomic import atomic_dir, write_json
from stages.common.batches import decoder_labels, model_inputs, with_question
from stages.common.loader import make_loader
from stages.common.params import load_params

STUDENT = Path("models/student")
OUT_DIR = Path("models/student-int8")
METRICS = Path("metrics/quantize.json")


def calibration_inputs(model, shards: str, batch_size: int, batches: int) -> Iterator[dict]:
    """Forward kwargs for calibration: per val batch, the captioning pass and the VQA pass."""
    for batch in islice(make_loader(shards, "val", batch_size), batches):
        inputs = model_inputs(batch)
        caption = decoder_labels(batch["caption_ids"], batch["caption_mask"])
        if caption.ne(-100).any():
            yield {**inputs, "decoder_input_ids": model.shift_right(caption)}
        answer = decoder_labels(batch["answer_ids"], batch["answer_mask"])
        if not answer.ne(-100).any():
            continue
        text_ids, text_mask = with_question(batch, model.config.pad_token_id)
        yield {**inputs, "text_ids": text_ids, "text_mask": text_mask, "decoder_input_ids": model.shift_right(answer)}


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
    with torch.no_grad():
        x, y = a(**kwargs), b(**kwargs)
    return max(float((x.logits - y.logits).abs().max()), float((x.class_logits - y.class_logits).abs().max()))


def main(argv: Sequence[str] | None = None) -> None:
    params = load_params("params.yaml", sys.argv[1:] if argv is None else list(argv))
    q = params.quantize
    if not 0.0 <= q.prune_amount < 1.0:
        raise ValueError(f"quantize.prune_amount must be in [0, 1), got {q.prune_amount}")
    tokenizer = AutoTokenizer.from_pretrained(STUDENT)
    model = TrimodalForConditionalGeneration.from_pretrained(STUDENT).eval()
    zeroed = prune_linears(model, q.prune_amount) if q.prune_amount > 0 else 0
    probe = next(calibration_inputs(model, params.distill.shards, q.batch_size, 1))
    quantized = quantize_model(model, calibration_inputs(model, params.distill.shards, q.batch_size,
                                                         q.calibration_batches))
    with atomic_dir(OUT_DIR) as tmp:
        summary = export_int8(quantized, model.config, tmp)
        tokenizer.save_pretrained(tmp)
        difference = max_difference(quantized, load_int8(tmp), probe)
        if difference > 1e-4:
            raise RuntimeError(f"quantize: the INT8 model read back from {WEIGHTS} differs from the one written "
                               f"(max |logit difference| {difference:.3g})")
    fp32_bytes = (STUDENT / "model.safetensors").stat().st_size
    int8_bytes = (OUT_DIR / WEIGHTS).stat().st_size
    metrics = {**summary, "fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "size_ratio": int8_bytes / fp32_bytes,
               "pruned_weights": zeroed, "round_trip_max_difference": difference}
    write_json(METRICS, metrics)
    print("quantize: " + json.dumps(metrics))


if __name__ == "__main__":
    main()
