"""Saved models: a trained model and its tokenizer written as one Hugging Face folder, atomically, the digest
that ties a later stage's checkpoints to the model it started from, and its parameter count."""
from __future__ import annotations

import hashlib
from pathlib import Path

from trimodal.atomic import atomic_dir


def save(model, tokenizer, out_dir: Path) -> None:
    """save_pretrained of both into a temp folder renamed over out_dir: a killed run leaves the old folder."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def file_digest(model_dir: Path) -> str:
    """sha256 of a saved model's weights."""
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
