"""The `Family` interface (model/family.py): each family answers every call of it, a step has the same shape in
both, and each step is the family's own (the functions the stages called before they went through the interface)."""
import pytest
import torch

from trimodal.model.deepseek_vl import tasks as vl_tasks
from trimodal.model.deepseek_vl.family import DeepSeekVLFamily
from trimodal.model.families import CLASSES, DEEPSEEK_VL, FAMILIES, TRIMODAL, family_for, family_named, read_preset
from trimodal.model.family import Family
from trimodal.model.trimodal import tasks
from trimodal.model.trimodal.family import TrimodalFamily


def test_every_family_is_one_implementation_of_the_interface():
    assert set(FAMILIES) == {TRIMODAL, DEEPSEEK_VL} == set(CLASSES)
    assert isinstance(FAMILIES[TRIMODAL], TrimodalFamily) and isinstance(FAMILIES[DEEPSEEK_VL], DeepSeekVLFamily)
    for name, family in FAMILIES.items():
        assert isinstance(family, Family) and family.name == name and family_named(name) is family
        assert {"pretrain", "finetune", "distill"} <= set(family.stages)


def test_the_trimodal_family_steps_are_its_tasks_and_it_reads_every_record():
    family = family_named(TRIMODAL)
    assert family.step("pretrain", None) is tasks.pretrain_step
    assert family.step("finetune", None) is tasks.finetune_step
    assert family.replay(None) is tasks.finetune_losses
    assert family.keep is None and family.reads(["audio"]) and family.skipped("any/shards", "train") == {}
    with pytest.raises(ValueError, match="no 'warmup' step"):
        family.step("warmup", None)
    with pytest.raises(ValueError, match="needs its teacher"):
        family.step("distill", None)


def test_the_deepseek_vl_family_reads_images_and_text_not_sound():
    family = family_named(DEEPSEEK_VL)
    assert family.keep is vl_tasks.usable  # a plain function, not bound to the family
    assert family.reads(["image"]) and family.reads(["text", "audio"]) and not family.reads(["audio"])
    assert family.stages == ("warmup", "pretrain", "finetune", "distill")


def test_a_config_built_by_the_family_names_it_back():
    for name, preset in [(TRIMODAL, "tiny"), (DEEPSEEK_VL, "deepseek_vl")]:
        settings = {k: v for k, v in read_preset(preset).items() if k != "family"}
        config = family_named(name).build_config(settings, vocab_size=64)
        with torch.device("meta"):
            model = family_named(name).build(config)
        assert isinstance(model, family_named(name).model_class) and family_for(model) is family_named(name)


def test_a_phase_reads_the_records_its_family_names():
    trimodal, vl = family_named(TRIMODAL), family_named(DEEPSEEK_VL)
    assert trimodal.records("pretrain") is None and trimodal.records("warmup") is None
    assert vl.records("pretrain") is vl_tasks.usable
    warmup = vl.records("warmup")  # the adaptor warm-up: image-caption pairs only
    assert warmup({"modalities": ["image"], "caption": "a red circle"})
    assert not warmup({"modalities": ["image"]}) and not warmup({"modalities": ["text"], "caption": "words"})


def test_only_the_trimodal_decoder_cuts_a_chat_prompt():
    class Config:
        max_decoder_positions = 40

    model = type("M", (), {"config": Config()})()
    assert family_named(TRIMODAL).prompt_width(model) == 40 - 16  # room for the response
    assert family_named(DEEPSEEK_VL).prompt_width(model) is None


def test_a_family_asked_without_the_tokenizer_its_chat_turns_need_says_so():
    vl = family_named(DEEPSEEK_VL)
    with pytest.raises(ValueError, match="pass its tokenizer"):
        vl.calibration_passes(None, None, {})
    with pytest.raises(ValueError, match="pass its tokenizer"):
        vl.timing_inputs(None, {})
    with pytest.raises(ValueError, match="timing_inputs"):
        vl.timed(None, {}, None, 3)
