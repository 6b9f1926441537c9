"""DeepSeek-VL (model/deepseek_vl/modeling.py) at tiny size: [visual tokens; text] into a Llama LM, loss on text only,
masking of absent images, padding, generate with and without the KV cache, save / load."""
import pytest
import torch
import torch.nn.functional as F

from trimodal.model.deepseek_vl.modeling import DeepSeekVLConfig, DeepSeekVLForCausalLM

LOW = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
       "image_size": 32, "patch_size": 8}
HIGH = {"hidden_size": 32, "output_channels": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 64,
        "patch_size": 8, "window_size": 4, "global_attn_indexes": [1], "mlp_dim": 64, "num_pos_feats": 8}
TEXT = {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "pad_token_id": 0,
        "bos_token_id": 1, "eos_token_id": 2}
VISUAL = 16  # (32 / 8)^2 tokens


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = DeepSeekVLConfig(low_vision=LOW, high_vision=HIGH, high_channels=(24, 48), text=TEXT)
    return DeepSeekVLForCausalLM(config).eval()


def batch(n: int = 2, length: int = 7):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (n, length), generator=generator)
    return ids, torch.ones_like(ids), torch.rand(n, 3, 48, 48, generator=generator)


def test_visual_tokens_come_first_and_only_text_is_scored(model):
    ids, mask, images = batch()
    out = model(ids, mask, pixel_values=images, labels=ids)
    assert out.logits.shape == (2, VISUAL + 7, 100)
    # each position predicts the next one; the text's labels start at its first token (from the last visual one)
    text_logits = out.logits[:, VISUAL - 1 : -1]
    expected = F.cross_entropy(text_logits.reshape(-1, 100), ids.reshape(-1))
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_a_sample_without_an_image_does_not_see_its_pixels(model):
    ids, mask, images = batch()
    absent = torch.tensor([True, False])
    first = model(ids, mask, pixel_values=images, image_present=absent).logits
    second = model(ids, mask, pixel_values=torch.rand_like(images), image_present=absent).logits
    # the text of a sample without an image never attends to its (masked) visual positions
    assert torch.allclose(first[1, VISUAL:], second[1, VISUAL:], atol=1e-5)
    assert not torch.allclose(first[0, VISUAL:], second[0, VISUAL:], atol=1e-3)  # with an image, pixels matter


def test_right_padding_leaves_the_real_tokens_unchanged(model):
    ids, mask, images = batch(1, 5)
    alone = model(ids, mask, pixel_values=images).logits
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=ids.dtype)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=mask.dtype)], 1)
    padded = model(padded_ids, padded_mask, pixel_values=images).logits
    assert torch.allclose(alone, padded[:, : VISUAL + 5], atol=1e-5)


def test_every_part_learns(model):
    ids, mask, images = batch()
    model.zero_grad()
    model(ids, mask, pixel_values=images, labels=ids).loss.backward()
    for name, part in {"low tower": model.vision.low, "high tower": model.vision.high, "adaptor": model.adaptor,
                       "llm": model.language_model}.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), name
    model.zero_grad()


def test_generate_with_and_without_the_cache_and_after_save_load(model, tmp_path):
    ids, mask, images = batch()
    cached = model.generate(ids, mask, pixel_values=images, max_new_tokens=5, do_sample=False)
    uncached = model.generate(ids, mask, pixel_values=images, max_new_tokens=5, do_sample=False, use_cache=False)
    assert cached.shape == (2, 5) and torch.equal(cached, uncached)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = DeepSeekVLForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.high_channels == [24, 48] and loaded.config.text["num_key_value_heads"] == 2
    assert torch.equal(loaded.generate(ids, mask, pixel_values=images, max_new_tokens=5, do_sample=False), cached)
