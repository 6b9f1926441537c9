"""An OpenAI-compatible HTTP server over saved trimodal models, and the demo page (GET /).

    POST /v1/chat/completions   OpenAI's chat completions request; the last user message's content parts:
                                `text`, `image_url` (http(s) or data: URL), `input_audio` (base64, any format
                                the validate stage decodes). The last text part is the question; text parts
                                before it are the text input. One text part with no image or audio is the text
                                input alone and the reply is its caption. Greedy decoding (temperature is
                                accepted and ignored); n must be 1; no streaming.
    GET  /v1/models             the served models; the id is the model folder's name (e.g. student-int8)
    GET  /health                status, and per model the requests and batches served so far

The reply's message content is the answer when a question was asked, else the caption; the full prediction
(caption, answer, top-k labels with probabilities, inputs seen) is in the reply's extra field `trimodal`.

Concurrent requests to one model are batched (`Batcher`): a request waits at most max_wait_ms for others, up to
max_batch_size, and requests that arrive while a batch runs form the next one. Inputs are decoded in worker threads
with the validate stage's decoding, within the limits the model's folder records; bad input is a 4xx whose
message says what was wrong, in OpenAI's error shape {"error": {"message", "type", "param", "code"}}. Binds
127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from trimodal.data.limits import MediaLimits
from trimodal.data.media import Rejected
from trimodal.serving.predictor import Inputs, Prediction, Predictor

PAGE = Path(__file__).with_name("page.html")


@dataclass
class ServerSettings:
    models: list[Path]
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 16
    max_wait_ms: float = 5.0
    max_request_bytes: int = 32 * 2**20  # a whole request, base64 media included
    max_media_bytes: int = 16 * 2**20  # one decoded image or sound
    remote_media: bool = True  # fetch http(s) image URLs
    fetch_timeout_s: float = 20.0  # total budget for one remote image: connect, redirects and body
    limits: MediaLimits | None = None  # None: each model decodes within the limits its folder records


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return JSONResponse({"error": {"message": self.message, "type": kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


class Batcher:
    """One model's queue: requests that arrive together run as one batch (Predictor.predict)."""

    def __init__(self, predictor: Predictor, max_batch_size: int, max_wait_s: float):
        self.predictor, self.max_batch_size, self.max_wait_s = predictor, max_batch_size, max_wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.requests = self.batches = self.largest = 0

    async def submit(self, sample: dict) -> Prediction:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((sample, future))
        return await future

    async def _collect(self) -> list:
        items = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(items) < self.max_batch_size:
            left = deadline - asyncio.get_running_loop().time()
            try:
                items.append(self.queue.get_nowait() if left <= 0 else
                             await asyncio.wait_for(self.queue.get(), left))
            except (asyncio.QueueEmpty, TimeoutError):
                break
        return [(s, f) for s, f in items if not f.done()]  # a client that went away is not computed for

    async def run(self) -> None:
        while True:
            items = await self._collect()
            if not items:
                continue
            try:
                predictions = await asyncio.to_thread(self.predictor.predict, [s for s, _ in items])
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.requests += len(items)
            self.batches += 1
            self.largest = max(self.largest, len(items))
            for (_, future), prediction in zip(items, predictions, strict=True):
                if not future.done():
                    future.set_result(prediction)

    def stats(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest}


def _decode_base64(data: object, param: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise APIError(400, f"{param}: expected a non-empty base64 string", param)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: not valid base64", param, "invalid_base64") from None


def _data_url(url: str, param: str) -> bytes:
    """data:[<mediatype>][;base64],<data> (RFC 2397); media must be base64."""
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise APIError(400, f"{param}: a data: URL must be base64 (data:image/png;base64,...)", param)
    return _decode_base64(data, param)


class ChatRequest:
    """The fields of a chat completions request this server reads, checked, with the offending field named."""

    def __init__(self, body: object):
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        self.model = body.get("model")
        if not isinstance(self.model, str):
            raise APIError(400, "model: required (GET /v1/models lists them)", "model")
        if body.get("stream"):
            raise APIError(400, "stream: streaming is not supported; send stream=false", "stream")
        if body.get("n", 1) != 1:
            raise APIError(400, "n: only n=1 is supported (decoding is greedy)", "n")
        self.max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise APIError(400, "max_tokens: must be a positive integer", "max_tokens")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "messages: required, a non-empty list", "messages")
        users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise APIError(400, "messages: no message with role 'user'", "messages")
        self.index = users[-1]
        self.parts = self._parts(messages[self.index].get("content"))

    def _parts(self, content: object) -> list[tuple[str, str, object]]:
        """[(type, param path, value)] of the last user message."""
        where = f"messages[{self.index}].content"
        if isinstance(content, str):
            return [("text", where, content)]
        if not isinstance(content, list) or not content:
            raise APIError(400, f"{where}: a string or a non-empty list of content parts", where)
        parts = []
        for i, part in enumerate(content):
            param = f"{where}[{i}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append(("text", f"{param}.text", part.get("text")))
            elif kind == "image_url":
                image = part.get("image_url")
                parts.append(("image", f"{param}.image_url.url", image.get("url") if isinstance(image, dict)
                              else image))
            elif kind == "input_audio":
                audio = part.get("input_audio")
                parts.append(("audio", f"{param}.input_audio.data", audio.get("data") if isinstance(audio, dict)
                              else None))
            else:
                raise APIError(400, f"{param}.type: {kind!r} is not supported (text, image_url, input_audio)",
                               f"{param}.type")
        for modality in ("image", "audio"):
            extra = [p for k, p, _ in parts if k == modality][1:]
            if extra:
                raise APIError(400, f"{extra[0]}: one {modality} per request (the model takes one)", extra[0])
        return parts


