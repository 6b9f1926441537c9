"""trimodal/alignment/instruction_tasks.py: the count of the prompts the trimodal decoder cannot read whole, and the
instruction turns anchored to a reference (align's `anchor`)."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoTokenizer

from tests.shard_fixtures import sharded, tiny_deepseek_vl
from trimodal.alignment.instruction_tasks import cut_lines, cut_prompts, instruct_losses, template_changes
from trimodal.alignment.instructions import tasks_of
from trimodal.alignment.responses import prompt_width
from trimodal.data.loader import make_loader, read_meta
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration

LONG = "Please read every one of these many words with care before you answer, then " * 3
TEMPLATES = {"caption": {"train": ["Describe it.", LONG + "describe it."], "held_out": ["Caption it."]},
             "vqa": {"train": ["{question}"], "held_out": [LONG + "{question}"]},
             "classify": {"train": ["What is it?"], "held_out": ["Name its class."]},
             "choice": {"train": ["Which? {options}"], "held_out": ["Pick one: {options}"]}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sharded(tmp_path_factory.mktemp("cut-prompts"))


def trimodal(tokenizer, positions: int) -> TrimodalForConditionalGeneration:
    torch.manual_seed(0)
    return TrimodalForConditionalGeneration(TrimodalConfig.from_preset(
        "tiny", vocab_size=len(tokenizer), image_size=16, n_mels=20, max_decoder_positions=positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id))


def test_long_prompts_are_counted_per_template_and_short_ones_are_not(data):
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    model = trimodal(tokenizer, 64)
    metas = read_meta(str(data / "shards"), "val")
    captions = [m.get("caption") for m in metas]
    asked = {task: sum(task in tasks_of(m, captions) for m in metas) for task in TEMPLATES}
    cut = cut_prompts(model, tokenizer, str(data / "shards"), "val", TEMPLATES, 3, seed=0, batch_size=3)
    assert asked["caption"] > 0 and asked["vqa"] > 0 and asked["choice"] > 0
    every = {task: {"cut": n, "n": n} for task, n in asked.items()}
    # the fixture's small vocabulary spells the captions out: three listed ones overflow the decoder's prefix
    assert cut == {"caption": {LONG + "describe it.": every["caption"]}, "vqa": {LONG + "{question}": every["vqa"]},
                   "choice": {"Which? {options}": every["choice"], "Pick one: {options}": every["choice"]}}
    lines = cut_lines(cut, prompt_width(model), "val")
    assert len(lines) == 4 and f"{asked['vqa']} of {asked['vqa']} val prompts of vqa template" in lines[1]
    assert "the 48 tokens the decoder reads whole" in lines[0]
    # with room for every prompt, nothing is cut; DeepSeek-VL never cuts its prompts
    assert cut_prompts(trimodal(tokenizer, 512), tokenizer, str(data / "shards"), "val", TEMPLATES, 3, seed=0) == {}
    assert cut_prompts(tiny_deepseek_vl(tokenizer, image_size=16, n_mels=20), tokenizer, str(data / "shards"), "val",
                       TEMPLATES, 3, seed=0) == {}


def anchored_losses(data, anchor):
    """instruct_losses on one train batch of the fixture, with nothing replayed beside the turns."""
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    model = trimodal(tokenizer, 64).eval()  # eval: no dropout, so the policy is its anchor's exact copy
    short = {task: {"train": [t for t in row["train"] if LONG not in t], "held_out": []}
             for task, row in TEMPLATES.items()}
    step = instruct_losses(tokenizer, short, 3, lambda m, b, g: ({}, None), 0.0,
                           None if anchor is None else anchor(model))
    batch = next(iter(make_loader(str(data / "shards"), "train", 4)))
    losses, _ = step(model, batch, torch.Generator().manual_seed(0))
    return model, losses


def test_anchored_turns_hold_the_model_at_its_anchor_and_pull_it_back_when_it_moves(data):
    model, losses = anchored_losses(data, lambda m: copy.deepcopy(m).requires_grad_(False))
    assert set(losses) == {"anchor"} and losses["anchor"] > 0  # the anchor's entropy over the answers
    losses["anchor"].backward()  # cross-entropy to its own distribution: the gradient of KL at its minimum
    assert max(p.grad.abs().max() for p in model.parameters() if p.grad is not None) < 1e-6

    def moved(m):
        anchor = copy.deepcopy(m).requires_grad_(False)
        with torch.no_grad():
            anchor.decoder.lm_head.weight.add_(torch.randn_like(anchor.decoder.lm_head.weight))
        return anchor
    model, losses = anchored_losses(data, moved)
    losses["anchor"].backward()
    assert model.decoder.lm_head.weight.grad.abs().max() > 1e-4
    # without an anchor the same turns train on their answers
    _, losses = anchored_losses(data, None)
    assert set(losses) == {"instruct"} and losses["instruct"] > 0


def scored(missed: dict) -> dict:
    """template_scores' shape: per template of vqa its missed records (None: scored before they were recorded)."""
    return {"vqa": {"accuracy": 0.9, "n": 20, "templates": {
        t: {"accuracy": 0.9, "n": 10, **({} if ids is None else {"missed": ids})} for t, ids in missed.items()}},
        "mean": 0.9}


def test_template_changes_count_the_records_each_side_missed_and_test_the_fall():
    before = scored({"A {question}": ["r1", "r2"], "B {question}": [], "C {question}": None})
    after = scored({"A {question}": ["r2", "r3", "r4", "r5", "r6", "r7"], "B {question}": [], "C {question}": []})
    changes = template_changes(before, after)
    assert set(changes["vqa"]) == {"A {question}", "B {question}"}  # C has no records of its own to compare
    a = changes["vqa"]["A {question}"]
    assert (a["lost"], a["gained"]) == (5, 1)
    assert a["p"] == pytest.approx(7 / 64)  # P(X >= 5), X ~ Binomial(6, 1/2)
    assert changes["vqa"]["B {question}"] == {"lost": 0, "gained": 0, "p": 1.0}
