"""INT8 (model/quantization.py) vs FP32 latency, side by side, at the demo student's size and at larger presets.

Usage: python benchmarks/int8_latency.py [--presets student small] [--repeats 5] [--threads 0]
                                         [--out benchmarks/results/int8_latency.json]
For each preset: a randomly initialised model (latency does not depend on the weights), quantized with
activation ranges from synthetic batches, timed on the same inference the evaluate stage times (encoder,
classifier, greedy caption of exactly max_new_tokens tokens) at batch 1 and 32, plus the weight-file sizes.
`student` is the tiny preset with params.yaml's distill.student changes (what `dvc repro` builds).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trimodal.evaluation.latency import inference, interleaved_ms  # noqa: E402
from trimodal.model.quantization import WEIGHTS, export_int8, load_int8, quantize_model  # noqa: E402
from trimodal.model.trimodal.configuration import TrimodalConfig  # noqa: E402
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration  # noqa: E402
from trimodal.params import defaults, load_params  # noqa: E402


def config_for(preset: str) -> TrimodalConfig:
    if preset == "student":
        params = load_params(REPO / "params.yaml")
        return TrimodalConfig(**{**params.model, **params.distill.student, "vocab_size": 400, "num_classes": 3})
    return TrimodalConfig.from_preset(preset, num_classes=3)


def batch(config: TrimodalConfig, size: int, seed: int = 0) -> dict:
    """A loader-shaped batch: every modality present, 1 s of audio (100 log-Mel frames), 16 text tokens."""
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(size, 3, config.image_size, config.image_size, generator=g),
            "image_present": torch.ones(size, dtype=torch.bool),
            "mel": torch.randn(size, config.n_mels, 100, generator=g), "mel_lengths": torch.full((size,), 100),
            "text_ids": torch.randint(5, config.vocab_size, (size, 16), generator=g),
            "text_mask": torch.ones(size, 16, dtype=torch.bool)}


def calibration(config: TrimodalConfig, n: int = 4) -> list[dict]:
    out = []
    for seed in range(n):
        b = batch(config, 8, seed)
        out.append({"pixel_values": b["image"], "image_present": b["image_present"], "input_features": b["mel"],
                    "mel_lengths": b["mel_lengths"], "text_ids": b["text_ids"], "text_mask": b["text_mask"],
                    "decoder_input_ids": torch.randint(5, config.vocab_size, (8, 8))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["student", "small"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/int8_latency.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p = replace(defaults().evaluate, latency_repeats=args.repeats)
    results = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "presets": {}}
    for preset in args.presets:
        config = config_for(preset)
        torch.manual_seed(0)
        fp32 = TrimodalForConditionalGeneration(config).eval()
        with tempfile.TemporaryDirectory() as tmp:
            fp32.save_pretrained(Path(tmp) / "fp32")
            reference = TrimodalForConditionalGeneration(config).eval()
            reference.load_state_dict(fp32.state_dict())
            export_int8(quantize_model(fp32, calibration(config)), config, Path(tmp) / "int8")
            int8 = load_int8(Path(tmp) / "int8")
            sizes = {"fp32_bytes": (Path(tmp) / "fp32/model.safetensors").stat().st_size,
                     "int8_bytes": (Path(tmp) / "int8" / WEIGHTS).stat().st_size}
        row = {"d_model": config.d_model, "parameters": sum(q.numel() for q in reference.parameters()), **sizes,
               "size_ratio": round(sizes["int8_bytes"] / sizes["fp32_bytes"], 4)}
        for size in (1, 32):
            inputs = batch(config, size)
            timed = interleaved_ms({"fp32": inference(reference, inputs, p.max_new_tokens),
                                    "int8": inference(int8, inputs, p.max_new_tokens)}, p.latency_repeats)
            a, b = timed["fp32"], timed["int8"]
            row[f"fp32_ms_batch{size}"], row[f"int8_ms_batch{size}"] = round(a, 2), round(b, 2)
            row[f"latency_ratio_batch{size}"] = round(b / a, 3)
        results["presets"][preset] = row
        print(preset, json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
