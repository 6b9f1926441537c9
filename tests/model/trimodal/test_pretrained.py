"""Encoders initialised from tiny random transformers checkpoints saved into tmp_path (no hub access)."""
import json

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.image_utils import OPENAI_CLIP_MEAN

from tests.model.conftest import make_inputs, tiny_config
from trimodal.model.trimodal.audio import AudioEncoder, frame_mask, subsampled_lengths
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration
from trimodal.model.trimodal.pretrained import build_encoders
from trimodal.model.trimodal.text import TextEncoder
from trimodal.model.trimodal.vision import VisionEncoder

VISION_CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=8)
TEXT_CFG = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CLIP_TEXT_CFG = {**TEXT_CFG, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
WHISPER_CFG = dict(vocab_size=40, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=1,
                   encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                   max_source_positions=32, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                   decoder_start_token_id=1)
WAV2VEC2_CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
                    conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                    num_conv_pos_embedding_groups=2)

# kind -> (tiny model, its vision tower)
VISION = {
    "vit": (lambda: tf.ViTModel(tf.ViTConfig(**VISION_CFG)), lambda m: m),
    "clip_vision_model": (lambda: tf.CLIPVisionModel(tf.CLIPVisionConfig(**VISION_CFG)), lambda m: m),
    "clip": (lambda: tf.CLIPModel(tf.CLIPConfig(vision_config=VISION_CFG, text_config=CLIP_TEXT_CFG)),
             lambda m: m.vision_model),
    "siglip_vision_model": (lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(**VISION_CFG)), lambda m: m),
    "siglip": (lambda: tf.SiglipModel(tf.SiglipConfig(vision_config=VISION_CFG, text_config=CLIP_TEXT_CFG)),
               lambda m: m.vision_model),
}
TEXT = {
    "roberta": lambda: tf.RobertaModel(tf.RobertaConfig(**TEXT_CFG, max_position_embeddings=40, pad_token_id=1)),
    "bert": lambda: tf.BertModel(tf.BertConfig(**TEXT_CFG, max_position_embeddings=40)),
}
AUDIO = {
    "whisper": lambda: tf.WhisperModel(tf.WhisperConfig(**WHISPER_CFG)),
    "wav2vec2": lambda: tf.Wav2Vec2Model(tf.Wav2Vec2Config(**WAV2VEC2_CFG)),
}
FIELDS = {"vision": "vision_pretrained", "text": "text_pretrained", "audio": "audio_pretrained"}


def saved(tmp_path, name, factory) -> tuple[str, nn.Module]:
    """(folder, the model saved there)."""
    torch.manual_seed(0)
    model = factory()
    model.save_pretrained(tmp_path / name)
    return str(tmp_path / name), model


def build(modality: str, path: str, **overrides):
    torch.manual_seed(1)
    vision, text, audio = build_encoders(tiny_config(**{FIELDS[modality]: path}, **overrides))
    return {"vision": vision, "text": text, "audio": audio}[modality]


def assert_same_weights(state: dict, reference: dict, new: tuple[str, ...] = ()):
    """Every tensor of the wrapped model (but the new ones) equals the saved model's."""
    compared = [name for name in state if not name.startswith(new)]
    assert len(compared) > 10
    for name in compared:
        assert torch.equal(state[name], reference[name]), name


def assert_in_file(path: str, tensor: torch.Tensor):
    """The tensor is stored in the folder's safetensors (transformers may rename keys when saving)."""
    stored = load_file(f"{path}/model.safetensors").values()
    assert any(t.shape == tensor.shape and torch.equal(t, tensor) for t in stored)


def one_hot_mask(batch: int, length: int, index: int) -> torch.Tensor:
    return torch.zeros(batch, length, dtype=torch.bool).index_fill_(1, torch.tensor([index]), True)


