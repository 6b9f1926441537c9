"""The quantize stage's speed sweep: which shapes each INT8 Linear sees, their replayed timings, the keep rule; and
the stage for a DeepSeek-VL student: its chat-turn calibration passes, its inference workload, the shipped folder."""
import copy
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer

from stages.quantize import calibration_inputs, linear_calls, reference, slower_in_int8, speed_sweep
from tests.model.test_quantization import inputs, tiny
from tests.shard_fixtures import sharded
from tests.shard_fixtures import tiny_deepseek_vl as tiny_model
from tests.stage_runner import make_project, run_stage
from trimodal.data.loader import make_loader
from trimodal.evaluation.latency import INPUTS, inference, timing_batches
from trimodal.model.deepseek_vl import tasks as vl_tasks
from trimodal.model.deepseek_vl.modeling import DeepSeekVLForCausalLM
from trimodal.model.families import family_named
from trimodal.model.quantization import Int8Linear, load_saved, quantize_model


def quantized_pair() -> tuple[nn.Module, nn.Module]:
    model = tiny()
    return model, quantize_model(copy.deepcopy(model), [inputs(seed=s) for s in range(2)])


def latency_batch(b: int) -> dict:
    x = inputs(b)
    return {"image": x["pixel_values"], "image_present": x["image_present"], "mel": x["input_features"],
            "mel_lengths": x["mel_lengths"], "text_ids": x["text_ids"], "text_mask": x["text_mask"]}


@pytest.mark.slow
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


@pytest.mark.slow
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



@pytest.fixture(scope="module")
def vl_data(tmp_path_factory):
    return sharded(tmp_path_factory.mktemp("quantize-vl-data"))


@pytest.fixture(scope="module")
def vl_tokenizer(vl_data):
    return AutoTokenizer.from_pretrained(vl_data / "tokenizer")


@pytest.mark.slow
def test_deepseek_vl_calibration_passes_are_its_chat_turns_scored_where_the_family_scores_them(vl_data, vl_tokenizer):
    model = tiny_model(vl_tokenizer).eval()
    shards = str(vl_data / "shards")
    passes = next(calibration_inputs(model, shards, 8, 1, vl_tokenizer))
    batch = next(iter(make_loader(shards, "val", 8, keep=vl_tasks.usable)))
    visual = vl_tasks.visual_of(model, batch)
    expected = []
    for task in vl_tasks.TASKS:  # the family's own path: visual tokens once, each turn's text logits, shifted
        turns = vl_tasks.chat_turns(vl_tokenizer, batch, task, vl_tasks.texts(vl_tokenizer, batch), torch.device("cpu"))
        if turns is not None:
            with torch.no_grad():
                logits, targets = vl_tasks.shifted(vl_tasks.run(model, turns, visual, batch), turns.labels)
            expected.append((F.log_softmax(logits[targets.ne(-100)], -1), targets[targets.ne(-100)]))
    assert len(passes) == len(expected) == 3  # caption, VQA and class-name turns
    tokens = model.vision.num_tokens
    for kwargs, (tokens_ref, classes), (log_probs, targets) in zip(passes, reference(model, passes), expected,
                                                                   strict=True):
        labels = kwargs["labels"]
        assert labels.shape[1] == tokens + kwargs["input_ids"].shape[1] and labels[:, :tokens].eq(-100).all()
        assert torch.equal(labels[labels.ne(-100)], targets)  # the targets, at the positions that predict them
        assert torch.allclose(tokens_ref, log_probs, atol=1e-5) and classes is None


@pytest.mark.slow
def test_a_deepseek_vl_inference_is_a_prompt_forward_then_exactly_n_greedy_tokens(vl_data, vl_tokenizer):
    shards = str(vl_data / "shards")
    family = family_named("deepseek_vl")
    readable = timing_batches(shards, "test", [1, 2], family, vl_tokenizer)
    assert all(vl_tasks.usable(m) for b in readable.values() for m in b["meta"])  # test's first record: audio only
    assert readable["batch2"][INPUTS].rows == [0, 1]
    batches = timing_batches(shards, "val", [1, 2], family, vl_tokenizer)
    assert batches["batch2"]["image_present"].any()  # so the inference runs the towers
    model = tiny_model(vl_tokenizer).eval()
    passes = [kw for p in calibration_inputs(model, shards, 8, 1, vl_tokenizer) for kw in p]
    quantized = quantize_model(copy.deepcopy(model), passes)
    shapes = linear_calls(quantized, inference(quantized, batches["batch2"], max_new_tokens=3))
    head, width = shapes["language_model.lm_head"], model.config.text["hidden_size"]
    prompt = batches["batch2"][INPUTS].ids.shape[1]
    # the prompts' forward over [visual; text], then one call per new token (KV cache), none cut short by </s>
    assert head == [torch.Size([2, model.vision.num_tokens + prompt, width])] + [torch.Size([2, 1, width])] * 3
    assert len(shapes["adaptor.out.1"]) == 1  # the images are encoded once per inference
    with pytest.raises(ValueError, match="pass its tokenizer"):  # its inference is a chat turn
        timing_batches(shards, "test", [1], family)
    with pytest.raises(ValueError, match="timing_inputs"):  # a batch made for another family
        inference(model, timing_batches(shards, "test", [1], family_named("trimodal"))["batch1"], max_new_tokens=3)


@pytest.mark.slow
def test_quantize_stage_ships_a_deepseek_vl_student_that_reads_back(vl_data, vl_tokenizer, tmp_path):
    project = make_project(tmp_path)
    shutil.copytree(vl_data / "shards", project / "data/shards")
    student = tiny_model(vl_tokenizer).eval()
    student.save_pretrained(project / "models/student")
    vl_tokenizer.save_pretrained(project / "models/student")
    run_stage("quantize", project, "quantize.int8_min_features=0", "quantize.max_val_drop=-1",  # never close
              "quantize.max_fp32_linears=2", "quantize.batch_size=4", "quantize.speed_batch_sizes=[1]",
              "quantize.sensitivity_batches=1",
              "quantize.speed_repeats=2", "quantize.speed_new_tokens=2")
    details = json.loads((project / "metrics/details/quantize.json").read_text())
    assert details["round_trip_max_difference"] == 0.0
    assert set(details["val_accuracy"]) == {"fp32", "int8_all", "int8"}
    assert all(0.0 <= v <= 1.0 for v in details["val_accuracy"].values())
    fragile = [r["linear"] for r in details["sensitivity"][:2]]  # the two most fragile, back to float
    assert details["kept_fp32"] == details["kept_fp32_fragile"] == fragile
    linears = sum(type(m) is nn.Linear for m in student.modules())
    assert details["linear_int8"] == linears - 2 and len(details["sensitivity"]) == linears
    assert details["int8_bytes"] < 0.4 * details["fp32_bytes"]
    shipped = load_saved(project / "models/student-int8")
    assert type(shipped) is DeepSeekVLForCausalLM
    assert sum(isinstance(m, Int8Linear) for m in shipped.modules()) == details["linear_int8"]
    assert all(type(shipped.get_submodule(name)) is nn.Linear for name in fragile)
    assert AutoTokenizer.from_pretrained(project / "models/student-int8").chat_template is not None
    head = next(r for r in details["speed"] if r["linear"] == "language_model.lm_head")
    assert head["calls_batch1"] == 3  # prompt forward + 2 new tokens
    assert set(details["latency"]) == {"fp32", "int8_all", "shipped"}
    assert all(row["ms_batch1"] > 0 for row in details["latency"].values())