class Service:
    def __init__(self, settings: ServerSettings, predictors: dict[str, Predictor]):
        self.settings, self.predictors = settings, predictors
        wait = settings.max_wait_ms / 1000
        self.batchers = {name: Batcher(p, settings.max_batch_size, wait) for name, p in predictors.items()}
        self.client: httpx.AsyncClient | None = None
        self.started = int(time.time())

    async def image_bytes(self, url: object, param: str) -> bytes:
        if not isinstance(url, str) or not url:
            raise APIError(400, f"{param}: expected a URL string", param)
        if url.startswith("data:"):
            return self.capped(_data_url(url, param), param)
        if not url.startswith(("http://", "https://")):
            raise APIError(400, f"{param}: only http(s) and data: URLs are accepted", param)
        if not self.settings.remote_media:
            raise APIError(400, f"{param}: this server does not fetch remote URLs; send a data: URL", param)
        return await self.fetch(url, param)

    async def fetch(self, url: str, param: str) -> bytes:
        """GET within a total time budget (a server dripping bytes cannot hold the request) and a size cap."""
        limit, chunks, size = self.settings.max_media_bytes, [], 0
        try:
            async with asyncio.timeout(self.settings.fetch_timeout_s), \
                    self.client.stream("GET", url, follow_redirects=True) as response:
                if response.status_code >= 400:
                    raise APIError(400, f"{param}: {url} answered HTTP {response.status_code}", param,
                                   "media_fetch_failed")
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise APIError(413, f"{param}: the image is larger than the {limit}-byte limit", param,
                                       "media_too_large")
                    chunks.append(chunk)
        except TimeoutError:
            raise APIError(400, f"{param}: {url} sent no complete response within "
                                f"{self.settings.fetch_timeout_s} s", param, "media_fetch_failed") from None
        except httpx.HTTPError as e:
            raise APIError(400, f"{param}: fetching {url} failed: {type(e).__name__}: {e}", param,
                           "media_fetch_failed") from None
        return b"".join(chunks)

    def capped(self, data: bytes, param: str) -> bytes:
        if len(data) > self.settings.max_media_bytes:
            raise APIError(413, f"{param}: {len(data)} bytes, more than the {self.settings.max_media_bytes}-byte "
                                f"limit", param, "media_too_large")
        return data

    async def inputs(self, request: ChatRequest) -> Inputs:
        inputs, texts = Inputs(), []
        for kind, param, value in request.parts:
            if kind == "text":
                if not isinstance(value, str):
                    raise APIError(400, f"{param}: expected a string", param)
                if value.strip():
                    texts.append(value)
            elif kind == "image":
                inputs.image = await self.image_bytes(value, param)
            else:
                inputs.audio = self.capped(_decode_base64(value, param), param)
        if len(texts) > 1 or (texts and (inputs.image or inputs.audio)):
            inputs.question = texts.pop()
        inputs.text = " ".join(texts) or None
        if not (inputs.image or inputs.audio or inputs.text):
            where = f"messages[{request.index}].content"
            raise APIError(400, f"{where}: no input; give an image_url, an input_audio or a text part", where)
        return inputs

    async def complete(self, body: object) -> dict:
        request = ChatRequest(body)
        if request.model not in self.batchers:
            raise APIError(404, f"The model '{request.model}' does not exist; this server has "
                                f"{sorted(self.batchers)}", "model", "model_not_found")
        predictor = self.predictors[request.model]
        inputs = await self.inputs(request)
        try:
            sample = await asyncio.to_thread(predictor.prepare, inputs)
        except Rejected as e:  # the validate stage's reason: "image too small: 8x8, ..."
            raise APIError(400, str(e), None, "invalid_media") from None
        prediction = await self.batchers[request.model].submit(sample)
        content = prediction.answer if prediction.answer is not None else prediction.caption
        if request.max_tokens is not None:  # decoding is short already; honour a smaller cap
            content = predictor.tokenizer.decode(predictor.tokenizer(content, add_special_tokens=False)
                                                 ["input_ids"][: request.max_tokens]).strip()
        prompt = sum(len(sample.get(k, ())) for k in ("text", "question"))
        completion = len(predictor.tokenizer(content, add_special_tokens=False)["input_ids"])
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": request.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
                "trimodal": prediction.to_dict()}

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": self.started,
                                            "owned_by": "trimodal"} for name in self.predictors]}


async def _body(request: Request, limit: int) -> object:
    """The JSON body, refused (413) past `limit` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request is {declared} bytes, more than the {limit}-byte limit",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request is more than the {limit}-byte limit", code="request_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None


def create_app(settings: ServerSettings, predictors: dict[str, Predictor] | None = None) -> FastAPI:
    """The app over `predictors` (model id -> Predictor), loaded from settings.models when not given."""
    if predictors is None:
        predictors = load_models(settings.models, settings.limits)
    service = Service(settings, predictors)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(b.run()) for b in service.batchers.values()]
        async with httpx.AsyncClient() as client:
            service.client = client
            yield
        for task in tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="trimodal", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> dict:
        return await service.complete(await _body(request, settings.max_request_bytes))

    @app.get("/v1/models")
    async def models() -> dict:
        return service.models()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": {name: b.stats() for name, b in service.batchers.items()}}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text()

    return app


def load_models(folders: list[Path], limits: MediaLimits | None = None) -> dict[str, Predictor]:
    names = [Path(f).resolve().name for f in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"two served models share a folder name (the model id): {names}")
    return {name: Predictor.load(folder, limits=limits) for name, folder in zip(names, folders, strict=True)}


def run(settings: ServerSettings) -> None:
    app = create_app(settings)
    print(f"trimodal: serving {sorted(app.state.service.predictors)} on http://{settings.host}:{settings.port} "
          f"(demo page at /, OpenAI API at /v1)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
