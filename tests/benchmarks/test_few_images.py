"""benchmarks/few_images.py without the DAG: the linear baseline on images it can and cannot separate, the demo
sizing, the table and the arguments."""
from __future__ import annotations

import pytest
import torch

from benchmarks.few_images import LAMBDAS, logistic_regression, markdown, parse, summary


def blobs(n: int, seed: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [n, 3, 4, 4] of 2 classes whose mean pixel differs by `shift` (0: nothing to learn)."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    return torch.randn(n, 3, 4, 4, generator=generator) + shift * y[:, None, None, None], y


def test_the_linear_baseline_separates_what_the_pixels_separate_and_nothing_else():
    separable = logistic_regression(blobs(40, 0, 3.0), blobs(40, 1, 3.0), blobs(40, 2, 3.0), classes=2)
    assert separable["test"] == 1.0 and separable["weight_decay"] in LAMBDAS
    assert set(separable["tried"]) == {str(w) for w in LAMBDAS}
    noise = logistic_regression(blobs(40, 0, 0.0), blobs(400, 1, 0.0), blobs(400, 2, 0.0), classes=2)
    assert 0.4 < noise["test"] < 0.6  # chance


def run_of(seed: int, model_test: float, linear_test: float) -> dict:
    return {"config": {"seed": seed}, "records": {"train": 160, "val": 240, "test": 400},
            "train_per_class": {"a": 18, "b": 23}, "model": {"val": 0.9, "test": model_test},
            "logistic_regression": {"weight_decay": 0.01, "val": 0.5, "test": linear_test}}


def test_the_verdict_is_on_test_over_the_seeds_and_the_table_names_both_classifiers():
    runs = [run_of(0, 0.875, 0.4), run_of(1, 0.3, 0.35), run_of(2, 0.5, 0.5)]
    s = summary(runs)
    assert s["seeds"] == 3 and s["model_reaches_linear"] == 2  # a tie reaches it; 0.3 < 0.35 does not
    assert s["model_test_min"] == 0.3 and abs(s["linear_test_mean"] - 1.25 / 3) < 1e-9
    text = markdown({"runs": runs, "summary": s})
    assert "| 0 | trimodal (finetune, image alone) | 0.900 | 0.875 | 160 (18-23 per class) / 240 / 400 |" in text
    assert "| 1 | logistic regression on the pixels (L2 0.01) | 0.500 | 0.350 | |" in text
    assert "the model reaches it in 2 of 3." in text


def test_arguments():
    args = parse([])
    assert (args.per_class, args.seeds, args.threads, args.overrides) == (20, [0], 2, [])
    assert parse(["--seeds", "0", "1", "2"]).seeds == [0, 1, 2]
    assert parse(["--set", "finetune.steps=600", "--per-class", "10"]).overrides == ["finetune.steps=600"]
    with pytest.raises(SystemExit):
        parse(["--per-class", "0"])
