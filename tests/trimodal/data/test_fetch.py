"""fetch_one (fsspec) and fetch_async (aiohttp, the loopback server's) against a real loopback server: a dripping
body or a redirect loop ends within the budget, with the same reasons from both."""
import asyncio
import time
from dataclasses import replace

import aiohttp
import pytest

from tests.hostile_server import hostile_server
from trimodal.data.fetch import fetch_async, fetch_one
from trimodal.params import defaults

PAYLOAD = b"\x89PNG not really, but bytes"


@pytest.fixture
def server():
    with hostile_server({"a.png": PAYLOAD}) as state:
        yield state


def on_a_loop(url, params):
    async def fetch():
        async with aiohttp.ClientSession() as session:
            return await fetch_async(session, url, params)
    return asyncio.run(fetch())


@pytest.fixture(params=["fetch_one", "fetch_async"])
def fetch(request):
    return fetch_one if request.param == "fetch_one" else on_a_loop


def timed_fetch(fetch, url, **params):
    start = time.monotonic()
    result = fetch(url, replace(defaults().ingest, **params))
    return result, time.monotonic() - start


def test_a_dripping_body_is_cut_off_at_the_total_budget_and_the_connection_closed(server, fetch):
    result, seconds = timed_fetch(fetch, server.url("drip", "a.png"), fetch_timeout_s=1.5, timeout_s=10.0, retries=2)
    assert result.data is None
    assert result.error == "fetch timed out: no complete response within 1.5 s (ingest.fetch_timeout_s)"
    assert 1.4 < seconds < 8  # the budget, not timeout_s (10 s a try); slack for a loaded machine
    assert server.drips["started"] == 1  # the budget left no time for a retry
    assert server.wait_no_open_drip(timeout=5), "the dripping connection was left open"


def test_each_attempt_is_bounded_by_timeout_s_and_retried_within_the_budget(server, fetch):
    result, seconds = timed_fetch(fetch, server.url("drip", "a.png"), fetch_timeout_s=30.0, timeout_s=0.7, retries=1)
    assert result.error == "fetch timed out: no complete response within 0.7 s (ingest.timeout_s)"
    assert server.drips["started"] == 2 and 1.4 < seconds < 10  # two tries of 0.7 s, far below the 30 s budget


def test_a_redirect_loop_is_a_clear_failure_without_retries(server, fetch):
    result, seconds = timed_fetch(fetch, server.url("loop", "a.png"), fetch_timeout_s=5.0, retries=2)
    assert result.error == "download failed: too many redirects (10 followed)"
    assert 10 <= server.loops <= 12  # one attempt's hops: a retry would add another ten
    assert seconds < 8


def test_a_normal_response_and_a_missing_one(server, fetch):
    assert fetch(server.url("ok", "a.png"), replace(defaults().ingest, fetch_timeout_s=5.0)).data == PAYLOAD
    missing = fetch(server.url("ok", "nope.png"), replace(defaults().ingest, fetch_timeout_s=5.0, retries=0))
    assert missing.error.startswith("download failed: not found")
