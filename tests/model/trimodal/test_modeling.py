import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from tests.model.conftest import SUBSETS, make_inputs, tiny_config
from trimodal.model.sizes import parameter_counts
from trimodal.model.trimodal.fusion import GatedCrossAttention, Stream
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration


@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s))
def test_shapes_for_every_modality_subset(tiny_model, subset):
    inputs = make_inputs([subset] * 2)
    if "image" not in subset:
        inputs.pop("pixel_values")
    if "audio" not in subset:
        inputs.pop("input_features")
    if "text" not in subset:
        inputs.pop("text_ids")
    out = tiny_model(**inputs, decoder_input_ids=torch.ones(2, 5, dtype=torch.long))
    lengths = {"image": 16, "text": 6, "audio": 12}  # 32/8 squared patches, 6 tokens, 48/4 frames
    assert out.encoder_last_hidden_state.shape == (2, sum(lengths[m] for m in subset), 64)
    assert out.logits.shape == (2, 5, 40) and out.class_logits.shape == (2, 3)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.class_logits).all()


def test_one_batch_mixes_all_seven_subsets(tiny_model):
    out = tiny_model(**make_inputs(SUBSETS), decoder_input_ids=torch.ones(7, 4, dtype=torch.long))
    assert out.logits.shape == (7, 4, 40) and torch.isfinite(out.logits).all()
    present = out.encoder_attention_mask.sum(dim=1)
    # sample i: 16 patches; 6 - i % 3 tokens; (48 - 4 * (i % 3)) / 4 audio frames after subsampling
    expected = [sum({"image": 16, "text": 6 - i % 3, "audio": (48 - 4 * (i % 3)) // 4}[m] for m in subset)
                for i, subset in enumerate(SUBSETS)]
    assert present.tolist() == expected == [16, 5, 10, 22, 27, 14, 34]


def test_encoders_and_fusion_pairs_run_on_the_samples_holding_their_inputs_only(tiny_model):
    """A mixed batch gives every sample what it gets alone, while each encoder sees only the samples that have
    its modality and each cross-attention pair only those that have both."""
    inputs = make_inputs(SUBSETS)
    dec = torch.tensor([[1, 7, 9, 11]] * len(SUBSETS))
    seen: dict[str, list[int]] = {}
    modules = {"image": tiny_model.encoder.vision, "text": tiny_model.encoder.text, "audio": tiny_model.encoder.audio,
               **dict(tiny_model.encoder.fusion.pairs.items())}
    handles = [m.register_forward_hook(lambda m, args, out, name=name: seen.setdefault(name, []).append(
        len(args[0]))) for name, m in modules.items()]
    try:
        with torch.no_grad():
            batched = tiny_model(**inputs, decoder_input_ids=dec)
    finally:
        for h in handles:
            h.remove()
    assert seen["image"] == seen["text"] == seen["audio"] == [4]  # 4 of the 7 subsets hold each modality
    assert all(seen[f"{s}_to_{t}"] == [2] for s in ("image", "text", "audio") for t in ("image", "text", "audio")
               if s != t)  # two subsets hold each pair: the pair itself and all three
    keys = {"image": ("pixel_values", "image_present"), "audio": ("input_features", "mel_lengths"),
            "text": ("text_ids", "text_mask")}
    for i, subset in enumerate(SUBSETS):
        alone = {k: inputs[k][i: i + 1] for m in subset for k in keys[m]}
        with torch.no_grad():
            single = tiny_model(**alone, decoder_input_ids=dec[:1])
        torch.testing.assert_close(batched.logits[i], single.logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.class_logits[i], single.class_logits[0], atol=1e-5, rtol=1e-5)


def test_sample_without_any_input_is_an_error(tiny_model):
    inputs = make_inputs([("text",), ("audio",)])
    inputs["text_mask"][0] = False
    with pytest.raises(ValueError, match=r"samples \[0\] have no input"):
        tiny_model(**inputs)


def encode_alone_and_batched(model):
    """The same sample alone (no padding) and in a batch beside a longer sample and an absent-modality one."""
    alone = make_inputs([("image", "text", "audio")], text_len=4, frames=32, seed=1)
    batch = make_inputs([("image", "text", "audio")] * 3, text_len=9, frames=60, seed=2)
    batch["pixel_values"][0] = alone["pixel_values"][0]
    batch["text_ids"][0] = 0
    batch["text_mask"][0] = False
    batch["text_ids"][0, :4] = alone["text_ids"][0, :4]
    batch["text_mask"][0, :4] = True
    batch["input_features"][0] = 0
    batch["input_features"][0, :, :32] = alone["input_features"][0, :, :32]
    batch["mel_lengths"][0] = 32
    batch["image_present"][2] = False
    return alone, batch


def test_padding_does_not_change_real_positions(tiny_model):
    alone, batch = encode_alone_and_batched(tiny_model)
    dec = torch.tensor([[1, 7, 9, 11]])
    a = tiny_model(**alone, decoder_input_ids=dec)
    b = tiny_model(**batch, decoder_input_ids=dec.expand(3, -1))
    enc_a = tiny_model.encoder(**alone)
    enc_b = tiny_model.encoder(**batch)
    for m, n_real in (("image", 16), ("text", 4), ("audio", 8)):
        ra = enc_a.last_hidden_state[0, enc_a.segments[m]][:n_real]
        rb = enc_b.last_hidden_state[0, enc_b.segments[m]][:n_real]
        torch.testing.assert_close(ra, rb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.logits[0], b.logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.class_logits[0], b.class_logits[0], atol=1e-5, rtol=1e-5)


def test_gate_at_zero_returns_target_exactly():
    torch.manual_seed(0)
    gca = GatedCrossAttention(16, 4, gate_bias_init=-2.0)
    target, source = torch.randn(2, 5, 16), Stream(torch.randn(2, 7, 16), torch.ones(2, 7, dtype=torch.bool))
    with torch.no_grad():
        gca.gate.weight.zero_()
        gca.gate.bias.fill_(-float("inf"))  # sigmoid(-inf) = 0
    assert torch.equal(gca(target, source), target)
    with torch.no_grad():
        gca.gate.bias.fill_(1.0)
    assert not torch.equal(gca(target, source), target)
    absent = Stream(source.hidden, torch.zeros(2, 7, dtype=torch.bool))  # the sample lacks the source modality
    assert torch.equal(gca(target, absent), target)


@pytest.mark.parametrize("bias", [-2.0, 0.0])
def test_a_new_model_starts_every_gate_at_the_configured_opening(bias):
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(tiny_config(gate_bias_init=bias))
    gates = [pair.gate for pair in model.encoder.fusion.pairs.values()]
    assert len(gates) == 6
    for gate in gates:  # transformers' init visits the gate's Linear too: it must not redraw it
        assert torch.equal(gate.weight, torch.zeros_like(gate.weight))
        assert torch.equal(gate.bias, torch.full_like(gate.bias, bias))
    assert model.encoder.fusion.pairs["text_to_image"].project.weight.std() > 0.01  # other Linears drawn as usual


def test_gate_follows_the_seed_equation():
    torch.manual_seed(0)
    gca = GatedCrossAttention(8, 2, gate_bias_init=0.0)
    target, source = torch.randn(1, 3, 8), Stream(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool))
    ca = gca.cross_attn(target, source.hidden, key_mask=source.mask)
    g = torch.sigmoid(gca.gate(torch.cat([target, ca], -1)))
    torch.testing.assert_close(gca(target, source), (1 - g) * target + g * gca.project(ca))


def test_seeded_construction_and_forward_are_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = TrimodalForConditionalGeneration(tiny_config()).eval()
        outs.append((model.state_dict(), model(**make_inputs(SUBSETS), decoder_input_ids=torch.ones(7, 3,
                                                                                                   dtype=torch.long))))
    for k, v in outs[0][0].items():
        assert torch.equal(v, outs[1][0][k]), k
    assert torch.equal(outs[0][1].logits, outs[1][1].logits)


def test_save_and_load_round_trip_with_safetensors_and_auto_classes(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    assert AutoConfig.from_pretrained(tmp_path).model_type == "trimodal"
    inputs, dec = make_inputs(SUBSETS), torch.ones(7, 3, dtype=torch.long)
    expected = tiny_model(**inputs, decoder_input_ids=dec).logits
    for cls in (TrimodalForConditionalGeneration, AutoModel, AutoModelForSeq2SeqLM):
        loaded = cls.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, TrimodalForConditionalGeneration)
        assert torch.equal(loaded(**inputs, decoder_input_ids=dec).logits, expected)
    assert loaded.decoder.lm_head.weight.data_ptr() == loaded.decoder.embed.weight.data_ptr()  # tied


def test_generate_greedy_equals_manual_loop(tiny_model):
    inputs = make_inputs(SUBSETS)
    generated = tiny_model.generate(**inputs, max_new_tokens=6, do_sample=False, num_beams=1, eos_token_id=None)
    enc = tiny_model.encoder(**inputs)
    seq = torch.full((7, 1), tiny_model.config.decoder_start_token_id)
    with torch.no_grad():
        for _ in range(6):
            logits = tiny_model(encoder_outputs=enc, decoder_input_ids=seq).logits[:, -1]
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, seq)


