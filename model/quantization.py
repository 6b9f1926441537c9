"""Uniform affine INT8 (q = round(r / S) + Z, r' = S (q - Z); docs/model.md "Distillation and quantization")
for either model family (model/families.py): the trimodal model and DeepSeek-VL.

Scheme (torch.ao eager mode, x86 backend):
    nn.Linear      weights per output channel, symmetric qint8; input and output activations per tensor,
                   affine quint8, their scales and zero points calibrated on real batches (HistogramObserver).
                   At run time each Linear quantizes its input, runs the int8 GEMM (quantized::linear) and
                   dequantizes its output: the rest of the network (attention, norms, convs) stays fp32.
    nn.Embedding,  weights per output row / channel, symmetric int8, stored as int8 and dequantized when
    nn.Conv1d/2d   loaded (weight-only: these save disk, not time).
    the rest       (norms, biases, positions, logit scales) stays fp32.
Linears named in `keep_fp32` (the fragile ones a sensitivity sweep finds, `layer_sensitivity`) compute in float
and are stored weight-only, like embeddings (int8 weights, no activation quantization: activation ranges are
where INT8 breaks, e.g. a Linear fed by a wide-ranged convolution). A tied embedding is never stored twice.

File: model.int8.safetensors (layout in `export_int8`): int8 weights, their scales, the calibrated activation
scales and zero points, and every other tensor as is. No pickle anywhere: `load_int8` rebuilds the modules
from these numbers, in the class config.json's model_type names.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.quantization import QuantWrapper, convert, get_default_qconfig, prepare
from transformers import LlamaForCausalLM, PreTrainedConfig

from trimodal.model.families import BY_MODEL_TYPE, CLASSES, DEEPSEEK_VL, TRIMODAL, load_pretrained, saved_family
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration

WEIGHTS = "model.int8.safetensors"
SENSITIVITY = "sensitivity.json"  # written beside WEIGHTS by stages/quantize.py: which Linears stayed float, why
ENGINE = "x86"
WEIGHT_ONLY = (nn.Embedding, nn.Conv1d, nn.Conv2d)  # and every other >= 2-D parameter (position tables)
TIED = {  # family -> {Linear weight: the embedding weight it shares}, when its config ties them (the LM head)
    TRIMODAL: TrimodalForConditionalGeneration._tied_weights_keys,
    DEEPSEEK_VL: {f"language_model.{k}": f"language_model.{v}" for k, v in LlamaForCausalLM._tied_weights_keys.items()},
}


class Int8Linear(nn.Module):
    """A converted Linear in one module: quantize the input with its calibrated (S, Z), int8 GEMM against
    per-channel int8 weights (quantized::linear), dequantize. Same numbers as torch.ao's QuantWrapper around
    nnq.Linear, one module call instead of three (the overhead dominates at this model's widths)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, in_scale: float, in_zero: int,
                 out_scale: float, out_zero: int):
        super().__init__()
        # plain attributes, not parameters or buffers: export_int8 writes them in its own layout
        self.weight_q, self.bias_f = weight, None if bias is None else bias.detach()
        self.in_scale, self.in_zero, self.out_scale, self.out_zero = in_scale, in_zero, out_scale, out_zero
        self._packed = torch.ops.quantized.linear_prepack(weight, bias)

    @classmethod
    def from_converted(cls, wrapper: QuantWrapper) -> Int8Linear:
        linear = wrapper.module
        return cls(linear.weight(), linear.bias(), float(wrapper.quant.scale), int(wrapper.quant.zero_point),
                   float(linear.scale), int(linear.zero_point))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.quantize_per_tensor(x, self.in_scale, self.in_zero, torch.quint8)
        return torch.ops.quantized.linear(q, self._packed, self.out_scale, self.out_zero).dequantize()

    def extra_repr(self) -> str:
        return f"in_features={self.weight_q.shape[1]}, out_features={self.weight_q.shape[0]}, int8"


def _set_engine() -> None:
    if ENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = ENGINE


def _linears(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) is nn.Linear]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


