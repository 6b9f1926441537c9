"""Prompts and responses for the trimodal family (trimodal/alignment/responses.py): the encoder fuses the record's own
inputs, the decoder reads the chat prompt as its prefix; a response's log-probability is summed over its tokens
and </s> only, and the greedy response continues the prompt."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from tests.shard_fixtures import sharded
from trimodal.alignment.responses import logprobs, media_of, prompted, respond
from trimodal.data.batches import model_inputs
from trimodal.data.loader import make_loader
from trimodal.model.trimodal.configuration import TrimodalConfig
from trimodal.model.trimodal.modeling import TrimodalForConditionalGeneration


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    data = sharded(tmp_path_factory.mktemp("responses"))
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    batch = next(iter(make_loader(str(data / "shards"), "train", 6)))
    torch.manual_seed(0)
    model = TrimodalForConditionalGeneration(TrimodalConfig.from_preset(
        "tiny", vocab_size=len(tokenizer), image_size=batch["image"].shape[-1], n_mels=batch["mel"].shape[1],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)).eval()
    return model, tokenizer, batch


def test_the_encoder_reads_the_record_and_the_decoder_the_prompt(setting):
    model, tokenizer, batch = setting
    rows, contents = [0, 2], ["Describe it.", "Name it."]
    with torch.no_grad():
        asked = prompted(model, tokenizer, batch, media_of(model, batch), rows, contents)
        own = model.encoder(**{k: v[rows] for k, v in model_inputs(batch).items()})
    # the same fused R as the record's inputs give, whatever the instruction
    torch.testing.assert_close(asked.encoded.last_hidden_state, own.last_hidden_state, rtol=1e-5, atol=1e-6)
    for prompt, content in zip(asked.prompts, contents, strict=True):
        text = tokenizer.decode(prompt)
        assert prompt[0] == tokenizer.bos_token_id and content in text and text.rstrip().endswith("Assistant:")
    long = prompted(model, tokenizer, batch, media_of(model, batch), [0], [" ".join(["Describe it."] * 40)])
    assert len(long.prompts[0]) == model.config.max_decoder_positions - 16  # room left for the response
    assert tokenizer.decode(long.prompts[0]).rstrip().endswith("Describe it.\n\nAssistant:")


def test_a_responses_log_probability_sums_its_tokens_after_the_prompt(setting):
    model, tokenizer, batch = setting
    rows, responses = [0, 1], ["a red circle", "yes"]
    with torch.no_grad():
        asked = prompted(model, tokenizer, batch, media_of(model, batch), rows, ["Describe it.", "Is it red?"])
        total, tokens = logprobs(model, tokenizer, asked, responses)
        for i, response in enumerate(responses):
            target = tokenizer(response)["input_ids"][1:]  # its tokens and </s>
            ids = torch.tensor([asked.prompts[i] + target[:-1]])
            one = type(asked.encoded)(**{k: v[i:i + 1] if torch.is_tensor(v) else v for k, v in asked.encoded.items()
                                         if k in ("last_hidden_state", "attention_mask")})
            logits = model(encoder_outputs=one, decoder_input_ids=ids).logits[0]
            at = torch.arange(len(asked.prompts[i]) - 1, ids.shape[1])
            expected = F.log_softmax(logits[at], -1)[torch.arange(len(target)), torch.tensor(target)].sum()
            torch.testing.assert_close(total[i], expected, rtol=1e-5, atol=1e-5)
            assert tokens[i] == len(target)


def test_the_greedy_response_is_the_likeliest_continuation_of_the_prompt(setting):
    model, tokenizer, batch = setting
    with torch.no_grad():
        asked = prompted(model, tokenizer, batch, media_of(model, batch), [3], ["Describe it."])
        [reply] = respond(model, tokenizer, asked, 5)
        ids = torch.tensor([asked.prompts[0]])
        for _ in range(5):
            token = model(encoder_outputs=asked.encoded, decoder_input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, token[None, None]], 1)
            if token == tokenizer.eos_token_id:
                break
    assert reply == tokenizer.decode(ids[0, len(asked.prompts[0]):], skip_special_tokens=True).strip()


def test_a_long_prompt_gives_way_to_a_long_response_within_the_decoders_positions(setting):
    model, tokenizer, batch = setting
    long = " ".join(["Describe it."] * 40)
    response = " ".join(["red"] * 30)  # longer than the room prompted() leaves
    with torch.no_grad():
        asked = prompted(model, tokenizer, batch, media_of(model, batch), [0], [long])
        total, tokens = logprobs(model, tokenizer, asked, [response])
    assert torch.isfinite(total).all() and tokens[0] == len(tokenizer(response)["input_ids"]) - 1
