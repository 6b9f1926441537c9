"""DeepSeek-VL's hybrid vision encoder and adaptor (model/deepseek_vl/hybrid_vision.py,
model/deepseek_vl/vl_adaptor.py): shapes at tiny and at the paper's full size (meta device), gradients through both
towers, clear errors."""
import pytest
import torch
from transformers import SamVisionConfig, SiglipVisionConfig

from trimodal.model.deepseek_vl.hybrid_vision import HybridVisionEncoder
from trimodal.model.deepseek_vl.vl_adaptor import HybridAdaptor


def tiny_encoder() -> HybridVisionEncoder:
    low = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             image_size=32, patch_size=8)
    high = SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=64,
                           num_pos_feats=8)
    return HybridVisionEncoder(low, high, (24, 48))


def test_both_towers_give_one_token_per_cell_of_the_low_towers_grid():
    torch.manual_seed(0)
    encoder, adaptor = tiny_encoder(), HybridAdaptor(low_dim=32, high_dim=48, llm_dim=64)
    low, high = encoder(torch.randn(2, 3, 40, 56))  # any input size: each tower resizes to its own
    assert encoder.num_tokens == 16 and low.shape == (2, 16, 32) and high.shape == (2, 16, 48)
    tokens = adaptor(low, high)
    assert tokens.shape == (2, 16, 64)
    tokens.pow(2).mean().backward()
    for name, module in {"low tower": encoder.low, "high tower": encoder.high, "adaptor": adaptor}.items():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), f"{name}: a parameter got no gradient"
        assert any(g.abs().sum() > 0 for g in grads), name


def test_the_seeds_sizes_576_tokens_into_a_2048_wide_llm():
    """At the paper's sizes, SigLIP at 384 px and SAM-B at 1024 px (64x64x256 map -> 96x96 -> two convolutions) both
    give 576 tokens; the adaptor maps them to the 1.3B LLM's width 2048."""
    with torch.device("meta"):
        low = SiglipVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                 num_attention_heads=16, image_size=384, patch_size=16)  # SigLIP-L
        encoder = HybridVisionEncoder(low, SamVisionConfig(), (512, 1024))  # SAM-B defaults
        low_tokens, high_tokens = encoder(torch.empty(1, 3, 1024, 1024))
        tokens = HybridAdaptor(1024, 1024, 2048)(low_tokens, high_tokens)
    assert encoder.high.grid * 4 == 96 and low_tokens.shape == high_tokens.shape == (1, 576, 1024)
    assert tokens.shape == (1, 576, 2048)


def test_mismatched_towers_and_odd_widths_are_refused():
    with pytest.raises(ValueError, match="disagree on the tokens"):
        HybridAdaptor(8, 8, 16)(torch.zeros(1, 4, 8), torch.zeros(1, 9, 8))
    with pytest.raises(ValueError, match="must be even"):
        HybridAdaptor(8, 8, 15)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        HybridVisionEncoder(SiglipVisionConfig(image_size=30, patch_size=8), SamVisionConfig(), (8, 8))