@pytest.mark.parametrize("kind", sorted(VISION))
def test_vision_checkpoint(kind, tmp_path):
    factory, tower = VISION[kind]
    path, reference = saved(tmp_path, kind, factory)
    vision = build("vision", path)
    assert_same_weights(vision.model.state_dict(), tower(reference).state_dict(), new=("embeddings.mask_token",))
    assert_in_file(path, next(vision.model.get_input_embeddings().parameters()))
    pixels = torch.rand(2, 3, 32, 32)
    out = vision(pixels)
    assert out.shape == (2, 16, 64)
    assert torch.allclose(vision(pixels, torch.zeros(2, 16, dtype=torch.bool)), out)
    patch_mask = one_hot_mask(2, 16, 3)
    masked = vision(pixels, patch_mask)
    assert not torch.allclose(masked, out)
    masked.sum().backward()
    assert vision.out_proj.weight.grad.abs().sum() > 0
    mask_embedding = vision.model.embeddings.mask_token if kind == "vit" else vision.mask_embedding
    assert mask_embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["vit", "clip_vision_model", "siglip_vision_model"])
def test_vision_normalises_pixels_and_keeps_patches_only(kind, tmp_path):
    path, _ = saved(tmp_path, kind, VISION[kind][0])
    vision = build("vision", path).eval()
    pixels = torch.rand(2, 3, 32, 32)
    expected_mean = OPENAI_CLIP_MEAN if kind.startswith("clip") else [0.5] * 3
    assert torch.allclose(vision.pixel_mean.flatten(), torch.tensor(expected_mean))
    hidden = vision.model(pixel_values=(pixels - vision.pixel_mean) / vision.pixel_std).last_hidden_state
    assert hidden.shape[1] == (17 if kind != "siglip_vision_model" else 16)  # CLS + 16 patches, or patches
    assert torch.allclose(vision(pixels), vision.out_proj(hidden[:, -16:]), atol=1e-6)

    (tmp_path / kind / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3],
                                                                         "image_std": 0.25}))
    vision = build("vision", path)
    assert vision.pixel_mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert vision.pixel_std.flatten().tolist() == [0.25] * 3


def test_vision_image_size_must_match(tmp_path):
    path, _ = saved(tmp_path, "vit", VISION["vit"][0])
    with pytest.raises(ValueError, match="32px images in 8px patches"):
        build("vision", path, image_size=64)
    with pytest.raises(ValueError, match="32x32"):
        build("vision", path)(torch.rand(1, 3, 40, 40))


@pytest.mark.parametrize("kind", sorted(TEXT))
def test_text_checkpoint(kind, tmp_path):
    path, reference = saved(tmp_path, kind, TEXT[kind])
    text = build("text", path)
    assert_same_weights(text.model.state_dict(), reference.state_dict())
    assert_in_file(path, text.model.get_input_embeddings().weight)
    ids = torch.randint(5, 40, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2] = False  # a sample without text, as in a mixed batch
    out = text(ids, mask)
    assert out.shape == (3, 7, 64) and torch.isfinite(out).all()
    alone = text(ids[1:2, :4], mask[1:2, :4])
    assert torch.allclose(out[1, :4], alone[0], atol=1e-5)  # padding does not change the real tokens
    out.sum().backward()
    assert text.out_proj.weight.grad.abs().sum() > 0
    assert next(text.model.parameters()).grad is not None
    with pytest.raises(ValueError, match="positions"):
        text(torch.randint(5, 40, (1, 41)), torch.ones(1, 41, dtype=torch.bool))


@pytest.mark.parametrize("kind", sorted(AUDIO))
def test_audio_checkpoint(kind, tmp_path):
    path, reference = saved(tmp_path, kind, AUDIO[kind])
    audio = build("audio", path)
    if kind == "whisper":
        assert_same_weights(audio.model.state_dict(), reference.get_encoder().state_dict())
        assert_in_file(path, audio.model.conv1.weight)
    else:
        state = {n: t for n, t in audio.state_dict().items() if n.startswith(("feature_projection.", "encoder."))}
        assert_same_weights(state, reference.state_dict())
        assert_in_file(path, audio.feature_projection.projection.weight)
        assert torch.equal(audio.mask_embedding, reference.masked_spec_embed)
    inputs = make_inputs([("audio",), ("audio",), ("audio",), ("text",)], frames=45)
    mel, lengths = inputs["input_features"], inputs["mel_lengths"]
    hidden, mask = audio(mel, lengths)
    assert hidden.shape == (4, 12, 64) and torch.isfinite(hidden).all()
    assert torch.equal(mask, frame_mask(subsampled_lengths(lengths), 12))
    assert mask.sum(1).tolist() == [12, 11, 10, 0]
    alone, _ = audio(mel[1:2, :, :41], lengths[1:2])
    assert torch.allclose(hidden[1, :11], alone[0], atol=1e-5)  # padding does not change the real frames

    frames_out = one_hot_mask(4, 12, 5)
    masked, masked_mask = audio(mel, lengths, frames_out)
    assert torch.equal(masked_mask, mask) and not torch.allclose(masked, hidden)
    masked.sum().backward()
    assert audio.out_proj.weight.grad.abs().sum() > 0 and audio.mask_embedding.grad.abs().sum() > 0


