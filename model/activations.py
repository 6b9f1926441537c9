"""Activation memory of one training step: what autograd keeps from the forward for the backward, measured.

How: the preset's model is built on CPU at its real widths with every stack of blocks one layer deep, and one
fine-tuning step's forward runs on a synthetic batch at the given sequence lengths (trimodal: `finetune_losses`
on samples holding image, text and audio, a caption, a question and a class, so every objective runs; DeepSeek-VL:
the images' visual tokens once, then its three chat turns, ce / vqa / cls, as model/deepseek_vl/tasks.py's SFT
step runs them, with the recipe's frozen high-resolution tower). A `saved_tensors_hooks` pack hook counts the
bytes of every tensor autograd saves (each storage once, parameters excluded) and books them to the block that is
running (module hooks on the `_no_split_modules` blocks) or to the root (embeddings, heads, logits, losses). Every
layer of a stack sees the same shapes, so a stack's bytes scale with its depth, and everything scales with the
batch: `Activations.bytes(batch, checkpointing)`. tests/model/test_activations.py checks the scaling against a
measurement of the whole model.

With activation checkpointing (trainer.activation_checkpointing) a block keeps only its input, and backward
recomputes one block call at a time: the largest call's activations come on top (measured the same way, with the
model's checkpointing on). Bytes are fp32 (CPU); under CUDA's bf16 autocast the matmul inputs autograd saves are
half as large while LayerNorm and softmax statistics stay fp32, so `bf16` halves the measurement: a plan a few
percent low, stated beside its numbers. SAM-B's windowed and global attention layers differ; the shallow model's
one layer is global (its largest), which makes the high tower's estimate an upper bound.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedConfig

from trimodal.model.blocks import stacks
from trimodal.model.families import DEEPSEEK_VL, family_of, model_class, read_preset
from trimodal.model.trimodal.fusion import MODALITIES

SHALLOW = {  # each family's depth settings, set to one layer for the measurement
    "trimodal": ("vision_layers", "text_layers", "audio_layers", "joint_fusion_layers", "reasoning_layers",
                 "decoder_layers"),
}


@dataclass(frozen=True)
class Lengths:
    """A training sample's sequence lengths: text tokens (DeepSeek-VL: one chat turn's), audio seconds (trimodal)
    and decoder tokens (trimodal: caption, question + answer)."""

    text: int = 128
    audio_seconds: float = 10.0
    decoder: int = 64


@dataclass(frozen=True)
class Activations:
    """One sample's activation bytes (fp32) of a step: the root's, and per stack of blocks one layer's, with and
    without checkpointing; each stack's depth in the preset; the largest single block call."""

    root: int
    per_layer: dict[str, int]
    root_checkpointed: int
    per_layer_checkpointed: dict[str, int]
    depth: dict[str, int]
    largest_call: int

    def bytes(self, batch: int, checkpointing: bool = False, bf16: bool = False) -> float:
        root, layers = ((self.root_checkpointed, self.per_layer_checkpointed) if checkpointing
                        else (self.root, self.per_layer))
        total = root + sum(layers[s] * self.depth[s] for s in layers)
        if checkpointing:
            total += self.largest_call  # backward recomputes one block call at a time
        return total * batch * (0.5 if bf16 else 1.0)