ENCODER_ARGS = ("pixel_values", "image_present", "input_features", "mel_lengths", "text_ids", "text_mask")
DEEPSEEK_VL_ARGS = ("input_ids", "attention_mask", "pixel_values", "image_present")


def calibration_pass(model: nn.Module, kwargs: dict) -> None:
    """Run every Linear once, so no observer is left without a range. DeepSeek-VL: its forward with pixel_values
    runs them all (both towers, the adaptor, the LLM and its head)."""
    if BY_MODEL_TYPE[model.config.model_type] == DEEPSEEK_VL:
        model(**{k: v for k, v in kwargs.items() if k in DEEPSEEK_VL_ARGS})
    else:
        trimodal_calibration_pass(model, kwargs)


def trimodal_calibration_pass(model: TrimodalForConditionalGeneration, kwargs: dict) -> None:
    """Encoder, decoder and classifier (forward), the contrastive projections and the pre-training heads: the
    forward alone leaves the last two unseen."""
    encoded = model.encoder(**{k: v for k, v in kwargs.items() if k in ENCODER_ARGS})
    model(encoder_outputs=encoded, decoder_input_ids=kwargs.get("decoder_input_ids"))
    for modality in encoded.unimodal:
        model.global_embedding(encoded, modality)
    heads = {"text": model.mlm_head, "image": model.mim_head, "audio": model.mam_head}
    for modality, segment in encoded.segments.items():
        heads[modality](encoded.last_hidden_state[:, segment])


def quantize_model(model: nn.Module, batches: Iterable[dict],
                   keep_fp32: Collection[str] = ()) -> nn.Module:
    """Static INT8 of every Linear but those named in keep_fp32, activation ranges observed on `batches` (the
    model's forward kwargs)."""
    _set_engine()
    model = model.eval()  # weight-only tensors are rounded first, so calibration sees what is stored
    unknown = set(keep_fp32) - set(_linears(model))
    if unknown:
        raise ValueError(f"keep_fp32 names no Linear of the model: {sorted(unknown)}")
    names = [name for name in _linears(model) if name not in keep_fp32]
    round_weight_only(model, names)
    qconfig = get_default_qconfig(ENGINE)  # per-channel symmetric weights, histogram-calibrated activations
    for name in names:
        wrapper = QuantWrapper(model.get_submodule(name))
        wrapper.qconfig = qconfig
        _replace(model, name, wrapper)
    prepare(model, inplace=True)
    seen = 0
    with torch.no_grad():
        for kwargs in batches:
            calibration_pass(model, kwargs)
            seen += 1
    if not seen:
        raise ValueError("quantize: no calibration batches (the calibration split is empty)")
    convert(model, inplace=True)
    for name in names:
        _replace(model, name, Int8Linear.from_converted(model.get_submodule(name)))
    with torch.no_grad():  # a tied embedding reads the integers its Linear stores
        for embedding, linear in ((e, lin) for e, lin in _tied(model.config).items() if lin in names):
            model.get_submodule(embedding).weight.copy_(model.get_submodule(linear).weight_q.dequantize())
    return model


def int8_linears(model: nn.Module) -> dict[str, Int8Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, Int8Linear)}


def swap_in(model: nn.Module, modules: dict[str, nn.Module]) -> nn.Module:
    """Put each module at its dotted name in `model`, in place (e.g. INT8 Linears into a float model)."""
    for name, module in modules.items():
        _replace(model, name, module)
    return model


def weight_only_linear(linear: nn.Linear) -> nn.Linear:
    """A copy of `linear` with its weight rounded to int8 per channel: what a Linear kept in float computes."""
    out = copy.deepcopy(linear)
    with torch.no_grad():
        out.weight.copy_(_dequantize(*_per_channel(out.weight)))
    return out


