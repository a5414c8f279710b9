"""What a client costs and leaves behind: the first call, event loops, copies."""

from __future__ import annotations

import asyncio
import gc
import sys

import psutil
import pytest

from qwen3_vllm_rerank import AsyncRerankClient, RerankClient
from tests.support.fixtures import Served
from tests.support.recording import RequestLog

QUERY = "what is a closure?"
DOCS = ["A closure captures variables from its enclosing scope.", "Rivers flow to the sea."]


def test_a_fresh_clients_first_call_pays_for_one_probe_and_the_scoring(served: Served) -> None:
    # The served model is a local directory: its family comes from config.json and its
    # neutralisation list from tokenizer_config.json; the 11 MB tokenizer.json is loaded
    # only when a document may not fit, which these do.
    log = RequestLog()
    with log.client() as http, RerankClient(served.base_url, http_client=http) as client:
        scores = client.score(QUERY, DOCS)
        assert client._profile is not None
        assert not client._profile.tokens.loaded
    assert len(scores) == 2
    assert log.paths == ["/v1/models", "/v1/score", "/v1/score"]  # listing + probe, then the call


def test_the_tokenizer_is_loaded_when_a_document_may_not_fit(served: Served) -> None:
    with RerankClient(served.base_url, max_length=200) as client:
        (result,) = client.rerank(QUERY, ["word " * 200])
        assert client._profile is not None
        assert client._profile.tokens.loaded
    assert result.truncated


def _connections_to(base_url: str) -> int:
    port = int(base_url.rsplit(":", 1)[1])
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def test_one_async_client_serves_several_asyncio_runs_and_leaks_nothing(served: Served) -> None:
    # Regression: a client used under a second asyncio.run replaced its connection pool and
    # never closed the old one; aclose() from another loop dropped the client silently.
    gc.collect()  # earlier tests' garbage is not this test's
    unraisable: list[sys.UnraisableHookArgs] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        client = AsyncRerankClient(served.base_url, max_concurrency=2)
        first = asyncio.run(client.score(QUERY, DOCS))
        assert _connections_to(served.base_url) == 0, "closed when its loop ended"
        second = asyncio.run(client.score(QUERY, DOCS * 3))
        asyncio.run(client.aclose())
        del client
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert second == pytest.approx(first * 3, abs=1e-6)
    assert _connections_to(served.base_url) == 0
    assert [u.exc_value for u in unraisable] == [], "no unclosed transport or socket"


async def test_aclose_closes_the_pool_of_the_running_loop(served: Served) -> None:
    client = AsyncRerankClient(served.base_url)
    await client.score(QUERY, DOCS)
    assert _connections_to(served.base_url) >= 1
    await client.aclose()
    assert _connections_to(served.base_url) == 0
    assert len(await client.score(QUERY, DOCS)) == 2, "a later call reconnects"
    await client.aclose()


def test_aclose_from_another_loop_closes_the_pool_that_loop_still_runs() -> None:
    """aclose() on loop B for a pool bound to loop A, which is still running in another thread:
    A closes it (its own connections), nothing is dropped unclosed."""
    import threading

    import httpx

    from qwen3_vllm_rerank.client._transport import LoopBoundClient

    pools = LoopBoundClient(timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=2))
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:

        async def bind() -> httpx.AsyncClient:
            return pools.get()

        async def closed_soon(http: httpx.AsyncClient) -> bool:
            for _ in range(250):  # up to 5 s on a loaded machine; returns as soon as it is closed
                if http.is_closed:
                    return True
                await asyncio.sleep(0.02)
            return False

        http = asyncio.run_coroutine_threadsafe(bind(), other).result(timeout=5)
        assert not http.is_closed
        asyncio.run(pools.aclose())  # from this thread's own, different loop
        closed = asyncio.run_coroutine_threadsafe(closed_soon(http), other)
        assert closed.result(timeout=10), "closed by the loop that owns it"
        assert pools._bound is None
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(timeout=5)
        other.close()
