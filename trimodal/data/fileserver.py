"""A loopback HTTP server for a fixed set of sources (local paths or URLs), each GET answered by `fetch_async`.

img2dataset fetches over HTTP with urllib, whose timeout bounds each socket read, not a whole response
(https://github.com/rom1504/img2dataset/issues/437): a server that drips bytes stalls it forever. ingest
therefore hands img2dataset only this server's URLs; the server fetches the real source within a total time budget
per URL (trimodal/data/fetch.py) and answers with the bytes, or with 502 and the reason kept in `errors`. Local
files go the same way. Only the listed sources are reachable.

It runs aiohttp on an event loop in a thread of its own, with one client session for http(s) sources: every image
crosses it, so its CPU per request counts against img2dataset's rate (a thread-per-request http.server with a
GET through fsspec's sync wrapper cost ~1.8 ms per image; this, ~0.85 ms).
"""
from __future__ import annotations

import asyncio
import posixpath
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlparse

import aiohttp
from aiohttp import web

from trimodal.data.fetch import fetch_async
from trimodal.params import IngestParams


class LoopbackServer:
    def __init__(self, sources: list[str], params: IngestParams):
        self._sources = sorted(set(sources))
        self._index = {s: i for i, s in enumerate(self._sources)}
        self._params = params
        self._loop = asyncio.new_event_loop()
        self._port: int | None = None
        self.errors: dict[str, str] = {}  # source -> why its last GET got no bytes

    def url_for(self, source: str) -> str:
        assert self._port is not None, "server not started"
        name = quote(posixpath.basename(urlparse(source).path))  # cosmetic: URLs keep the file name
        return f"http://127.0.0.1:{self._port}/{self._index[source]}/{name}"

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            source = self._sources[int(request.match_info["index"])]
        except (ValueError, IndexError):
            return web.Response(status=404)
        result = await fetch_async(self._session, source, self._params)
        if result.data is None:
            self.errors[source] = result.error or "download failed: no reason given"
            return web.Response(status=502)
        return web.Response(body=result.data, content_type="application/octet-stream")

    async def _start(self) -> None:
        # local and s3 sources are read in threads: as many as ingest's download threads
        self._loop.set_default_executor(ThreadPoolExecutor(max(self._params.threads, 1)))
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/{index}/{name:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def __enter__(self) -> LoopbackServer:
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="loopback-server", daemon=True)
        self._thread.start()
        started.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
