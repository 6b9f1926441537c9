"""The quantize stage's speed sweep: which shapes each INT8 Linear sees, their replayed timings, the keep rule."""
import copy

from torch import nn

from model.quantization import quantize_model
from stages.common.latency import inference
from stages.quantize import linear_calls, slower_in_int8, speed_sweep
from tests.model.test_quantization import inputs, tiny


def quantized_pair() -> tuple[nn.Module, nn.Module]:
    model = tiny()
    return model, quantize_model(copy.deepcopy(model), [inputs(seed=s) for s in range(2)])


def latency_batch(b: int) -> dict:
    x = inputs(b)
    return {"image": x["pixel_values"], "image_present": x["image_present"], "mel": x["input_features"],
            "mel_lengths": x["mel_lengths"], "text_ids": x["text_ids"], "text_mask": x["text_mask"]}


def test_linear_calls_records_every_call_of_an_inference_and_unhooks():
    _, quantized = quantized_pair()
    shapes = linear_calls(quantized, inference(quantized, latency_batch(3), max_new_tokens=4))
    # the decoder runs once per generated token (KV cache: one new position) and once in the forward pass
    lm_head = shapes["decoder.lm_head"]
    assert len(lm_head) >= 4 and all(s[0] == 3 and s[-1] == quantized.config.d_model for s in lm_head)
    assert shapes["mlm_head"] == []  # pre-training heads are not part of an inference
    assert all(not m._forward_pre_hooks for m in quantized.modules())
    again = linear_calls(quantized, inference(quantized, latency_batch(1), max_new_tokens=4))
    assert {n: len(v) for n, v in again.items()} == {n: len(v) for n, v in shapes.items()}
    assert all(s[0] == 1 for s in again["decoder.lm_head"])


def test_speed_sweep_times_called_linears_in_both_precisions():
    fp32, quantized = quantized_pair()
    speed = speed_sweep(fp32, quantized, {"b2": inference(quantized, latency_batch(2), 3), "none": lambda: None},
                        repeats=3)
    assert set(speed) == {n for n, m in quantized.named_modules() if type(m).__name__ == "Int8Linear"}
    head = speed["decoder.lm_head"]
    assert head["calls_b2"] >= 3 and head["int8_ms_b2"] > 0 and head["float_ms_b2"] > 0
    assert head["calls_none"] == 0 and head["int8_ms_none"] == head["float_ms_none"] == 0
    assert speed["mlm_head"]["calls_b2"] == 0


def test_slower_in_int8_keeps_what_loses_time_in_any_called_workload_most_lost_first():
    speed = {
        "wins": {"calls_b1": 3, "int8_ms_b1": 1.0, "float_ms_b1": 2.0, "calls_b32": 1, "int8_ms_b32": 2.0,
                 "float_ms_b32": 4.0},
        "loses_at_b1": {"calls_b1": 3, "int8_ms_b1": 3.0, "float_ms_b1": 1.0, "calls_b32": 1, "int8_ms_b32": 1.0,
                        "float_ms_b32": 2.0},  # lost 2.0
        "loses_more": {"calls_b1": 1, "int8_ms_b1": 1.0, "float_ms_b1": 1.0, "calls_b32": 1, "int8_ms_b32": 5.0,
                       "float_ms_b32": 2.0},  # lost 3.0
        "never_called": {"calls_b1": 0, "int8_ms_b1": 0.1, "float_ms_b1": 0.0, "calls_b32": 0, "int8_ms_b32": 0.1,
                         "float_ms_b32": 0.0},
        "ties": {"calls_b1": 2, "int8_ms_b1": 1.0, "float_ms_b1": 1.0},
    }
    assert slower_in_int8(speed) == ["loses_more", "loses_at_b1"]

