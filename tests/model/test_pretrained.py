"""Encoders initialised from tiny random transformers checkpoints saved locally (no hub access)."""
import pytest
import torch
import transformers as tf

from model.modeling import TrimodalForConditionalGeneration
from model.pretrained import build_encoders
from tests.model.conftest import make_inputs, tiny_config

VISION = {
    "vit": lambda: tf.ViTModel(tf.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=64, image_size=32, patch_size=8),
                               add_pooling_layer=False),
    "clip": lambda: tf.CLIPVisionModel(tf.CLIPVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                           intermediate_size=64, image_size=32, patch_size=8)),
    "siglip": lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(hidden_size=32, num_hidden_layers=1,
                                                                 num_attention_heads=2, intermediate_size=64,
                                                                 image_size=32, patch_size=8)),
}
TEXT = {
    "roberta": lambda: tf.RobertaModel(tf.RobertaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1,
                                                        num_attention_heads=2, intermediate_size=64,
                                                        max_position_embeddings=40, pad_token_id=1),
                                       add_pooling_layer=False),
    "bert": lambda: tf.BertModel(tf.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=64,
                                               max_position_embeddings=40), add_pooling_layer=False),
}
AUDIO = {
    "whisper": lambda: tf.WhisperModel(tf.WhisperConfig(vocab_size=40, num_mel_bins=16, d_model=32, encoder_layers=1,
                                                        decoder_layers=1, encoder_attention_heads=2,
                                                        decoder_attention_heads=2, encoder_ffn_dim=64,
                                                        decoder_ffn_dim=64, max_source_positions=32,
                                                        max_target_positions=16, pad_token_id=0, bos_token_id=1,
                                                        eos_token_id=2, decoder_start_token_id=1)),
    "wav2vec2": lambda: tf.Wav2Vec2Model(tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                           intermediate_size=64, conv_dim=(16, 16),
                                                           conv_stride=(5, 2), conv_kernel=(10, 3),
                                                           num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)),
}


def saved(tmp_path, name, factory):
    torch.manual_seed(0)
    model = factory()
    model.save_pretrained(tmp_path / name)
    return str(tmp_path / name), model


def first_weight(module):
    return next(p for n, p in module.named_parameters() if n.endswith("weight") and p.ndim == 2)


@pytest.mark.parametrize("kind", sorted(VISION))
def test_vision_checkpoint(kind, tmp_path):
    path, reference = saved(tmp_path, kind, VISION[kind])
    vision, _, _ = build_encoders(tiny_config(vision_pretrained=path))
    pixels = torch.rand(2, 3, 32, 32)
    out = vision(pixels)
    assert out.shape == (2, 16, 64)
    assert torch.equal(first_weight(vision.model), first_weight(reference))
    masked = vision(pixels, patch_mask=torch.zeros(2, 16, dtype=torch.bool).index_fill_(1, torch.tensor([3]), True))
    assert not torch.allclose(masked, out)
    out.sum().backward()
    assert vision.out_proj.weight.grad is not None


@pytest.mark.parametrize("kind", sorted(TEXT))
def test_text_checkpoint(kind, tmp_path):
    path, reference = saved(tmp_path, kind, TEXT[kind])
    _, text, _ = build_encoders(tiny_config(text_pretrained=path))
    ids, mask = torch.randint(5, 40, (2, 7)), torch.ones(2, 7, dtype=torch.bool)
    assert text(ids, mask).shape == (2, 7, 64)
    assert torch.equal(first_weight(text.model), first_weight(reference))


@pytest.mark.parametrize("kind", sorted(AUDIO))
def test_audio_checkpoint(kind, tmp_path):
    path, reference = saved(tmp_path, kind, AUDIO[kind])
    _, _, audio = build_encoders(tiny_config(audio_pretrained=path))
    inputs = make_inputs([("audio",), ("audio",), ("audio",)], frames=48)
    hidden, mask = audio(inputs["input_features"], inputs["mel_lengths"])
    assert hidden.shape == (3, 12, 64) and mask.sum(1).tolist() == [12, 11, 10]
    assert torch.isfinite(hidden).all()
    assert torch.equal(first_weight(audio.model), first_weight(reference.get_encoder() if kind == "whisper"
                                                                 else reference))


def test_whole_model_keeps_pretrained_weights_after_init(tmp_path):
    path, reference = saved(tmp_path, "vit", VISION["vit"])
    model = TrimodalForConditionalGeneration(tiny_config(vision_pretrained=path))
    assert torch.equal(first_weight(model.encoder.vision.model), first_weight(reference))
    out = model(**make_inputs([("image", "text")] * 2), decoder_input_ids=torch.ones(2, 3, dtype=torch.long))
    assert out.logits.shape == (2, 3, 40)
    model.save_pretrained(tmp_path / "trimodal")
    loaded = TrimodalForConditionalGeneration.from_pretrained(tmp_path / "trimodal")
    assert torch.equal(first_weight(loaded.encoder.vision.model), first_weight(reference))


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no transformers checkpoint"):
        build_encoders(tiny_config(vision_pretrained=str(tmp_path / "missing")))
    path, _ = saved(tmp_path, "bert", TEXT["bert"])
    with pytest.raises(ValueError, match="model_type 'bert' is not supported"):
        build_encoders(tiny_config(vision_pretrained=path))
    with pytest.raises(ValueError, match="tokenizer"):
        build_encoders(tiny_config(text_pretrained=path, vocab_size=41))
