"""The DeepSeek-VL family on shards (model/deepseek_vl/tasks.py): chat turns and their labels, what each of seed
002's three stages trains (the freezing conf/ sets, checked by which parameters get gradients), distillation,
predictions as scoring records, and the audio-only records it skips."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from tests.shard_fixtures import sharded
from tests.shard_fixtures import tiny_deepseek_vl as tiny_model
from trimodal.data.loader import make_loader, read_meta
from trimodal.model.deepseek_vl import tasks as vl_tasks
from trimodal.params import defaults
from trimodal.training.trainer import freeze

PARTS = ("vision.low", "vision.high", "adaptor", "language_model")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sharded(tmp_path_factory.mktemp("vl-data"))


@pytest.fixture(scope="module")
def tokenizer(data):
    return AutoTokenizer.from_pretrained(data / "tokenizer")


@pytest.fixture(scope="module")
def batch(data):
    return next(iter(make_loader(str(data / "shards"), "train", 12)))


def test_a_chat_turn_is_the_template_prompt_then_the_target_and_only_the_target_is_labelled(tokenizer, batch):
    text = vl_tasks.texts(tokenizer, batch)
    turns = vl_tasks.chat_turns(tokenizer, batch, "vqa", text, torch.device("cpu"))
    row = turns.rows[0]
    meta = batch["meta"][row]
    ids, labels = turns.ids[0][turns.mask[0].bool()], turns.labels[0]
    decoded = tokenizer.decode(ids, skip_special_tokens=False)
    # byte-level BPE with add_prefix_space: the turn reads " User: ..." after <s>
    assert decoded.startswith("<s> User: ")
    assert decoded.endswith(f"{meta['question']}\n\nAssistant: {meta['answer']}</s>")
    target = tokenizer.decode(labels[labels.ne(-100)], skip_special_tokens=False)
    assert target == f" {meta['answer']}</s>"
    assert (text[row] in decoded) if text[row] else True


def test_chat_turns_refuse_a_tokenizer_without_a_chat_template(tokenizer, batch):
    bare = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(ValueError, match="dvc repro tokenizer"):
        vl_tasks.chat_turns(bare, batch, "ce", vl_tasks.texts(bare, batch), torch.device("cpu"))


def trained_parts(model) -> set[str]:
    """The parts (PARTS) in which some parameter got a non-zero gradient."""
    return {part for part in PARTS
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.get_submodule(part).parameters())}


def subset(batch: dict, keep) -> dict:
    """The rows of a loader batch that `keep(meta)` accepts, as a batch."""
    rows = [i for i, m in enumerate(batch["meta"]) if keep(m)]
    return {k: ([v[i] for i in rows] if isinstance(v, list) else v[rows]) for k, v in batch.items()}


@pytest.mark.parametrize(("stage", "step", "keep", "trained"), [
    ("warmup", vl_tasks.warmup_step, vl_tasks.captioned_image, {"adaptor"}),
    ("joint, image batch", vl_tasks.joint_step, lambda m: "image" in m["modalities"], {"adaptor", "language_model"}),
    ("joint, language batch", vl_tasks.joint_step, lambda m: m["modalities"] == ["text"], {"language_model"}),
    ("sft", vl_tasks.sft_step, vl_tasks.usable, {"adaptor", "language_model", "vision.low"}),
])
def test_each_of_seed_002s_stages_trains_exactly_what_conf_leaves_unfrozen(tokenizer, batch, stage, step, keep,
                                                                          trained):
    params = defaults(["model=deepseek_vl"])
    frozen = {"warmup": params.pretrain.adaptor_warmup.frozen, "sft": params.finetune.frozen}.get(
        stage, params.pretrain.frozen)
    model = tiny_model(tokenizer)
    freeze(model, frozen)
    losses = step(tokenizer)(model, subset(batch, keep), torch.Generator())
    sum(losses.values()).backward()
    assert trained_parts(model) == trained
    for name, p in model.named_parameters():  # a frozen parameter neither trains nor gets a gradient
        if any(name.startswith(f + ".") for f in frozen):
            assert not p.requires_grad and p.grad is None, name


def test_the_three_stages_freeze_what_the_deepseek_vl_paper_says():
    """Stage 1 trains the adaptor alone, stage 2 the LLM too, stage 3 also the low-resolution tower; SAM-B is
    frozen throughout (arXiv 2403.05525 section 3.2; docs/model.md)."""
    params = defaults(["model=deepseek_vl"])
    assert params.pretrain.adaptor_warmup.frozen == ["vision", "language_model"]
    assert params.pretrain.frozen == ["vision"]
    assert params.finetune.frozen == ["vision.high"]
    assert params.pretrain.language_fraction == pytest.approx(0.7)


def test_distillation_reaches_the_student_only_and_matches_the_hard_loss_at_alpha_zero(tokenizer, batch):
    teacher, student = tiny_model(tokenizer).eval().requires_grad_(False), tiny_model(tokenizer)
    torch.manual_seed(1)
    for p in student.parameters():
        p.data.add_(torch.randn_like(p) * 0.01)
    usable = subset(batch, vl_tasks.usable)
    kd = vl_tasks.kd_step(teacher, tokenizer, alpha=0.0, temperature=2.0)(student, usable, torch.Generator())
    hard = vl_tasks.sft_step(tokenizer)(student, usable, torch.Generator())
    assert kd.keys() == hard.keys() == {"ce", "vqa", "cls"}
    for task in kd:  # alpha = 0: the KD loss is the targets' cross-entropy alone
        assert torch.allclose(kd[task], hard[task], atol=1e-5)
    soft = vl_tasks.kd_step(teacher, tokenizer, alpha=1.0, temperature=2.0)(student, usable, torch.Generator())
    sum(soft.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert trained_parts(student) >= {"adaptor", "language_model"}


def test_predictions_are_scoring_records_of_every_usable_record_and_only_those(tokenizer, batch):
    model = tiny_model(tokenizer).eval()
    records = vl_tasks.predict_batch(model, tokenizer, batch, max_new_tokens=4)
    usable = [m["id"] for m in batch["meta"] if vl_tasks.usable(m)]
    assert [r["id"] for r in records] == usable and len(usable) < len(batch["meta"])  # audio-only ones left out
    for r in records:
        assert isinstance(r["caption_pred"], str) and isinstance(r["answer_pred"], str)
        assert r["label_pred"] in (-1, 0, 1)
        assert r["nll"] > 0 and r["tokens"] > 0  # every fixture record has a caption


def test_a_class_score_is_the_log_likelihood_of_the_class_name_as_the_class_turns_answer(tokenizer, batch):
    model = tiny_model(tokenizer).eval()
    text = vl_tasks.texts(tokenizer, batch)
    visual = vl_tasks.visual_of(model, batch)
    rows, scores = vl_tasks.class_scores(model, tokenizer, batch, text, visual)
    assert scores.shape == (len(rows), 2) and rows == [i for i, m in enumerate(batch["meta"]) if vl_tasks.usable(m)]
    turns = vl_tasks.chat_turns(tokenizer, batch, "cls", text, torch.device("cpu"))  # targets: the true names
    logits, targets = vl_tasks.shifted(vl_tasks.run(model, turns, visual, batch), turns.labels)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none").sum(1)
    for j, i in enumerate(turns.rows):
        truth = batch["meta"][i]["label_index"]
        assert torch.allclose(-scores[rows.index(i), truth], nll[j], atol=1e-4)


def test_audio_only_records_are_counted_as_skipped(data):
    metas = read_meta(str(data / "shards"), "train")
    counts = vl_tasks.skipped(str(data / "shards"), "train")
    audio_only = sum(m["modalities"] == ["audio"] for m in metas)
    assert audio_only > 0
    assert counts == {"train_records": len(metas), "train_skipped_audio_only": audio_only}
