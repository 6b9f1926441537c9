"""The DeepSeek-VL presets through model/families.py: the family they name, the data's vocabulary over the preset's,
and the trimodal config refusing them."""
import pytest
import yaml

from trimodal.model.deepseek_vl.modeling import DeepSeekVLConfig, DeepSeekVLForCausalLM
from trimodal.model.families import DEEPSEEK_VL, build_config, family_of, model_class, read_preset
from trimodal.model.trimodal.configuration import PRESETS_DIR, TrimodalConfig

FAMILY_PRESETS = ["deepseek_vl", "deepseek_vl_1.3b", "deepseek_vl_7b"]


@pytest.mark.parametrize("name", FAMILY_PRESETS)
def test_family_presets_share_the_demo_presets_layout(name):
    """Same Hydra header and recipe overrides as conf/model/deepseek_vl.yaml, so `model=<name>` swaps sizes only."""
    text = (PRESETS_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    demo = yaml.safe_load((PRESETS_DIR / "deepseek_vl.yaml").read_text())
    assert yaml.safe_load(text)["defaults"] == demo["defaults"]
    assert family_of(read_preset(name)) == DEEPSEEK_VL


@pytest.mark.parametrize("name", ["deepseek_vl_1.3b", "deepseek_vl_7b"])
def test_the_tokenizers_vocabulary_and_ids_override_the_presets(name):
    config = build_config(read_preset(name), vocab_size=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    assert isinstance(config, DeepSeekVLConfig) and model_class(config) is DeepSeekVLForCausalLM
    assert config.text["vocab_size"] == 1024 and config.pad_token_id == 0
    assert read_preset(name)["text"]["vocab_size"] == 102400  # the preset itself keeps DeepSeek LLM's
    assert config.low_vision_pretrained is config.high_vision_pretrained is config.text_pretrained is None


@pytest.mark.parametrize("name", FAMILY_PRESETS)
def test_the_trimodal_config_refuses_family_presets(name):
    with pytest.raises(ValueError, match=f"{name!r} is of the deepseek_vl family, not trimodal"):
        TrimodalConfig.from_preset(name)
