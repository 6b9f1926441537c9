"""INT8 backends on CPU side by side: FP32 eager vs torch.ao, PT2E + inductor and ONNX Runtime INT8 models.

Usage: python benchmarks/int8_backends.py [--presets student small] [--repeats 10] [--threads 0]
           [--backends fp32_compiled torch_ao pt2e_inductor onnxruntime_fp32 onnxruntime_int8]
           [--out benchmarks/results/int8_backends.json]
One inference, the same for every backend: `encode` (encoder + classifier on a batch with an image, 1 s of audio and
16 text tokens, benchmarks/int8_latency.py's `batch`) then a greedy decode of exactly 12 tokens that re-runs the
decoder on the whole prefix each step (no KV cache: HF's generate() loop does not export). Both halves are
tensor-only modules (`Encode`, `Decode`) that each backend runs, exports, quantizes or compiles; exports keep the
batch and the decoder's sequence dimension dynamic. Backends (fp32 always runs: it is the reference):
    fp32              the eager model (model.modeling)
    fp32_compiled     torch.export -> torch.compile (inductor, freezing): what pt2e_inductor gets without int8
    torch_ao          model.quantization.quantize_model: the project's static int8 Linears (torch.ao eager, x86)
    torch_ao_shipped  torch_ao with the quantize stage's width rule (stages/quantize.narrow_linears, 128): Linears
                      with fewer than 128 inputs or outputs compute in float. What the stage ships
    torch_ao_swept    torch_ao after the quantize stage's speed sweep (stages/quantize.py) on this benchmark's
                      inference at each batch size: Linears slower in INT8 compute in float (the stage reports
                      that sweep; its width rule decides)
    pt2e_inductor     torch.export -> torchao prepare_pt2e / convert_pt2e with X86InductorQuantizer (static,
                      per-channel int8 weights, histogram-calibrated uint8 activations, Linear and Conv2d) ->
                      torch.compile with freezing, which lowers the q/dq patterns to oneDNN int8 kernels
    onnxruntime_fp32  torch.onnx.export (dynamo exporter) -> ONNX Runtime, CPU execution provider
    onnxruntime_int8  that ONNX through quantize_static: QDQ, per-channel int8 weights, uint8 activations (MinMax
                      on the calibration batches), MatMul / Gemm / Conv with constant weights only;
                      onnxruntime_int8_dynamic (quantize_dynamic) is measured too when static quantization fails
Every variant of a preset and batch size is timed in one trimodal.evaluation.latency.interleaved_ms call (after a first
call per batch size, `first_call_s_*`, which for the compiled backends includes inductor compiling: minutes per
preset on 2 cores, less once its on-disk cache is warm). A backend that cannot be built or run gets {"error": ...}.
Agreement with fp32 is on a held-out batch; with random weights it only shows that a pipeline is numerically sane,
not what a trained model would lose. `*_weight_ops` count the Linears / convs each quantizer made int8.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.int8_latency import batch, calibration, config_for  # noqa: E402
from stages.quantize import narrow_linears, slower_in_int8, speed_sweep  # noqa: E402
from trimodal.evaluation.latency import interleaved_ms  # noqa: E402
from trimodal.model.quantization import Int8Linear, quantize_model  # noqa: E402
from trimodal.model.trimodal.fusion import Stream  # noqa: E402
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration  # noqa: E402

NEW_TOKENS = 12
BATCH_SIZES = (1, 32)
TIMING_SEED, HELD_OUT_SEED = 100, 1000  # calibration() draws seeds 0..3
ENCODER_INPUTS = ("pixel_values", "image_present", "input_features", "mel_lengths", "text_ids", "text_mask")
DECODER_INPUTS = ("decoder_input_ids", "memory", "memory_mask")
BACKENDS = ("fp32", "fp32_compiled", "torch_ao", "torch_ao_shipped", "torch_ao_swept", "pt2e_inductor",
            "onnxruntime_fp32", "onnxruntime_int8")
SHIPPED_MIN_FEATURES = 128  # quantize.int8_min_features' default
FP32_OF = {"torch_ao": "fp32", "torch_ao_shipped": "fp32", "torch_ao_swept": "fp32", "pt2e_inductor": "fp32_compiled",
           "onnxruntime_int8": "onnxruntime_fp32",
           "onnxruntime_int8_dynamic": "onnxruntime_fp32"}  # INT8 backend -> the FP32 run it should beat
TARGETS = {"small": {1: 0.8, 32: 0.6}, "student": {1: 1.0, 32: 1.0}}  # INT8 ms / fp32 (eager) ms, at most
AGREEMENT_NOTE = ("random-init weights: agreement only shows that each pipeline is numerically sane; greedy tokens "
                  "and class argmaxes of near-uniform logits flip on tiny differences")

Pipeline = tuple[Callable, Callable]  # encode(*encoder inputs) -> (R, mask, class logits); decode(ids, R, mask)


class Encode(nn.Module):
    """Encoder + classifier for a batch where every sample has all three modalities: TrimodalEncoder.forward's
    arithmetic without its `if x.any()` checks, data-dependent branches that torch.export cannot trace."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder, self.classifier = model.encoder, model.classifier
        self.eval()  # inference only: the exporters trace what the mode says (dropout, and they warn otherwise)

    def forward(self, pixel_values, image_present, input_features, mel_lengths, text_ids, text_mask):
        e = self.encoder
        image = e.vision(pixel_values)
        audio, audio_mask = e.audio(input_features, mel_lengths)
        streams = {"image": Stream(image, image_present[:, None].expand(-1, image.shape[1]).contiguous()),
                   "text": Stream(e.text(text_ids, text_mask), text_mask), "audio": Stream(audio, audio_mask)}
        hidden, mask, _ = e.fusion(streams)
        r = e.core(hidden, mask)
        return r, mask, self.classifier(r, mask)


