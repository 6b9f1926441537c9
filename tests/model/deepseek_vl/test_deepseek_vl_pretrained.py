"""DeepSeek-VL's parts from tiny transformers checkpoints saved into tmp_path (model/deepseek_vl/pretrained.py): the
weights are the folder's, a bf16 folder loads in fp32, sizes that disagree with the config are named, and a model
saved with pretrained parts reloads (no hub access anywhere)."""
import shutil

import pytest
import torch
import transformers as tf

from tests.model.deepseek_vl.test_deepseek_vl import HIGH, LOW, TEXT, batch
from trimodal.model.deepseek_vl.modeling import DeepSeekVLConfig, DeepSeekVLForCausalLM

SIGLIP_TEXT = {"vocab_size": 40, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
               "num_attention_heads": 2}
SIGLIP = {  # kind -> (a tiny model of that class, its vision tower)
    "siglip": (lambda: tf.SiglipModel(tf.SiglipConfig(vision_config=LOW, text_config=SIGLIP_TEXT)),
               lambda m: m.vision_model),
    "siglip_vision_model": (lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(**LOW)), lambda m: m),
}
SAM = {  # kind -> (a tiny model of that class, its encoder)
    "sam": (lambda: tf.SamModel(tf.SamConfig(vision_config=HIGH)), lambda m: m.vision_encoder),
    "sam_vision_model": (lambda: tf.SamVisionModel(tf.SamVisionConfig(**HIGH)), lambda m: m.vision_encoder),
}