@pytest.mark.parametrize("beams", [1, 3])
def test_cached_and_uncached_generation_give_the_same_tokens(tiny_model, beams):
    inputs = make_inputs(SUBSETS)
    kwargs = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False, "num_beams": beams}
    cached = tiny_model.generate(**inputs, **kwargs)
    uncached = tiny_model.generate(**inputs, **kwargs, use_cache=False)
    assert cached.shape == (7, 11) and torch.equal(cached, uncached)


def test_cached_decoder_logits_match_the_full_prefix(tiny_model):
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    enc = tiny_model.encoder(**make_inputs(SUBSETS))
    seq = torch.randint(5, 40, (7, 5))
    with torch.no_grad():
        full = tiny_model(encoder_outputs=enc, decoder_input_ids=seq).logits
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        steps = [tiny_model(encoder_outputs=enc, decoder_input_ids=seq[:, t:t + 1], past_key_values=cache).logits
                 for t in range(5)]
    assert cache.get_seq_length() == 5
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_generate_beam_and_sampling_run_on_one_modality(tiny_model):
    inputs = make_inputs([("audio",)] * 2)
    beams = tiny_model.generate(input_features=inputs["input_features"], mel_lengths=inputs["mel_lengths"],
                                max_new_tokens=4, num_beams=3, eos_token_id=None)
    assert beams.shape == (2, 5)
    torch.manual_seed(0)
    sampled = tiny_model.generate(text_ids=make_inputs([("text",)])["text_ids"], max_new_tokens=4, do_sample=True,
                                  top_k=10, eos_token_id=None)
    assert sampled.shape == (1, 5) and sampled[0, 0] == tiny_model.config.decoder_start_token_id