class Decode(nn.Module):
    """One decode step without a cache: the whole prefix in, logits for every position out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.decoder = model.decoder
        self.eval()

    def forward(self, decoder_input_ids, memory, memory_mask):
        return self.decoder(decoder_input_ids, memory, memory_mask)


def encoder_args(b: dict) -> tuple:
    """A calibration() dict or a batch() loader batch -> Encode's positional inputs."""
    if "pixel_values" in b:
        return tuple(b[k] for k in ENCODER_INPUTS)
    return b["image"], b["image_present"], b["mel"], b["mel_lengths"], b["text_ids"], b["text_mask"]


def greedy(pipeline: Pipeline, inputs: tuple, start_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(class logits, the first decode step's logits, NEW_TOKENS greedy tokens)."""
    encode, decode = pipeline
    r, mask, class_logits = encode(*inputs)
    ids = torch.full((r.shape[0], 1), start_id, dtype=torch.long)
    first = None
    for _ in range(NEW_TOKENS):
        last = decode(ids, r, mask)[:, -1]
        first = last if first is None else first
        ids = torch.cat([ids, last.argmax(-1, keepdim=True)], dim=1)
    return class_logits, first, ids[:, 1:]


def inference(pipeline: Pipeline, inputs: tuple, start_id: int) -> Callable[[], None]:
    @torch.no_grad()
    def run() -> None:
        greedy(pipeline, inputs, start_id)

    return run


def decoder_calibration(model: nn.Module, cal: list[dict]) -> list[tuple]:
    """(decoder_input_ids, R, mask) per calibration batch, R from the fp32 encoder."""
    out = []
    with torch.no_grad():
        for k in cal:
            r, mask, _ = Encode(model)(*encoder_args(k))
            out.append((k["decoder_input_ids"], r, mask))
    return out


def exported(model: nn.Module, cal: list[dict]):
    """torch.export of both halves, traced on a calibration batch; batch and decoder length dynamic."""
    b = torch.export.Dim("batch", min=1, max=4096)
    t = torch.export.Dim("tokens", min=1, max=model.config.max_decoder_positions)
    args = encoder_args(cal[0])
    enc = torch.export.export(Encode(model), args, dynamic_shapes=tuple({0: b} for _ in args))
    dec = torch.export.export(Decode(model), decoder_calibration(model, cal[:1])[0],
                              dynamic_shapes=({0: b, 1: t}, {0: b}, {0: b}))
    return enc, dec


def compiled(enc: nn.Module, dec: nn.Module) -> Pipeline:
    if not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        raise RuntimeError("torch.compile (inductor, CPU) needs a C++ compiler and none is on PATH (g++, c++, "
                           "clang++): apt-get install g++")
    import torch._dynamo.config as dynamo
    import torch._inductor.config as inductor

    inductor.freezing = True  # constant weights: oneDNN prepacking, and the int8 q/dq -> qlinear fusions need it
    dynamo.fail_on_recompile_limit_hit = True  # past the limit dynamo would quietly run the graph uncompiled
    # the encoder static per batch size: inductor's int8 conv lowering fails a stride check under a dynamic batch;
    # the decoder is left to recompile with dynamic shapes once its prefix length changes
    return torch.compile(enc, dynamic=False), torch.compile(dec)


def fx_weight_ops(gm: nn.Module) -> dict[str, dict[str, int]]:
    """Per linear / conv op of a converted PT2E graph: how many read int8 (dequantized) weights, how many fp32."""
    out: dict[str, dict[str, int]] = {}
    for node in gm.graph.nodes:
        name = str(node.target)
        if node.op != "call_function" or not name.startswith(("aten.linear", "aten.conv")):
            continue
        weight = node.args[1]
        kind = "int8" if "dequantize" in str(getattr(weight, "target", "")) else "fp32"
        out.setdefault(name, {"int8": 0, "fp32": 0})[kind] += 1
    return out


def build_fp32(model, cal, tmp) -> tuple[Pipeline, dict]:
    return (Encode(model), Decode(model)), {}


def build_fp32_compiled(model, cal, tmp) -> tuple[Pipeline, dict]:
    enc, dec = exported(model, cal)
    return compiled(enc.module(), dec.module()), {}


def build_torch_ao(model, cal, tmp) -> tuple[Pipeline, dict]:
    q = quantize_model(copy.deepcopy(model), cal)  # quantize_model rewrites the model in place
    return (Encode(q), Decode(q)), {"int8_linears": sum(isinstance(m, Int8Linear) for m in q.modules())}


def build_torch_ao_shipped(model, cal, tmp) -> tuple[Pipeline, dict]:
    q = quantize_model(copy.deepcopy(model), cal)
    narrow = narrow_linears(model, [n for n, m in q.named_modules() if isinstance(m, Int8Linear)], SHIPPED_MIN_FEATURES)
    shipped = quantize_model(copy.deepcopy(model), cal, keep_fp32=narrow) if narrow else q
    return (Encode(shipped), Decode(shipped)), {
        "int8_linears": sum(isinstance(m, Int8Linear) for m in shipped.modules()), "narrow_in_float": len(narrow)}


def build_torch_ao_swept(model, cal, tmp) -> tuple[Pipeline, dict]:
    q = quantize_model(copy.deepcopy(model), cal)
    start_id = model.config.decoder_start_token_id
    work = {f"batch{size}": inference((Encode(q), Decode(q)), encoder_args(batch(model.config, size, TIMING_SEED)),
                                      start_id) for size in BATCH_SIZES}
    slow = slower_in_int8(speed_sweep(model, q, work, repeats=10))
    shipped = quantize_model(copy.deepcopy(model), cal, keep_fp32=slow)
    return (Encode(shipped), Decode(shipped)), {
        "int8_linears": sum(isinstance(m, Int8Linear) for m in shipped.modules()), "slower_in_int8": len(slow)}


def build_pt2e_inductor(model, cal, tmp) -> tuple[Pipeline, dict]:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    enc, dec = exported(model, cal)
    halves, info = [], {}
    for name, ep, batches in (("encode", enc, [encoder_args(k) for k in cal]),
                              ("decode", dec, decoder_calibration(model, cal))):
        prepared = prepare_pt2e(ep.module(), quantizer)
        with torch.no_grad():
            for args in batches:
                prepared(*args)
        halves.append(convert_pt2e(prepared))
        info[f"{name}_weight_ops"] = fx_weight_ops(halves[-1])  # before inductor: which layers stayed fp32
    return compiled(*halves), info


def onnx_files(model: nn.Module, cal: list[dict], tmp: Path) -> tuple[Path, Path]:
    """encode.onnx and decode.onnx (dynamo exporter, dynamic batch and decoder length), exported once."""
    enc, dec = tmp / "encode.onnx", tmp / "decode.onnx"
    if enc.exists() and dec.exists():
        return enc, dec
    b = torch.export.Dim("batch", min=1, max=4096)
    t = torch.export.Dim("tokens", min=1, max=model.config.max_decoder_positions)
    args = encoder_args(cal[0])
    torch.onnx.export(Encode(model), args, str(enc), input_names=list(ENCODER_INPUTS), dynamo=True,
                      output_names=["memory", "memory_mask", "class_logits"], external_data=False,
                      dynamic_shapes=tuple({0: b} for _ in args), verbose=False)
    torch.onnx.export(Decode(model), decoder_calibration(model, cal[:1])[0], str(dec), dynamo=True,
                      input_names=list(DECODER_INPUTS), output_names=["logits"], external_data=False,
                      dynamic_shapes=({0: b, 1: t}, {0: b}, {0: b}), verbose=False)
    return enc, dec


def ort_pipeline(enc_path: Path, dec_path: Path) -> Pipeline:
    import onnxruntime as ort

    def session(path: Path):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = torch.get_num_threads(), 1
        # no busy-waiting between runs: idle ORT threads would spin on the cores the next (torch) variant is timed on
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    enc, dec = session(enc_path), session(dec_path)

    def encode(*args):
        feeds = {k: v.numpy() for k, v in zip(ENCODER_INPUTS, args, strict=True)}
        return tuple(torch.from_numpy(o) for o in enc.run(None, feeds))

    def decode(*args):
        return torch.from_numpy(dec.run(None, {k: v.numpy() for k, v in zip(DECODER_INPUTS, args, strict=True)})[0])

    return encode, decode


def weight_nodes(path: Path) -> list[str]:
    """MatMul / Gemm / Conv nodes whose second input is a constant: the Linears and convolutions. QDQ ignores
    MatMulConstBOnly, so this list is what keeps attention's activation-by-activation MatMuls (Q K^T, P V) in fp32."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and n.input[1] in constants]


def without_value_info(path: Path) -> None:
    """Drop the stored intermediate shapes: with them quantize_dynamic's shape inference stops on "Inferred shape
    and existing shape differ in dimension 0: (48) vs (3)" (student encoder); inferred afresh, it passes."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def onnx_weight_ops(path: Path) -> dict[str, dict[str, int]]:
    """Per MatMul / Gemm / Conv: weights int8 (through a DequantizeLinear, or an integer op) or fp32, and the same
    for MatMuls of two activations."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {i.name for i in graph.initializer}
    dequantized = {n.output[0]: n.input[0] in constants for n in graph.node if n.op_type == "DequantizeLinear"}
    out: dict[str, dict[str, int]] = {}
    for node in graph.node:
        if node.op_type in ("MatMulInteger", "ConvInteger"):  # quantize_dynamic's int8 ops
            kind = "weights_int8"
        elif node.op_type in ("MatMul", "Gemm", "Conv") and len(node.input) > 1:
            b = node.input[1]
            weight = dequantized[b] if b in dequantized else b in constants
            kind = f"{'weights' if weight else 'activations'}_{'int8' if b in dequantized else 'fp32'}"
        else:
            continue
        counts = out.setdefault(node.op_type, {})
        counts[kind] = counts.get(kind, 0) + 1
    return out


def ort_quantized(model, cal, tmp: Path, static: bool) -> tuple[Pipeline, dict]:
    from onnxruntime import quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(oq.CalibrationDataReader):
        def __init__(self, feeds: list[dict]):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    feeds = {"encode": [dict(zip(ENCODER_INPUTS, (a.numpy() for a in encoder_args(k)), strict=True)) for k in cal],
             "decode": [dict(zip(DECODER_INPUTS, (a.numpy() for a in args), strict=True))
                        for args in decoder_calibration(model, cal)]}
    options = {"per_channel": True, "weight_type": oq.QuantType.QInt8, "extra_options": {"MatMulConstBOnly": True}}
    paths, info = [], {}
    for name, src in zip(("encode", "decode"), onnx_files(model, cal, tmp), strict=True):
        pre, out = src.with_suffix(".pre.onnx"), src.with_suffix(".static.onnx" if static else ".dynamic.onnx")
        # ORT's symbolic shape inference crashes on the exporter's Unsqueeze nodes; ONNX shape inference and the
        # graph optimisation still run
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        without_value_info(pre)
        nodes = weight_nodes(pre)
        if static:
            oq.quantize_static(str(pre), str(out), Reader(feeds[name]), quant_format=oq.QuantFormat.QDQ,
                               activation_type=oq.QuantType.QUInt8, nodes_to_quantize=nodes, **options)
        else:
            oq.quantize_dynamic(str(pre), str(out), nodes_to_quantize=nodes, **options)
        info[f"{name}_weight_ops"] = onnx_weight_ops(out)
        paths.append(out)
    return ort_pipeline(*paths), info


def build_onnxruntime_fp32(model, cal, tmp) -> tuple[Pipeline, dict]:
    return ort_pipeline(*onnx_files(model, cal, tmp)), {}


def build_onnxruntime_int8(model, cal, tmp) -> tuple[Pipeline, dict]:
    return ort_quantized(model, cal, tmp, static=True)


def build_onnxruntime_int8_dynamic(model, cal, tmp) -> tuple[Pipeline, dict]:
    return ort_quantized(model, cal, tmp, static=False)


def error(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) <= 3000 else f"{text[:1500]} [...] {text[-1500:]}"


def agreement(ref: tuple, out: tuple) -> dict:
    (rc, rf, rt), (c, f, t) = ref, out
    return {"class_logits_max_abs_diff": float(f"{float((rc - c).abs().max()):.3g}"),
            "first_step_logits_max_abs_diff": float(f"{float((rf - f).abs().max()):.3g}"),
            "token_agreement": round(float((rt == t).float().mean()), 4),
            "class_argmax_agreement": round(float((rc.argmax(-1) == c.argmax(-1)).float().mean()), 4)}


def build_all(names: list[str], model, cal, tmp: Path) -> tuple[dict[str, Pipeline], dict[str, dict]]:
    pipelines, rows, queue = {}, {}, list(names)
    while queue:
        name = queue.pop(0)
        start = time.perf_counter()
        try:
            pipelines[name], rows[name] = globals()[f"build_{name}"](model, cal, tmp)
            rows[name]["build_s"] = round(time.perf_counter() - start, 2)
        except Exception as e:  # a backend that cannot be built is a result, not a crash
            rows[name] = {"error": error(e)}
            if name == "onnxruntime_int8" and "onnxruntime_int8_dynamic" not in names:
                queue.append("onnxruntime_int8_dynamic")
        print(f"  built {name}: {json.dumps(rows[name])[:300]}", flush=True)
    return pipelines, rows


def check_agreement(pipelines: dict, rows: dict, held_out: tuple, start_id: int) -> None:
    """Agreement with fp32 on the held-out batch; a backend that fails to run here is dropped."""
    with torch.no_grad():
        ref = greedy(pipelines["fp32"], held_out, start_id)
        for name in list(pipelines):
            start = time.perf_counter()
            try:
                out = greedy(pipelines[name], held_out, start_id)
            except Exception as e:
                rows[name]["error"] = f"held-out run: {error(e)}"
                del pipelines[name]
                continue
            rows[name]["first_call_s_held_out"] = round(time.perf_counter() - start, 2)  # inductor compiles here
            rows[name]["agreement_vs_fp32"] = agreement(ref, out)


def time_batch(pipelines: dict, rows: dict, inputs: tuple, start_id: int, size: int, repeats: int) -> None:
    runs = {}
    for name, pipeline in pipelines.items():
        run = inference(pipeline, inputs, start_id)
        start = time.perf_counter()
        try:
            run()  # a variant that fails at this batch size must not take the interleaved call down with it
        except Exception as e:
            rows[name][f"error_batch{size}"] = error(e)
            continue
        rows[name][f"first_call_s_batch{size}"] = round(time.perf_counter() - start, 2)
        runs[name] = run
    for name, ms in interleaved_ms(runs, repeats).items():
        rows[name][f"ms_batch{size}"] = round(ms, 2)


def ratios(rows: dict, preset: str) -> dict:
    """Latency ratios vs fp32 eager and vs each INT8 backend's FP32 counterpart, targets, fastest INT8 backend."""
    summary = {}
    for size in BATCH_SIZES:
        key, base = f"ms_batch{size}", rows["fp32"].get(f"ms_batch{size}")
        for name, row in rows.items():
            if key not in row or not base:
                continue
            row[f"ratio_vs_fp32_batch{size}"] = round(row[key] / base, 3)
            ref = rows.get(FP32_OF.get(name, ""), {})
            if key in ref:
                row[f"ratio_vs_{FP32_OF[name]}_batch{size}"] = round(row[key] / ref[key], 3)
            if name in FP32_OF and preset in TARGETS:
                row[f"meets_target_batch{size}"] = row[key] / base <= TARGETS[preset][size]
        int8 = {n: r[key] for n, r in rows.items() if n in FP32_OF and key in r}
        summary[f"fastest_int8_batch{size}"] = min(int8, key=int8.get) if int8 else None
    return summary


def run_preset(preset: str, names: list[str], repeats: int) -> dict:
    config = config_for(preset)
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(config).eval()
    cal, start_id = calibration(config), config.decoder_start_token_id
    held_out = encoder_args(batch(config, 32, HELD_OUT_SEED))
    with torch.no_grad():
        wrapped, direct = Encode(model)(*held_out)[0], model.encoder(*held_out).last_hidden_state
    result = {"d_model": config.d_model, "parameters": sum(p.numel() for p in model.parameters()),
              "encode_wrapper_matches_model_encoder": bool(torch.equal(wrapped, direct)),
              "target_int8_over_fp32": {f"batch{s}": v for s, v in TARGETS.get(preset, {}).items()}}
    with tempfile.TemporaryDirectory(prefix="trimodal-int8-") as tmp:
        pipelines, rows = build_all(names, model, cal, Path(tmp))
        if "fp32" not in pipelines:
            raise RuntimeError(f"the fp32 reference failed: {rows['fp32']}")
        check_agreement(pipelines, rows, held_out, start_id)
        for size in BATCH_SIZES:
            time_batch(pipelines, rows, encoder_args(batch(config, size, TIMING_SEED)), start_id, size, repeats)
    result.update(ratios(rows, preset))
    result["backends"] = rows
    return result


def versions() -> dict:
    out = {}
    for package in ("torch", "torchao", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["student", "small"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch and ORT intra-op threads; 0 = torch's default")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS[1:]),
                        choices=[*BACKENDS, "onnxruntime_int8_dynamic"], help="fp32 (the reference) always runs")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/int8_backends.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["fp32", *[b for b in dict.fromkeys(args.backends) if b != "fp32"]]
    results = {"versions": versions(), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "load_average_at_start": os.getloadavg()[0], "repeats": args.repeats, "new_tokens": NEW_TOKENS,
               "agreement_note": AGREEMENT_NOTE, "presets": {}}
    for preset in args.presets:
        print(f"{preset}:", flush=True)
        results["presets"][preset] = run_preset(preset, names, args.repeats)
    results["load_average_at_end"] = os.getloadavg()[0]  # another job on the cores makes torch's batch-1 times useless
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
