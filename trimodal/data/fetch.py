"""Fetching one media object within a total time budget, with retries; failures become reasons, not exceptions.

A server that sends headers and then drips one byte at a time never trips a per-read timeout (urllib's, so
img2dataset's: https://github.com/rom1504/img2dataset/issues/437). Every attempt here is bounded in wall-clock
time, and all attempts at one URL together by `ingest.fetch_timeout_s`. `fetch_one` reads any URL fsspec opens
(local, s3, http); `fetch_async` is the same for the loopback server's event loop, with http(s) on one shared
aiohttp session (a GET through fsspec's sync wrapper costs several times the CPU, which ingest's image rate felt).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp import TooManyRedirects

from trimodal.data.sources import read_bytes, scheme_of
from trimodal.params import IngestParams


@dataclass
class Fetched:
    """Outcome of fetching one media URL: bytes, or the reason there are none."""

    data: bytes | None = None
    error: str | None = None


@dataclass(frozen=True)
class Budget:
    """The time one URL may take: each attempt `timeout_s`, all `retries` + 1 together `fetch_timeout_s`; a
    timeout's reason quotes the setting that ended it (`names`: the two settings' names)."""

    timeout_s: float
    fetch_timeout_s: float
    retries: int
    names: tuple[str, str] = ("ingest.timeout_s", "ingest.fetch_timeout_s")

    @classmethod
    def of(cls, params: IngestParams | Budget) -> Budget:
        if isinstance(params, Budget):
            return params
        return cls(params.timeout_s, params.fetch_timeout_s, params.retries)


def attempts(params: Budget) -> Iterator[tuple[float, float]]:
    """(seconds to wait first, time limit) of each attempt at one URL: up to `retries` + 1, with backoff, all
    within `fetch_timeout_s`."""
    deadline = time.monotonic() + params.fetch_timeout_s
    for attempt in range(params.retries + 1):
        wait = max(0.0, min(2 ** (attempt - 1) * 0.2, 5, deadline - time.monotonic())) if attempt else 0.0
        left = deadline - time.monotonic() - wait
        if left <= 0:
            return
        yield wait, min(params.timeout_s, left)


def spent(params: Budget) -> str:
    return f"fetch timed out: no complete response within {params.fetch_timeout_s} s ({params.names[1]})"


def failure(exc: Exception, limit: float, params: Budget) -> tuple[str, bool]:
    """Why an attempt failed, and whether that is final (retrying cannot help). The reason quotes the setting that
    ended an attempt, never a measured time (reproducible)."""
    if isinstance(exc, FileNotFoundError):
        return f"download failed: not found ({exc})", True
    if isinstance(exc, TooManyRedirects):  # a loop
        return f"download failed: too many redirects ({len(exc.history)} followed)", True
    if isinstance(exc, TimeoutError):
        each = f"fetch timed out: no complete response within {params.timeout_s} s ({params.names[0]})"
        return (spent(params) if limit < params.timeout_s else each), False
    return f"download failed: {type(exc).__name__}: {exc}", False


def fetch_one(url: str, params: IngestParams | Budget) -> Fetched:
    """Fetch one object: up to `retries` + 1 attempts with backoff, all within `fetch_timeout_s`."""
    params = Budget.of(params)
    error = spent(params)
    for wait, limit in attempts(params):
        time.sleep(wait)
        try:
            return Fetched(data=read_bytes(url, limit))
        except Exception as e:  # noqa: BLE001 - the reason is recorded, the row is kept
            error, final = failure(e, limit, params)
            if final:
                break
    return Fetched(error=error)


async def _get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        if response.status == 404:  # as fsspec's http filesystem reports it
            raise FileNotFoundError(url)
        response.raise_for_status()
        return await response.read()


async def fetch_async(session: aiohttp.ClientSession, url: str, params: IngestParams | Budget) -> Fetched:
    """fetch_one on an event loop: http(s) through `session`, anything else in a worker thread."""
    params = Budget.of(params)
    if scheme_of(url) not in ("http", "https"):
        return await asyncio.to_thread(fetch_one, url, params)
    error = spent(params)
    for wait, limit in attempts(params):
        await asyncio.sleep(wait)
        try:
            async with asyncio.timeout(limit):
                return Fetched(data=await _get(session, url))
        except Exception as e:  # noqa: BLE001 - the reason is recorded, the row is kept
            error, final = failure(e, limit, params)
            if final:
                break
    return Fetched(error=error)
