import pytest
import torch

from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration

SUBSETS = [("image",), ("text",), ("audio",), ("image", "text"), ("image", "audio"), ("text", "audio"),
           ("image", "text", "audio")]


def tiny_config(**overrides) -> TrimodalConfig:
    return TrimodalConfig.from_preset("tiny", **{"vocab_size": 40, "image_size": 32, "n_mels": 16, "num_classes": 3,
                                                 **overrides})


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return TrimodalForConditionalGeneration(tiny_config()).eval()


def make_inputs(subsets, text_len=6, frames=48, seed=0):
    """A batch where sample i has modalities subsets[i]; absent ones are zero/padding."""
    g = torch.Generator().manual_seed(seed)
    b = len(subsets)
    text_mask = torch.zeros(b, text_len, dtype=torch.bool)
    text_ids = torch.zeros(b, text_len, dtype=torch.long)
    mel_lengths = torch.zeros(b, dtype=torch.long)
    for i, subset in enumerate(subsets):
        if "text" in subset:
            n = text_len - i % 3
            text_ids[i, :n] = torch.randint(5, 40, (n,), generator=g)
            text_mask[i, :n] = True
        if "audio" in subset:
            mel_lengths[i] = frames - 4 * (i % 3)
    mel = torch.randn(b, 16, frames, generator=g) * (torch.arange(frames)[None, None] < mel_lengths[:, None, None])
    return {
        "pixel_values": torch.rand(b, 3, 32, 32, generator=g),
        "image_present": torch.tensor(["image" in s for s in subsets]),
        "input_features": mel, "mel_lengths": mel_lengths, "text_ids": text_ids, "text_mask": text_mask,
    }
