from collections import Counter

from torch import nn

from trimodal.model.blocks import blocks, stacks
from trimodal.model.sizes import meta_model


def test_layers_of_a_list_share_a_stack_and_fusion_pairs_stand_alone():
    model = meta_model("tiny")
    depth = Counter(stack for stack, _ in stacks(model))
    assert depth["encoder.vision.blocks"] == len(model.encoder.vision.blocks)
    assert depth["decoder.blocks"] == len(model.decoder.blocks)
    pairs = [name for name in depth if name.startswith("encoder.fusion.pairs.")]
    assert len(pairs) == len(model.encoder.fusion.pairs) and all(depth[p] == 1 for p in pairs)


def test_blocks_are_the_classes_the_model_names_and_nothing_else():
    for preset in ("tiny", "deepseek_vl"):
        model = meta_model(preset)
        found = blocks(model)
        assert found and {type(m).__name__ for m in found} <= set(model._no_split_modules)
        named = [m for m in model.modules() if type(m).__name__ in model._no_split_modules]
        assert found == named


def test_a_module_without_no_split_modules_has_no_blocks():
    assert blocks(nn.Sequential(nn.Linear(2, 2))) == []