def test_full_preset_sizes_on_meta_device():
    counts = parameter_counts("full")
    # ViT-L/14 ~304 M, RoBERTa-large encoder ~355 M, Conformer-L ~118 M (published sizes)
    assert 290e6 < counts["vision"] < 320e6
    assert 340e6 < counts["text"] < 370e6
    assert 100e6 < counts["audio"] < 130e6
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert parameter_counts("tiny")["total"] < 2e6


def test_our_vit_normalises_pixels_with_the_config_statistics():
    from trimodal.model.trimodal.vision import VisionEncoder

    torch.manual_seed(0)
    normalised = VisionEncoder(tiny_config(image_mean=[0.2, 0.4, 0.6], image_std=[0.5, 0.25, 0.1])).eval()
    plain = VisionEncoder(tiny_config(image_mean=[0.0] * 3, image_std=[1.0] * 3)).eval()
    plain.load_state_dict(normalised.state_dict())
    pixels = torch.rand(2, 3, 32, 32)
    expected = (pixels - torch.tensor([0.2, 0.4, 0.6])[:, None, None]) / torch.tensor([0.5, 0.25, 0.1])[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(normalised(pixels), plain(expected))
    with pytest.raises(ValueError, match="positive"):
        tiny_config(image_std=[1.0, 0.0, 1.0])


def test_conv_stem_gives_one_token_per_patch_and_hides_masked_patches():
    from trimodal.model.trimodal.vision import VisionEncoder, conv_stem

    torch.manual_seed(0)
    encoder = VisionEncoder(tiny_config(vision_stem="conv")).eval()
    assert [m.stride for m in encoder.stem if isinstance(m, torch.nn.Conv2d)] == [(2, 2)] * 3  # patch 8 = 2^3
    pixels = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 5] = True  # patch (row 1, column 1): pixels 8..15 x 8..15
    changed = pixels.clone()
    changed[:, :, 8:16, 8:16] = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert encoder(pixels).shape == (1, 16, 64)
        # what lies under a masked patch cannot reach any token
        torch.testing.assert_close(encoder(pixels, mask), encoder(changed, mask))
        assert not torch.allclose(encoder(pixels), encoder(changed))
    with pytest.raises(ValueError, match="power-of-two"):
        conv_stem(3, 64, 6)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    """Every block recomputes its activations in backward: nothing it computes may change."""
    inputs = make_inputs(SUBSETS)
    labels = torch.randint(5, 40, (len(SUBSETS), 5), generator=torch.Generator().manual_seed(1))
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = TrimodalForConditionalGeneration(tiny_config(dropout=0.1)).train()  # dropout: its RNG replayed too
        if checkpointing:
            model.activation_checkpointing_enable()
        torch.manual_seed(1)
        loss = model(**inputs, labels=labels, class_labels=torch.tensor([0, 1, 2, 0, 1, 2, 0])).loss
        loss.backward()
        results.append((loss, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (checkpointed, checkpointed_grads) = results
    assert sum(m.gradient_checkpointing for m in model.modules() if hasattr(m, "gradient_checkpointing")) >= 10
    assert torch.equal(plain, checkpointed)
    assert plain_grads.keys() == checkpointed_grads.keys()
    assert all(torch.allclose(plain_grads[n], checkpointed_grads[n], atol=1e-7) for n in plain_grads)
