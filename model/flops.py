"""The matmul-class FLOPs a training step really does, counted at run time from the shapes each module ran on.

    counter = FlopCounter()
    with counter:                      # one global forward hook while inside: every model counts (the distill
        loss = step(model, batch)      # teacher's no_grad forward beside the student's, frozen encoders, ...)
        loss.backward()
    flops = counter.reset()            # the count so far, and zero again

Rules, per module type, the same formulas as torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-add,
bias and element-wise work not counted), on the padded tensors the module really ran on:
    nn.Linear           forward 2 rows in out; backward that again for the input gradient (input requires grad)
                        and again for the weight gradient (weight requires grad)
    nn.Conv1d/2d        forward 2 out_elements (in/groups) kernel; backward likewise. FlopCounterMode counts a
                        grouped conv's weight gradient `groups` times over (its formula drops groups): the
                        depthwise convs of model/trimodal/audio.py do that work once, and so does this count.
    MultiHeadAttention  QK^T and AV only (its projections are Linears): forward 4 B Lq Lk dim; backward twice that
                        (dS, dQ, dK, dV: the math path's four bmm). FlopCounterMode counts nothing for the kernel
                        SDPA picks on CPU without dropout (aten._scaled_dot_product_flash_attention_for_cpu is not
                        in its registry), and 2.5x forward for the CUDA flash / efficient kernels, which recompute
                        the scores; MFU counts the model's FLOPs without recomputation (PaLM,
                        https://arxiv.org/abs/2204.02311 appendix B), hence 2x.
Backward FLOPs are credited when the forward runs, to every output that requires grad: an output no loss uses (the
class logits of finetune's VQA pass) is credited a backward that never runs, a few kFLOPs. Not counted: matmuls
outside modules (the contrastive similarities in model/losses.py, the visual tokenizer's projection: under 0.1%
of a step, tests/model/test_flops.py) and attention inside transformers encoders loaded with `*_pretrained`
(their Linears do count). The hook reads shapes and requires_grad flags, never values: it never waits on the device.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from trimodal.model.layers import MultiHeadAttention


def backward_passes(output: torch.Tensor, *operands: torch.Tensor) -> int:
    """How many of the operands autograd will compute a gradient for (one matmul-sized pass each)."""
    if not output.requires_grad:  # also False under no_grad / inference_mode
        return 0
    return sum(t.requires_grad for t in operands)


def linear_flops(module: nn.Linear, args: tuple, kwargs: dict, output: torch.Tensor) -> int:
    x = args[0] if args else kwargs["input"]
    forward = 2 * output.numel() * module.in_features
    return forward * (1 + backward_passes(output, x, module.weight))


def conv_flops(module: nn.Conv1d | nn.Conv2d, args: tuple, kwargs: dict, output: torch.Tensor) -> int:
    x = args[0] if args else kwargs["input"]
    forward = 2 * output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return forward * (1 + backward_passes(output, x, module.weight))


def attention_flops(module: MultiHeadAttention, args: tuple, kwargs: dict, output: torch.Tensor) -> int:
    x = args[0] if args else kwargs["x"]
    context = args[1] if len(args) > 1 else kwargs.get("context")
    context = x if context is None else context
    forward = 4 * x.shape[0] * x.shape[1] * context.shape[1] * module.q_proj.out_features
    # the output requires grad iff q, k or v do, unless o_proj alone trains (a freeze no stage makes); reading
    # the flag here instead of five parameters' keeps this rule at a quarter of the cost
    return forward * (3 if output.requires_grad else 1)


RULES = {nn.Linear: linear_flops, nn.Conv1d: conv_flops, nn.Conv2d: conv_flops, MultiHeadAttention: attention_flops}


@functools.cache
def rule_for(module_type: type) -> Callable | None:
    """The rule of the nearest counted base class (subclasses of nn.Linear count as Linear), or None."""
    return next((RULES[t] for t in module_type.__mro__ if t in RULES), None)


class FlopCounter:
    """Re-usable context manager: `with counter:` counts, `counter.total` reads, `counter.reset()` takes."""

    def __init__(self):
        self.total = 0
        self._handle: RemovableHandle | None = None

    def __enter__(self) -> FlopCounter:
        if self._handle is not None:
            raise RuntimeError("FlopCounter is already counting; enter it once at a time")
        self._handle = nn.modules.module.register_module_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._handle = None

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        rule = rule_for(type(module))
        if rule is not None:
            self.total += rule(module, args, kwargs, output)

    def reset(self) -> int:
        total, self.total = self.total, 0
        return total
