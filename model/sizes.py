"""Parameter counts per component of a preset, built on the meta device (no memory, no init).

    python -m model.sizes [tiny small base full]
"""
from __future__ import annotations

import sys

import torch

from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration

COMPONENTS = {
    "vision": "encoder.vision", "text": "encoder.text", "audio": "encoder.audio", "fusion": "encoder.fusion",
    "reasoning": "encoder.core", "decoder": "decoder", "classifier": "classifier",
}


def parameter_counts(preset: str) -> dict[str, int]:
    with torch.device("meta"):
        model = TrimodalForConditionalGeneration(TrimodalConfig.from_preset(preset))
    counts = {name: sum(p.numel() for p in model.get_submodule(path).parameters())
              for name, path in COMPONENTS.items()}
    counts["objective heads"] = sum(p.numel() for n, p in model.named_parameters()
                                    if n.split(".")[0] in ("mlm_head", "mim_head", "mam_head", "projections",
                                                           "logit_scale"))
    counts["total"] = sum(p.numel() for p in model.parameters())  # lm_head is tied to the decoder embedding
    return counts


def main(argv: list[str] | None = None) -> None:
    presets = (sys.argv[1:] if argv is None else argv) or ["tiny", "small", "base", "full"]
    table = {p: parameter_counts(p) for p in presets}
    names = list(next(iter(table.values())))
    print("| component | " + " | ".join(presets) + " |")
    print("| --- |" + " ---: |" * len(presets))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{table[p][name] / 1e6:.2f} M" for p in presets) + " |")


if __name__ == "__main__":
    main()
