import pytest
import torch

from trimodal.model import sizes
from trimodal.model.deepseek_vl.modeling import DeepSeekVLForCausalLM
from trimodal.model.families import read_preset
from trimodal.model.sizes import (
    Units,
    ddp_bytes,
    fsdp_block_bytes,
    fsdp_one_unit_bytes,
    fsdp_units,
    main,
    meta_model,
    parameter_counts,
    preset_config,
)
from trimodal.model.trimodal.audio import ConformerBlock
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration


@pytest.fixture(scope="module")
def tiny_units():
    return fsdp_units("tiny")


def block_lists(model):
    """Every stack of blocks the model has, found by path rather than by class name (fusion's cross-attention
    pairs included)."""
    return [model.encoder.vision.blocks, model.encoder.text.blocks, model.encoder.audio.blocks,
            model.encoder.fusion.pairs, model.encoder.fusion.joint, model.encoder.core.blocks, model.decoder.blocks]


def test_tiny_units_match_the_real_model(tiny_units):
    model = TrimodalForConditionalGeneration(TrimodalConfig.from_preset("tiny"))
    total = sum(p.numel() for p in model.parameters())
    in_blocks = sum(p.numel() for blocks in block_lists(model) for p in blocks.parameters())
    assert (tiny_units.total, tiny_units.root) == (total, total - in_blocks)
    # tiny's widest block is a Conformer block: two FFNs, an attention and a conv module at width 64
    conformer = ConformerBlock(64, 4, 128, 15, "gelu", 0.0, 1e-5)
    assert tiny_units.largest_block == sum(p.numel() for p in conformer.parameters())


def test_per_gpu_bytes_follow_the_formulas(tiny_units):
    p, root, block = tiny_units.total, tiny_units.root, tiny_units.largest_block
    assert ddp_bytes(tiny_units, 2) == 16 * p
    assert fsdp_block_bytes(tiny_units, 2) == 16 * p / 2 + (4 + 4) * root + (2 * 4 + 4) * block
    assert fsdp_one_unit_bytes(tiny_units, 4) == 16 * p / 4 + (4 + 4) * p
    assert fsdp_block_bytes(tiny_units, 2) < ddp_bytes(tiny_units, 2)
    assert fsdp_block_bytes(tiny_units, 1) == fsdp_one_unit_bytes(tiny_units, 1) == 16 * p  # nothing wrapped


def test_full_on_8_gpus_under_fsdp_needs_a_fraction_of_ddp():
    units = fsdp_units("full")
    assert fsdp_block_bytes(units, 8) < 0.25 * ddp_bytes(units, 8)
    assert fsdp_one_unit_bytes(units, 8) < ddp_bytes(units, 8)


def test_memory_table_says_activations_are_excluded(capsys):
    main(["--memory", "--gpus", "1", "2", "tiny"])
    out = capsys.readouterr().out
    assert "Activations are NOT included" in out
    assert "| preset | parameters | strategy | 1 GPU | 2 GPUs |" in out
    assert out.count("| tiny |") == 3