def round_weight_only(model: nn.Module, int8: Collection[str] | None = None) -> nn.Module:
    """Round the weight-only tensors (embeddings, convs, position tables, and the weights of Linears not named
    in `int8`) to their stored int8 values, in place, as quantize_model does. int8=None (every Linear INT8) gives
    a float model that differs from the all-INT8 one only in its Linears: the sensitivity sweep's reference."""
    int8 = _linears(model) if int8 is None else int8
    with torch.no_grad():
        for param in _weight_only(model, int8).values():
            param.copy_(_dequantize(*_per_channel(param)))
    return model


def layer_sensitivity(fp32: nn.Module, quantized: nn.Module, score: Callable[[nn.Module], float]) -> dict[str, float]:
    """The one-at-a-time sweep: per INT8 Linear of `quantized`, score(fp32 model with only that Linear in INT8)
    (e.g. a divergence from the float outputs: larger = more fragile). `fp32` should have its weight-only
    tensors rounded (round_weight_only) so the sweep isolates the Linears; it is restored after each layer."""
    out = {}
    for name, module in int8_linears(quantized).items():
        original = fp32.get_submodule(name)
        try:
            out[name] = score(swap_in(fp32, {name: module}))
        finally:
            swap_in(fp32, {name: original})
    return out


def _tied(config: PreTrainedConfig) -> dict[str, str]:
    """embedding module -> the Linear module sharing its weight (the LM head), when the config ties them. The
    embedding is never stored: it is rebuilt from its Linear's integers, INT8 or weight-only (kept in float)."""
    if not config.tie_word_embeddings:
        return {}
    tied = TIED[BY_MODEL_TYPE[config.model_type]]
    return {v.removesuffix(".weight"): k.removesuffix(".weight") for k, v in tied.items()}


def _weight_only(model: nn.Module, int8: Collection[str]) -> dict[str, nn.Parameter]:
    """Parameters stored as int8 but computed in fp32: embedding and conv weights, the weights of Linears kept in
    float (those not named in `int8`, the Linears that are or will be INT8), other >= 2-D parameters."""
    tied = _tied(model.config)
    found = {}
    for name, module in model.named_modules():
        quantized = (type(module) is nn.Linear and name in int8) or isinstance(module, QuantWrapper | Int8Linear)
        if quantized or name in tied:
            continue  # these Linears run in int8; a tied embedding is rebuilt from its Linear
        for key, param in module.named_parameters(recurse=False):
            if (type(module) in WEIGHT_ONLY and key == "weight") or param.ndim >= 2:
                found[f"{name}.{key}" if name else key] = param
    return found


def _channels(t: torch.Tensor) -> int:
    """Scales per output channel (dim 0); a parameter with a leading 1 (e.g. [1, N, D] positions) per row."""
    return t.shape[0] if t.shape[0] > 1 else t[0].shape[0]


