"""The blocks of a model: every module whose class it names in `_no_split_modules` (both families: encoder,
decoder, Conformer and fusion blocks; LLM decoder layers and vision tower layers). One definition for what FSDP
makes units of (trimodal/training/distributed.py), what the memory plan counts (model/sizes.py) and what the
activation measurement books bytes to (model/activations.py).
"""
from __future__ import annotations

from torch import nn


def stacks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(stack, block) for each block: a layer of a ModuleList belongs to the list's stack (identical layers,
    counted by depth); any other block (a fusion pair) is a stack of its own."""
    names, modules = set(getattr(model, "_no_split_modules", None) or ()), dict(model.named_modules())
    found = []
    for name, m in modules.items():
        if type(m).__name__ in names:
            parent = name.rsplit(".", 1)[0]
            found.append((parent if isinstance(modules.get(parent), nn.ModuleList) else name, m))
    return found


def blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks, in module order (take them before fully_shard wraps them: it renames the classes)."""
    return [m for _, m in stacks(model)]