class SavedBytes:
    """Books the bytes autograd saves to the innermost running block (its stack's name) or to 'root'."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.blocks = {m: stack for stack, m in stacks(model)}
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.stack: list[str] = []
        self.booked: dict[str, int] = defaultdict(int)
        self.calls: list[int] = []  # bytes of each outermost block call
        self.handles = []

    def pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self.seen and storage.nbytes():
            self.seen.add(ptr)
            self.booked[self.stack[-1] if self.stack else "root"] += storage.nbytes()
            if self.stack:
                self.calls[-1] += storage.nbytes()
        return t

    def __enter__(self) -> SavedBytes:
        for module, stack in self.blocks.items():
            self.handles.append(module.register_forward_pre_hook(lambda m, a, s=stack: self.enter(s)))
            self.handles.append(module.register_forward_hook(lambda m, a, o: self.leave()))
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def enter(self, stack: str) -> None:
        if not self.stack:
            self.calls.append(0)
        self.stack.append(stack)

    def leave(self) -> None:  # returns None: a forward hook's return value would replace the block's output
        self.stack.pop()

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)
        for handle in self.handles:
            handle.remove()


def shallow_config(preset: str, vocab_size: int | None = None) -> tuple[PreTrainedConfig, dict[str, int]]:
    """The preset's config with every stack one layer deep, and each stack's real depth (by module path)."""
    from trimodal.model.sizes import meta_model, preset_config

    config = preset_config(preset)
    depth: dict[str, int] = defaultdict(int)
    for stack, _ in stacks(meta_model(preset)):
        depth[stack] += 1
    shallow = copy.deepcopy(config)
    if family_of(read_preset(preset)) == DEEPSEEK_VL:
        shallow.low_vision["num_hidden_layers"] = shallow.high_vision["num_hidden_layers"] = 1
        shallow.high_vision["global_attn_indexes"] = [0]
        shallow.text["num_hidden_layers"] = 1
    else:
        for key in SHALLOW["trimodal"]:
            setattr(shallow, key, 1)
    if vocab_size:
        shallow.vocab_size = vocab_size
    return shallow, dict(depth)


def trimodal_step(model, batch: int, lengths: Lengths) -> torch.Tensor:
    from trimodal.model.losses import weighted_sum
    from trimodal.model.trimodal.tasks import finetune_losses

    c = model.config
    g = torch.Generator().manual_seed(0)
    frames = max(4, int(lengths.audio_seconds * 100))  # 10 ms hop; the conv stem subsamples x4

    def tokens(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(5, c.vocab_size, (batch, n), generator=g)
        ids[:, 0], ids[:, -1] = c.bos_token_id or 0, c.eos_token_id or 2
        return ids, torch.ones(batch, n, dtype=torch.bool)

    text, caption = tokens(lengths.text), tokens(lengths.decoder)
    question, answer = tokens(lengths.decoder // 2), tokens(max(2, lengths.decoder // 2))
    data = {"image": torch.rand(batch, 3, c.image_size, c.image_size, generator=g),
            "image_present": torch.ones(batch, dtype=torch.bool),
            "mel": torch.randn(batch, c.n_mels, frames, generator=g), "mel_lengths": torch.full((batch,), frames),
            "text_ids": text[0], "text_mask": text[1], "caption_ids": caption[0], "caption_mask": caption[1],
            "question_ids": question[0], "question_mask": question[1], "answer_ids": answer[0],
            "answer_mask": answer[1], "label": torch.zeros(batch, dtype=torch.long),
            "meta": [{"modalities": list(MODALITIES)} for _ in range(batch)],
            "pairable": torch.ones(batch, dtype=torch.bool)}
    losses, _ = finetune_losses(model, data, g)
    return weighted_sum(losses, c.loss_weights)


def deepseek_vl_step(model, batch: int, lengths: Lengths) -> torch.Tensor:
    from trimodal.model.deepseek_vl.tasks import TASKS, Turns, lm_loss, visual_of

    model.vision.high.requires_grad_(False)  # the fine-tuning recipe's (conf/finetune/deepseek_vl.yaml)
    size = model.config.high_vision["image_size"]
    data = {"image": torch.rand(batch, 3, size, size), "image_present": torch.ones(batch, dtype=torch.bool)}
    visual = visual_of(model, data)
    ids = torch.randint(5, model.config.text["vocab_size"], (batch, lengths.text))
    turn = Turns(list(range(batch)), ids, torch.ones_like(ids), ids.clone())
    return sum(lm_loss(model, turn, visual, data) for _ in TASKS)


def measure(preset: str, lengths: Lengths = Lengths(), batch: int = 1, vocab_size: int | None = None,
            depth_of: dict[str, int] | None = None, shallow: bool = True) -> Activations:
    """The step's activations per sample, measured at `batch` on CPU (see the module docstring). `shallow=False`
    measures the model at its full depth instead (what the tests check the scaling against)."""
    config, depth = shallow_config(preset, vocab_size)
    if not shallow:
        from trimodal.model.sizes import preset_config

        config = preset_config(preset)
        if vocab_size:
            config.vocab_size = vocab_size
        depth = {s: 1 for s in depth}
    step = deepseek_vl_step if family_of(read_preset(preset)) == DEEPSEEK_VL else trimodal_step
    measured = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = model_class(config)(config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        with SavedBytes(model) as saved:
            step(model, batch, lengths)
        measured[checkpointing] = saved
    plain, checkpointed = measured[False], measured[True]

    def per_sample(booked: dict[str, int]) -> tuple[int, dict[str, int]]:
        return booked.get("root", 0) // batch, {s: booked.get(s, 0) // batch for s in depth}

    root, layers = per_sample(plain.booked)
    root_checkpointed, layers_checkpointed = per_sample(checkpointed.booked)
    return Activations(root, layers, root_checkpointed, layers_checkpointed, depth_of or depth,
                       max(plain.calls, default=0) // batch)