def test_without_memory_the_parameter_table_is_unchanged(capsys):
    main(["tiny"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| component | tiny |", "| --- | ---: |"]
    assert lines[-1].startswith("| total | 1.06 M |")


# DeepSeek-VL (docs/model.md "DeepSeek-VL"): the family's presets in the same tool

FAMILY_PRESETS = ["deepseek_vl_1.3b", "deepseek_vl_7b"]


@pytest.fixture(scope="module")
def family_counts():
    return {preset: parameter_counts(preset) for preset in FAMILY_PRESETS}


def llm_parameters(text: dict) -> tuple[int, int]:
    """(decoder layers + final RMSNorm, embeddings + lm_head) of a Llama-architecture LLM with multi-head attention:
    per layer q, k, v, o (d x d, no bias), SwiGLU's gate / up / down (d x f), two RMSNorm weights (d)."""
    assert text["num_key_value_heads"] == text["num_attention_heads"]  # MHA, as DeepSeek LLM 1.3B / 7B
    d, f, n, v = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"], text["vocab_size"]
    return n * (4 * d * d + 3 * d * f + 2 * d) + d, v * d * (1 if text["tie_word_embeddings"] else 2)


def test_the_seeds_llm_sizes_follow_the_architecture(family_counts):
    """The 7B LLM is 6.9B with its untied embeddings. The 1.3B name fits its decoder layers (1.23B): DeepSeek LLM's
    102400-token vocabulary, untied, adds 0.42B more (the 1.3B release is listed at ~2B on its model hub)."""
    measured = {}
    for preset, counts in family_counts.items():
        layers, embeddings = llm_parameters(read_preset(preset)["text"])
        assert counts["LLM decoder layers + norm"] == layers
        assert counts["LLM embeddings"] + counts["lm_head"] == embeddings
        measured[preset] = (layers, layers + embeddings)
    assert abs(measured["deepseek_vl_7b"][1] / 6.9e9 - 1) < 0.10
    assert abs(measured["deepseek_vl_1.3b"][0] / 1.3e9 - 1) < 0.10


def test_every_parameter_of_the_family_is_in_exactly_one_row(family_counts):
    for counts in family_counts.values():
        rows = {name: n for name, n in counts.items() if name != "total"}
        assert sum(rows.values()) == counts["total"] and all(rows.values())


@pytest.mark.parametrize("preset", FAMILY_PRESETS)
def test_both_towers_give_576_tokens_at_the_seeds_sizes(preset):
    model = meta_model(preset)
    low, high = model.vision(torch.empty(1, 3, 1024, 1024, device="meta"))
    assert low.shape == high.shape == (1, 576, 1024)
    width = read_preset(preset)["text"]["hidden_size"]
    assert model.adaptor(low, high).shape == (1, 576, width)


def test_family_table_names_its_components_and_compares_the_seeds_sizes(capsys):
    main(FAMILY_PRESETS)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| component | deepseek_vl_1.3b | deepseek_vl_7b |"
    assert [line.split(" | ")[0] for line in lines[2:9]] == [
        "| low vision tower", "| high vision tower", "| adaptor", "| LLM embeddings", "| LLM decoder layers + norm",
        "| lm_head", "| total"]
    assert lines[10].startswith("deepseek_vl_1.3b: the paper's 1.3B names the LLM; measured LLM 1.65B (1.23B in its "
                                "decoder layers")
    assert lines[11].startswith("deepseek_vl_7b: the paper's 7B names the LLM; measured LLM 6.91B")
    assert lines[11].endswith("total with both vision towers and the adaptor 7.33B")


def test_without_presets_both_families_are_tabled(capsys, monkeypatch):
    monkeypatch.setattr(sizes, "PRESETS", {"trimodal": ["tiny"], "deepseek_vl": ["deepseek_vl"]})
    main([])
    first, second = capsys.readouterr().out.split("\n\n")
    assert first.startswith("| component | tiny |") and second.startswith("| component | deepseek_vl |")
    assert "| low vision tower |" in second and "| vision |" in first


def test_a_vocabulary_left_to_the_tokenizer_is_counted_at_its_default_size():
    assert preset_config("deepseek_vl").text["vocab_size"] == 1024  # conf/tokenizer/default.yaml
    assert preset_config("deepseek_vl_7b").text["vocab_size"] == 102400  # the preset's own


def test_family_fsdp_units_are_the_llm_and_vision_layers():
    config = preset_config("deepseek_vl")
    model = DeepSeekVLForCausalLM(config)
    stacks = [model.language_model.model.layers, model.vision.low.encoder.layers,
              model.vision.high.encoder.layers]
    blocks = [sum(p.numel() for p in block.parameters()) for stack in stacks for block in stack]
    total = sum(p.numel() for p in model.parameters())
    assert fsdp_units("deepseek_vl") == Units(total, total - sum(blocks), max(blocks))


def test_memory_table_takes_family_presets(capsys):
    main(["--memory", "--gpus", "1", "8", "deepseek_vl_7b"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| deepseek_vl_7b |")]
    assert len(rows) == 3 and rows[0].startswith("| deepseek_vl_7b | 7330.60 M | ddp | 117.29 | 117.29 |")
    units = fsdp_units("deepseek_vl_7b")
    assert fsdp_block_bytes(units, 8) < 0.25 * ddp_bytes(units, 8)
