import pytest

from model.audio import ConformerBlock
from model.configuration import TrimodalConfig
from model.modeling import TrimodalForConditionalGeneration
from model.sizes import ddp_bytes, fsdp_block_bytes, fsdp_one_unit_bytes, fsdp_units, main


@pytest.fixture(scope="module")
def tiny_units():
    return fsdp_units("tiny")


def block_lists(model):
    """Every stack of blocks the model has, found by path rather than by class name."""
    return [model.encoder.vision.blocks, model.encoder.text.blocks, model.encoder.audio.blocks,
            model.encoder.fusion.joint, model.encoder.core.blocks, model.decoder.blocks]


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