def saved(folder, model: tf.PreTrainedModel, dtype=torch.float32) -> tf.PreTrainedModel:
    """The model with weights no fresh init gives (N(0, 0.02) everywhere), saved to `folder` in `dtype`."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.02)
    model.to(dtype).save_pretrained(folder)
    return model


def config(**paths) -> DeepSeekVLConfig:
    return DeepSeekVLConfig(low_vision=LOW, high_vision=HIGH, high_channels=(24, 48), text=TEXT, **paths)


def assert_same_weights(part: torch.nn.Module, reference: torch.nn.Module):
    state, expected = part.state_dict(), reference.state_dict()
    compared = [name for name in state if name in expected]
    assert len(compared) > 10 and all(state[name].dtype == torch.float32 for name in compared)
    for name in compared:
        assert torch.equal(state[name], expected[name].float()), name


@pytest.fixture
def folders(tmp_path):
    """{part: folder} of a tiny SigLIP, SAM (a full SamModel) and Llama."""
    factories = {"low": SIGLIP["siglip_vision_model"][0], "high": SAM["sam"][0],
                 "text": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**TEXT))}
    for part, factory in factories.items():
        saved(tmp_path / part, factory())
    return {part: str(tmp_path / part) for part in factories}


@pytest.mark.parametrize(("siglip_kind", "sam_kind"), [("siglip_vision_model", "sam"), ("siglip", "sam_vision_model")])
def test_every_pretrained_part_holds_its_folders_weights_and_learns(siglip_kind, sam_kind, tmp_path):
    low = saved(tmp_path / "low", SIGLIP[siglip_kind][0]())
    high = saved(tmp_path / "high", SAM[sam_kind][0]())
    text = saved(tmp_path / "text", tf.LlamaForCausalLM(tf.LlamaConfig(**TEXT)))
    torch.manual_seed(1)
    model = DeepSeekVLForCausalLM(config(low_vision_pretrained=str(tmp_path / "low"),
                                         high_vision_pretrained=str(tmp_path / "high"),
                                         text_pretrained=str(tmp_path / "text")))
    # post_init initialises the adaptor and the convolutions only: the folders' weights survive it
    assert_same_weights(model.vision.low, SIGLIP[siglip_kind][1](low))
    assert_same_weights(model.vision.high.encoder, SAM[sam_kind][1](high))
    assert_same_weights(model.language_model, text)
    ids, mask, images = batch()
    model(ids, mask, pixel_values=images, labels=ids).loss.backward()
    for part in (model.vision.low, model.vision.high.encoder, model.adaptor, model.language_model):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_a_bf16_checkpoint_is_loaded_in_fp32(tmp_path):
    text = saved(tmp_path / "text", tf.LlamaForCausalLM(tf.LlamaConfig(**TEXT)), dtype=torch.bfloat16)
    model = DeepSeekVLForCausalLM(config(text_pretrained=str(tmp_path / "text")))
    assert_same_weights(model.language_model, text)  # the bf16 values, held in fp32 as the rest of the model


@pytest.mark.parametrize(("field", "sizes", "named"), [
    ("low_vision_pretrained", {"low_vision": {**LOW, "image_size": 64, "patch_size": 16}},
     r"\['image_size', 'patch_size'\]: image_size: config 64, folder 32, patch_size: config 16, folder 8"),
    ("high_vision_pretrained", {"high_vision": {**HIGH, "global_attn_indexes": [0]}},
     r"\['global_attn_indexes'\]: global_attn_indexes: config \[0\], folder \[1\]"),
    ("text_pretrained", {"text": {**TEXT, "intermediate_size": 96}},
     r"\['intermediate_size'\]: intermediate_size: config 96, folder 128"),
    ("text_pretrained", {"text": {**TEXT, "vocab_size": 120}}, r"\['vocab_size'\].*use the checkpoint's tokenizer"),
])
def test_a_folder_of_other_sizes_is_refused_naming_the_keys(folders, field, sizes, named):
    part = {"low_vision_pretrained": "low", "high_vision_pretrained": "high", "text_pretrained": "text"}[field]
    settings = {"low_vision": LOW, "high_vision": HIGH, "high_channels": (24, 48), "text": TEXT, **sizes}
    with pytest.raises(ValueError, match=f"{field}=.*{part}'? does not match the model config on {named}"):
        DeepSeekVLForCausalLM(DeepSeekVLConfig(**settings, **{field: folders[part]}))


def test_a_folder_of_another_model_type_is_refused(folders):
    with pytest.raises(ValueError, match=r"low_vision_pretrained=.*model_type 'llama' is not supported.*'siglip'"):
        DeepSeekVLForCausalLM(config(low_vision_pretrained=folders["text"]))


def test_a_model_with_pretrained_parts_saves_and_reloads(folders, tmp_path):
    model = DeepSeekVLForCausalLM(config(low_vision_pretrained=folders["low"], high_vision_pretrained=folders["high"],
                                         text_pretrained=folders["text"])).eval()
    model.save_pretrained(tmp_path / "vl")
    # the saved model holds the parts' weights: it loads without the part folders, and does not read them again
    for folder in folders.values():
        shutil.rmtree(folder)
    loaded = DeepSeekVLForCausalLM.from_pretrained(tmp_path / "vl").eval()
    assert loaded.config.text_pretrained is None
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_the_recipe_freezes_pretrained_towers_and_trains_random_ones(folders, tmp_path):
    """The paper freezes towers that arrive pretrained; one that starts random must train to see anything."""
    random = DeepSeekVLForCausalLM(config())
    assert random.config.pretrained_parts == []
    assert random.frozen_for_recipe(["vision", "language_model"]) == ["language_model"]
    assert random.frozen_for_recipe(["vision.high"]) == []

    model = DeepSeekVLForCausalLM(config(high_vision_pretrained=folders["high"], text_pretrained=folders["text"]))
    assert model.config.pretrained_parts == ["high_vision", "text"]
    assert model.frozen_for_recipe(["vision", "language_model"]) == ["vision.high", "language_model"]
    assert model.frozen_for_recipe(["vision.high"]) == ["vision.high"]
    model.save_pretrained(tmp_path / "vl")  # a later stage loads the saved model: the folders are forgotten
    loaded = DeepSeekVLForCausalLM.from_pretrained(tmp_path / "vl")
    assert loaded.config.high_vision_pretrained is None and loaded.config.pretrained_parts == ["high_vision", "text"]
    assert loaded.frozen_for_recipe(["vision"]) == ["vision.high"]
