"""`trimodal serve`, a real uvicorn process on 127.0.0.1, spoken to with the official `openai` client."""
from __future__ import annotations

import base64
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.hostile_server import hostile_server
from tests.trimodal.conftest import LIMIT_MB, png, wav

pytestmark = pytest.mark.slow  # trains the models it serves

QUESTION = {"type": "text", "text": "what color is it?"}


def data_url(data: bytes, kind: str = "image/png") -> dict:
    return {"type": "image_url", "image_url": {"url": f"data:{kind};base64,{base64.b64encode(data).decode()}"}}


def audio_part(data: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="not-checked", max_retries=0, timeout=120)


def ask(client, content: list[dict], model: str = "student-int8"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])


def test_models_and_health_list_what_is_served(client, server):
    assert sorted(m.id for m in client.models.list()) == ["student-int8", "teacher"]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and set(health["models"]) == {"student-int8", "teacher"}


@pytest.mark.parametrize("model", ["student-int8", "teacher"])
def test_an_image_question_is_answered(client, model):
    reply = ask(client, [data_url(png()), QUESTION], model)
    assert reply.object == "chat.completion" and reply.model == model
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content == "red"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens >= 1
    extra = reply.model_extra["trimodal"]
    assert extra["inputs"] == ["image"] and extra["answer"] == "red" and extra["caption"]
    assert [p["probability"] for p in extra["labels"]] == sorted((p["probability"] for p in extra["labels"]),
                                                                  reverse=True)


def test_an_audio_question_is_answered(client):
    reply = ask(client, [audio_part(wav()), QUESTION])
    assert reply.choices[0].message.content == "red" and reply.model_extra["trimodal"]["inputs"] == ["audio"]


def test_text_only_gives_the_caption_and_two_text_parts_a_question(client):
    caption = ask(client, [{"type": "text", "text": "there is a red circle 3"}])
    assert caption.model_extra["trimodal"]["answer"] is None
    assert caption.choices[0].message.content == caption.model_extra["trimodal"]["caption"]
    answer = ask(client, [{"type": "text", "text": "there is a red circle 3"}, QUESTION])
    assert answer.choices[0].message.content == "red" and answer.model_extra["trimodal"]["inputs"] == ["text"]


def test_bad_base64_is_a_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, [{"type": "input_audio", "input_audio": {"data": "not*base64!", "format": "wav"}}])
    assert e.value.status_code == 400 and e.value.body["code"] == "invalid_base64"
    assert e.value.body["param"] == "messages[0].content[0].input_audio.data"


def test_an_oversized_image_is_refused_with_the_limit(client, tmp_path):
    # 7000 x 7000 = 49 M pixels, over validate.max_pixels (40 M), in a small PNG: refused before decoding
    bomb = png((7000, 7000), 0, mode="1")
    assert len(bomb) < LIMIT_MB * 2**20 * 0.7
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, [data_url(bomb), QUESTION])
    assert "7000x7000 = 49000000 pixels > limit 40000000" in e.value.body["message"]
    # and one over the server's byte limit: 413 before the body is read
    with pytest.raises(openai.APIStatusError) as e:
        ask(client, [data_url(os.urandom(LIMIT_MB * 2**20 + 1)), QUESTION])
    assert e.value.status_code == 413 and "limit" in e.value.body["message"]


def test_undecodable_media_get_the_validate_stages_reason(client):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, [data_url(b"<html>hello</html>"), QUESTION])
    assert e.value.body["message"] == "image undecodable: not a recognised image format"
    assert e.value.body["code"] == "invalid_media"


def test_a_missing_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, [data_url(png()), QUESTION], model="gpt-4o")
    assert e.value.body["code"] == "model_not_found" and "student-int8" in e.value.body["message"]


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "teacher", "messages": []}, "messages: required"),
    ({"model": "teacher", "messages": [{"role": "user", "content": [QUESTION]}], "stream": True}, "stream"),
    ({"model": "teacher", "messages": [{"role": "user", "content": [{"type": "video_url"}]}]}, "'video_url'"),
    ({"model": "teacher", "messages": [{"role": "user", "content": [data_url(png()), data_url(png())]}]},
     "one image per request"),
])
def test_malformed_requests_say_what_is_wrong(server, body, message):
    response = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_remote_images_are_fetched_within_a_time_budget(client):
    with hostile_server({"red.png": png()}) as hostile:
        assert ask(client, [{"type": "image_url", "image_url": {"url": hostile.url("ok", "red.png")}},
                            QUESTION]).choices[0].message.content == "red"
        started = time.monotonic()
        with pytest.raises(openai.BadRequestError) as e:  # headers, then a byte every 0.5 s, forever
            ask(client, [{"type": "image_url", "image_url": {"url": hostile.url("drip", "x")}}, QUESTION])
        assert "no complete response within 2.0 s" in e.value.body["message"]
        assert time.monotonic() - started < 15
        with pytest.raises(openai.BadRequestError) as e:
            ask(client, [{"type": "image_url", "image_url": {"url": hostile.url("loop", "x")}}, QUESTION])
        assert "TooManyRedirects" in e.value.body["message"]
        assert hostile.wait_no_open_drip(10)


def test_concurrent_requests_are_batched_and_answered_alike(client, server):
    before = httpx.get(f"{server}/health").json()["models"]["student-int8"]
    content = [data_url(png()), QUESTION]
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda _: ask(client, content).choices[0].message.content, range(24)))
    after = httpx.get(f"{server}/health").json()["models"]["student-int8"]
    assert replies == ["red"] * 24
    assert after["requests"] - before["requests"] == 24
    assert after["batches"] - before["batches"] < 24 and after["largest_batch"] > 1
