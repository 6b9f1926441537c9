"""INT8 export: what is written is what is loaded back, the integers follow q = round(r / S) + Z, size shrinks;
for either family (the trimodal model, DeepSeek-VL)."""
import pytest
import torch
from safetensors.torch import load_file

from tests.model.deepseek_vl.test_deepseek_vl import HIGH, LOW, TEXT
from trimodal.model.deepseek_vl.modeling import DeepSeekVLConfig, DeepSeekVLForCausalLM
from trimodal.model.quantization import (
    WEIGHTS,
    _dequantize,
    _per_channel,
    _tied,
    calibration_pass,
    export_int8,
    load_int8,
    load_saved,
    quantize_model,
)
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_keep_fp32_linears_stay_float_and_round_trip(tmp_path):
    from trimodal.model.quantization import Int8Linear
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


@pytest.mark.slow
def test_layer_sensitivity_scores_each_linear_alone_and_restores_the_model():
    from trimodal.model.quantization import int8_linears, layer_sensitivity, round_weight_only
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


def tiny_vl():
    torch.manual_seed(0)
    config = DeepSeekVLConfig(low_vision=LOW, high_vision=HIGH, high_channels=(24, 48),
                              text={**TEXT, "tie_word_embeddings": True})
    return DeepSeekVLForCausalLM(config).eval()


def vl_inputs(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (b, 6), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.rand(b, 3, 48, 48, generator=g),
            "image_present": torch.arange(b) % 3 != 1}  # one sample in three without an image


def linear_count(model) -> int:
    return sum(type(m) is torch.nn.Linear for m in model.modules())


def test_a_deepseek_vl_calibration_pass_runs_every_linear():
    model = tiny_vl()
    called = set()
    handles = [m.register_forward_hook(lambda *_, name=name: called.add(name))
               for name, m in model.named_modules() if type(m) is torch.nn.Linear]
    with torch.no_grad():
        calibration_pass(model, {**vl_inputs(), "labels": torch.zeros(3, 22, dtype=torch.long)})  # labels unused
    for handle in handles:
        handle.remove()
    assert called == {name for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    assert {"vision.low.encoder.layers.0.mlp.fc1", "vision.high.encoder.layers.0.attn.qkv",
            "adaptor.out.1", "language_model.lm_head"} <= called  # both towers, the adaptor and the LLM


@pytest.mark.slow
def test_deepseek_vl_int8_round_trip_is_exact_and_stores_the_tied_head_once(tmp_path):
    model = tiny_vl()
    assert _tied(model.config) == {"language_model.model.embed_tokens": "language_model.lm_head"}
    for embedding, linear in _tied(model.config).items():  # the names are the model's real tie
        assert model.get_submodule(embedding).weight is model.get_submodule(linear).weight
    with torch.no_grad():
        reference = model(**vl_inputs(seed=9)).logits
    quantized = quantize_model(tiny_vl(), [vl_inputs(seed=s) for s in range(3)])
    summary = export_int8(quantized, quantized.config, tmp_path)
    loaded = load_saved(tmp_path)
    assert type(loaded) is DeepSeekVLForCausalLM and not loaded.training
    assert summary["linear_int8"] == linear_count(model) and linear_count(loaded) == 0
    with torch.no_grad():
        a, b = quantized(**vl_inputs(seed=9)).logits, loaded(**vl_inputs(seed=9)).logits
    assert torch.equal(a, b)
    assert (a - reference).abs().mean() < 0.1 * reference.std()  # quantization error small next to the spread
    assert not [k for k in load_file(tmp_path / WEIGHTS) if "embed_tokens" in k]  # rebuilt from the head
    head = loaded.get_submodule("language_model.lm_head").weight_q.dequantize()
    assert torch.equal(loaded.get_submodule("language_model.model.embed_tokens").weight, head)
    x = vl_inputs(seed=5)
    new = [m.generate(x["input_ids"], x["attention_mask"], pixel_values=x["pixel_values"], max_new_tokens=3,
                      do_sample=False) for m in (quantized, loaded)]
    assert new[0].shape == (3, 3) and torch.equal(*new)


@pytest.mark.slow
def test_a_deepseek_vl_head_kept_in_float_round_trips_and_load_saved_reads_float_folders(tmp_path):
    keep = ["language_model.lm_head", "adaptor.out.1"]
    quantized = quantize_model(tiny_vl(), [vl_inputs(seed=s) for s in range(2)], keep_fp32=keep)
    export_int8(quantized, quantized.config, tmp_path / "int8")
    loaded = load_saved(tmp_path / "int8")
    assert all(type(loaded.get_submodule(k)) is torch.nn.Linear for k in keep) and linear_count(loaded) == 2
    assert torch.equal(loaded.get_submodule("language_model.model.embed_tokens").weight,
                       loaded.get_submodule("language_model.lm_head").weight)  # still one tensor, weight-only
    with torch.no_grad():
        assert torch.equal(quantized(**vl_inputs(seed=9)).logits, loaded(**vl_inputs(seed=9)).logits)
    float_model = tiny_vl()
    float_model.save_pretrained(tmp_path / "fp32")
    again = load_saved(tmp_path / "fp32")
    assert type(again) is DeepSeekVLForCausalLM and not again.training
    assert linear_count(again) == linear_count(float_model)
    with torch.no_grad():
        assert torch.equal(again(**vl_inputs(seed=9)).logits, float_model(**vl_inputs(seed=9)).logits)
