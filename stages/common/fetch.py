"""Fetching one media object within a total time budget, with retries; failures become reasons, not exceptions.

A server that sends headers and then drips one byte at a time never trips a per-read timeout (urllib's, so
img2dataset's: https://github.com/rom1504/img2dataset/issues/437). Every attempt here is bounded in wall-clock
time by `read_bytes`, and all attempts at one URL together by `ingest.fetch_timeout_s`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import TooManyRedirects

from stages.common.params import IngestParams
from stages.common.sources import read_bytes


@dataclass
class Fetched:
    """Outcome of fetching one media URL: bytes, or the reason there are none."""

    data: bytes | None = None
    error: str | None = None


def fetch_one(url: str, params: IngestParams) -> Fetched:
    """Fetch one object: up to `retries` + 1 attempts with backoff, all within `fetch_timeout_s`."""
    deadline = time.monotonic() + params.fetch_timeout_s
    spent = f"fetch timed out: no complete response within {params.fetch_timeout_s} s (ingest.fetch_timeout_s)"
    error = spent
    for attempt in range(params.retries + 1):
        if attempt:
            time.sleep(max(0.0, min(2 ** (attempt - 1) * 0.2, 5, deadline - time.monotonic())))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        limit = min(params.timeout_s, left)
        try:
            data = read_bytes(url, limit)
        except FileNotFoundError as e:
            return Fetched(error=f"download failed: not found ({e})")
        except TooManyRedirects as e:  # a loop: retrying cannot help
            return Fetched(error=f"download failed: too many redirects ({len(e.history)} followed)")
        except TimeoutError:  # the reason quotes the setting that ended it, never a measured time (reproducible)
            each = f"fetch timed out: no complete response within {params.timeout_s} s (ingest.timeout_s)"
            error = spent if limit < params.timeout_s else each
            continue
        except Exception as e:  # noqa: BLE001 - the reason is recorded, the row is kept
            error = f"download failed: {type(e).__name__}: {e}"
            continue
        return Fetched(data=data)
    return Fetched(error=error)