def test_audio_errors(tmp_path):
    path, _ = saved(tmp_path, "whisper", AUDIO["whisper"])
    with pytest.raises(ValueError, match="16 mel bins; config.n_mels=64"):
        build("audio", path, n_mels=64)
    with pytest.raises(ValueError, match="> the 64 Whisper takes"):
        build("audio", path)(torch.randn(1, 16, 65), torch.tensor([65]))


def test_clear_errors(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"vision_pretrained=.*missing.*no config.json.*'clip', 'clip_vision_model'"):
        build("vision", missing)
    bert, _ = saved(tmp_path, "bert", TEXT["bert"])
    with pytest.raises(ValueError, match=r"vision_pretrained=.*bert.*model_type 'bert' is not supported.*'vit'"):
        build("vision", bert)
    with pytest.raises(ValueError, match=r"audio_pretrained=.*model_type 'bert'.*\['wav2vec2', 'whisper'\]"):
        build("audio", bert)
    with pytest.raises(ValueError, match="40-token embedding table.*tokenizer.*vocab_size=41"):
        build("text", bert, vocab_size=41)
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "config.json").write_text(json.dumps({"model_type": "not_a_model"}))
    with pytest.raises(ValueError, match="model_type 'not_a_model' is not supported"):
        build("text", str(tmp_path / "custom"))
    (tmp_path / "bert" / "model.safetensors").rename(tmp_path / "bert" / "weights.bin")
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        build("text", bert)
    vit, _ = saved(tmp_path, "vit", VISION["vit"][0])
    weights = load_file(f"{vit}/model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("layernorm.")}, f"{vit}/model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"does not hold the weights of ViTModel: missing \['layernorm.bias'"):
        build("vision", vit)  # never a silent random init


def test_unset_fields_give_our_encoders():
    vision, text, audio = build_encoders(tiny_config())
    assert (type(vision), type(text), type(audio)) == (VisionEncoder, TextEncoder, AudioEncoder)


def test_whole_model_with_pretrained_encoders(tmp_path):
    (vit, vit_ref), (roberta, roberta_ref), (whisper, whisper_ref) = (
        saved(tmp_path, "vit", VISION["vit"][0]), saved(tmp_path, "roberta", TEXT["roberta"]),
        saved(tmp_path, "whisper", AUDIO["whisper"]))
    model = TrimodalForConditionalGeneration(tiny_config(vision_pretrained=vit, text_pretrained=roberta,
                                                         audio_pretrained=whisper))
    encoder = model.encoder
    # post_init initialises our own modules only: the checkpoints' weights survive it
    assert_same_weights(encoder.vision.model.state_dict(), vit_ref.state_dict(), new=("embeddings.mask_token",))
    assert_same_weights(encoder.text.model.state_dict(), roberta_ref.state_dict())
    assert_same_weights(encoder.audio.model.state_dict(), whisper_ref.get_encoder().state_dict())
    inputs = make_inputs([("image", "text"), ("audio",), ("image", "text", "audio")])
    out = model(**inputs, decoder_input_ids=torch.ones(3, 3, dtype=torch.long))
    assert out.logits.shape == (3, 3, 40) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    assert all(m.out_proj.weight.grad is not None for m in (encoder.vision, encoder.text, encoder.audio))

    model.save_pretrained(tmp_path / "trimodal")
    loaded = TrimodalForConditionalGeneration.from_pretrained(tmp_path / "trimodal").eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs, decoder_input_ids=torch.ones(3, 3, dtype=torch.long)).logits,
                              model(**inputs, decoder_input_ids=torch.ones(3, 3, dtype=torch.long)).logits)
