"""benchmarks/few_images.py without the DAG: the linear baseline on images it can and cannot separate, the demo
sizing, the table and the arguments."""
from __future__ import annotations

import pytest
import torch

from benchmarks.few_images import LAMBDAS, logistic_regression, markdown, parse


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


def test_the_table_names_both_classifiers_and_the_records():
    result = {"records": {"train": 160, "val": 240, "test": 400}, "train_per_class": {"a": 18, "b": 23},
              "model": {"val": 0.9, "test": 0.875}, "logistic_regression": {"weight_decay": 0.01, "val": 0.5,
                                                                            "test": 0.4}}
    text = markdown(result)
    assert "160 train images (18-23 per class), 240 val, 400 test" in text
    assert "| trimodal (finetune, image alone) | 0.900 | 0.875 |" in text
    assert "| logistic regression on the pixels (L2 0.01) | 0.500 | 0.400 |" in text


def test_arguments():
    args = parse([])
    assert (args.per_class, args.seed, args.threads, args.overrides) == (20, 0, 2, [])
    assert parse(["--set", "finetune.steps=600", "--per-class", "10"]).overrides == ["finetune.steps=600"]
    with pytest.raises(SystemExit):
        parse(["--per-class", "0"])