def _per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per channel: S = max|w| / 127, Z = 0, q in [-127, 127]. S is stored in bfloat16 and q is
    computed with that stored S, so |w - S q| <= S / 2 still holds (bf16's 0.2% rounding of S moves max|w| / S by
    at most 0.25, never past 127.5); half the bytes of fp32 scales, which were 6% of the default student's file.
    Idempotent: re-quantizing the dequantized weights gives the same integers and scales."""
    w = weight.detach().float()
    rows = w.reshape(_channels(w), -1)
    scale = (rows.abs().amax(1) / 127).clamp(min=torch.finfo(torch.float32).tiny).to(torch.bfloat16)
    return torch.round(rows / scale.float()[:, None]).clamp(-127, 127).to(torch.int8).reshape(w.shape), scale


def _dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.float().reshape(len(scale), -1) * scale.float()[:, None]).reshape(q.shape)  # r' = S (q - Z), Z = 0


def export_int8(model: nn.Module, config: PreTrainedConfig, out_dir: Path) -> dict:
    """Write config.json + model.int8.safetensors for a model from `quantize_model`; returns a summary.

    Per Linear: `<name>.int8` and `<name>.qparams` = [per-channel weight scales..., input scale, input zero
    point, output scale, output zero point] (weight zero points are 0: symmetric); per weight-only parameter
    `<name>.int8` and `<name>.scales` (a Linear kept in float is one of these, with its plain bias). An embedding
    tied to a Linear (the LM head's) is not stored: it is rebuilt from that Linear's integers and scales.
    """
    tensors: dict[str, torch.Tensor] = {}
    linears, weight_only = set(), set()
    tied = _tied(config)
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            weight, bias = module.weight_q, module.bias_f
            tensors[f"{name}.int8"] = weight.int_repr().contiguous()
            acts = [module.in_scale, module.in_zero, module.out_scale, module.out_zero]
            tensors[f"{name}.qparams"] = torch.cat([weight.q_per_channel_scales().float(),
                                                    torch.tensor([float(a) for a in acts])])
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().contiguous()
            linears.add(name)
    for name, param in _weight_only(model, linears).items():
        tensors[f"{name}.int8"], tensors[f"{name}.scales"] = _per_channel(param)
        weight_only.add(name)
    weight_only |= {f"{embedding}.weight" for embedding in tied}
    for name, tensor in model.state_dict().items():
        if name in weight_only or name.rsplit(".", 1)[0] in linears:
            continue  # stored above
        if torch.is_tensor(tensor) and not tensor.is_quantized and tensor.is_floating_point():
            tensors[name] = tensor.detach().contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    save_file(tensors, out_dir / WEIGHTS, metadata={"format": "trimodal-int8", "engine": ENGINE})
    return {"linear_int8": len(linears), "weight_only_int8": len(weight_only), "tensors": len(tensors)}


def _int8_linear(tensors: dict, name: str, q: torch.Tensor) -> Int8Linear:
    qparams = tensors[f"{name}.qparams"]
    scales, (in_scale, in_zero, out_scale, out_zero) = qparams[:-4], qparams[-4:].tolist()
    zeros = torch.zeros(len(scales), dtype=torch.long)
    weight = torch._make_per_channel_quantized_tensor(q, scales.double(), zeros, 0)
    return Int8Linear(weight, tensors.get(f"{name}.bias"), in_scale, int(in_zero), out_scale, int(out_zero))


def load_int8(model_dir: str | Path) -> nn.Module:
    """Rebuild the INT8 model written by `export_int8` (its family's class, from config.json; Linears swapped)."""
    _set_engine()
    model_dir = Path(model_dir)
    tensors = load_file(model_dir / WEIGHTS)
    config_class, model_class = CLASSES[saved_family(model_dir)]
    config = config_class.from_pretrained(model_dir)
    model = model_class(config).eval()
    linears = {k.removesuffix(".qparams") for k in tensors if k.endswith(".qparams")}
    weight_only = {k.removesuffix(".scales") for k in tensors if k.endswith(".scales")}
    plain = {key: _dequantize(tensors[f"{key}.int8"], tensors[f"{key}.scales"]) for key in weight_only}
    plain.update({k: v for k, v in tensors.items() if not k.endswith((".int8", ".qparams", ".scales"))})
    for embedding, linear in _tied(config).items():
        if linear in linears:
            plain[f"{embedding}.weight"] = _dequantize(tensors[f"{linear}.int8"], tensors[f"{linear}.qparams"][:-4])
        elif f"{linear}.weight" in plain:  # kept in float: weight-only
            plain[f"{embedding}.weight"] = plain[f"{linear}.weight"]
    expected = {k for k in model.state_dict() if k.rsplit(".", 1)[0] not in linears}
    if expected - set(plain):
        missing = sorted(expected - set(plain))
        raise ValueError(f"{model_dir / WEIGHTS} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    model.load_state_dict({k: v for k, v in plain.items() if k in expected}, strict=False)
    for key in linears:
        _replace(model, key, _int8_linear(tensors, key, tensors[f"{key}.int8"]))
    return model


def load_saved(model_dir: str | Path) -> nn.Module:
    """Any saved model folder of either family in eval mode: INT8 (`export_int8`'s weights present) or float
    (save_pretrained)."""
    model_dir = Path(model_dir)
    if (model_dir / WEIGHTS).exists():
        return load_int8(model_dir)
    return load_pretrained(model_dir).eval()
