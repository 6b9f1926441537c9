"""INT8 export: what is written is what is loaded back, the integers follow q = round(r / S) + Z, size shrinks."""
import torch

from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration
from model.quantization import WEIGHTS, _dequantize, _per_channel, export_int8, load_int8, quantize_model


def inputs(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.rand(b, 3, 16, 16, generator=g), "image_present": torch.ones(b, dtype=torch.bool),
            "input_features": torch.randn(b, 20, 40, generator=g), "mel_lengths": torch.full((b,), 40),
            "text_ids": torch.randint(5, 60, (b, 7), generator=g), "text_mask": torch.ones(b, 7, dtype=torch.bool),
            "decoder_input_ids": torch.randint(5, 60, (b, 5), generator=g)}


def tiny():
    torch.manual_seed(0)
    config = TrimodalConfig(vocab_size=64, image_size=16, patch_size=8, n_mels=20, num_classes=3)
    return TrimodalForConditionalGeneration(config).eval()


def test_per_channel_is_symmetric_affine_and_idempotent():
    w = torch.randn(6, 5) * torch.arange(1, 7)[:, None]
    q, scale = _per_channel(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scale.shape == (6,) and scale.dtype == torch.bfloat16
    assert torch.equal(q, torch.round(w / scale.float()[:, None]).to(torch.int8))  # Z = 0, with the stored scale
    assert q.abs().amax(1).eq(127).all()  # every row's largest weight still maps to +-127
    assert ((w - _dequantize(q, scale)).abs() <= scale.float()[:, None] / 2 + 1e-6).all()
    again_q, again_scale = _per_channel(_dequantize(q, scale))
    assert torch.equal(again_q, q) and torch.allclose(again_scale, scale)


def test_int8_round_trip_is_exact_and_close_to_fp32(tmp_path):
    model = tiny()
    with torch.no_grad():
        reference = model(**inputs(seed=9))
    quantized = quantize_model(tiny(), [inputs(seed=s) for s in range(3)])
    summary = export_int8(quantized, model.config, tmp_path)
    loaded = load_int8(tmp_path)
    with torch.no_grad():
        a, b = quantized(**inputs(seed=9)), loaded(**inputs(seed=9))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.class_logits, b.class_logits)
    assert summary["linear_int8"] == sum(type(m) is torch.nn.Linear for m in model.modules())
    # quantization error is small next to the logits' own spread
    assert (a.logits - reference.logits).abs().mean() < 0.1 * reference.logits.std()
    assert (tmp_path / WEIGHTS).stat().st_size < 0.4 * sum(p.numel() * 4 for p in model.parameters())


def test_load_int8_names_missing_tensors(tmp_path):
    from safetensors.torch import load_file, save_file
    export_int8(quantize_model(tiny(), [inputs()]), tiny().config, tmp_path)
    tensors = load_file(tmp_path / WEIGHTS)
    dropped = next(k for k in tensors if k.endswith("ln1.weight"))
    del tensors[dropped]
    save_file(tensors, tmp_path / WEIGHTS)
    try:
        load_int8(tmp_path)
    except ValueError as e:
        assert dropped in str(e)
    else:
        raise AssertionError("a file missing a tensor loaded silently")


def test_keep_fp32_linears_stay_float_and_round_trip(tmp_path):
    from model.quantization import Int8Linear
    keep = ["decoder.lm_head", "classifier.out"]  # the LM head is tied to the decoder embedding
    quantized = quantize_model(tiny(), [inputs(seed=s) for s in range(2)], keep_fp32=keep)
    assert all(type(quantized.get_submodule(k)) is torch.nn.Linear for k in keep)
    assert isinstance(quantized.get_submodule("decoder.blocks.0.ffn.fc1"), Int8Linear)
    summary = export_int8(quantized, quantized.config, tmp_path)
    assert summary["linear_int8"] == sum(type(m) is torch.nn.Linear for m in tiny().modules()) - len(keep)
    loaded = load_int8(tmp_path)
    assert all(type(loaded.get_submodule(k)) is torch.nn.Linear for k in keep)
    for k in keep:  # float compute on int8 weights: stored weight-only, so the file stays small
        w = loaded.get_submodule(k).weight
        assert torch.equal(_dequantize(*_per_channel(w)), w)
    all_int8 = tmp_path / "all"
    export_int8(quantize_model(tiny(), [inputs(seed=s) for s in range(2)]), tiny().config, all_int8)
    # the kept LM head's tied embedding is not stored a second time: hardly larger than all-INT8
    assert (tmp_path / WEIGHTS).stat().st_size < 1.05 * (all_int8 / WEIGHTS).stat().st_size
    with torch.no_grad():
        a, b = quantized(**inputs(seed=9)), loaded(**inputs(seed=9))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.class_logits, b.class_logits)
    try:
        quantize_model(tiny(), [inputs()], keep_fp32=["no.such.linear"])
    except ValueError as e:
        assert "no.such.linear" in str(e)
    else:
        raise AssertionError("an unknown keep_fp32 name must be refused")


def test_layer_sensitivity_scores_each_linear_alone_and_restores_the_model():
    from model.quantization import int8_linears, layer_sensitivity, round_weight_only
    fp32 = round_weight_only(tiny())
    quantized = quantize_model(tiny(), [inputs(seed=s) for s in range(2)])
    x = inputs(seed=9)
    with torch.no_grad():
        before = fp32(**x).logits

    def score(model):  # how far this mix moves the logits, and which Linears are INT8 in it
        seen.append(sum(isinstance(m, type(next(iter(int8_linears(quantized).values())))) for m in model.modules()))
        with torch.no_grad():
            return float((model(**x).logits - before).abs().max())

    seen = []
    sensitivity = layer_sensitivity(fp32, quantized, score)
    assert set(sensitivity) == set(int8_linears(quantized)) and set(seen) == {1}  # exactly one INT8 at a time
    assert sensitivity["decoder.lm_head"] > 0 and sensitivity["mlm_head"] == 0  # a head off the logits' path
    with torch.no_grad():
        assert torch.equal(fp32(**x).logits, before)  # restored
