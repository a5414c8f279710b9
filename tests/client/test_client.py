"""The core clients against a real vLLM server: order, batching, ownership, errors."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from qwen3_vllm_rerank import (
    AsyncRerankClient,
    InvalidInput,
    Qwen3RerankError,
    RerankClient,
    RerankConnectionError,
    RerankHTTPError,
    RerankResult,
    RerankTimeoutError,
)
from tests.support.fixtures import Served

QUERY = "How do I read a file in Python?"
DOCS = [
    "Use open() with a with-statement and call read().",
    "The Eiffel Tower is in Paris.",
    "pathlib.Path.read_text returns the contents of a file.",
    "Bananas are a good source of potassium.",
    "The csv module reads comma separated files.",
    "Volcanoes erupt molten rock.",
    "io.open is an alias of the built-in open.",
]


class Counter:
    """Counts requests (and the most in flight at once) through httpx event hooks."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def on_request(self, request: httpx.Request) -> None:
        self.requests.append(request.url.path)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def on_response(self, response: httpx.Response) -> None:
        self.in_flight -= 1

    async def aon_request(self, request: httpx.Request) -> None:
        self.on_request(request)

    async def aon_response(self, response: httpx.Response) -> None:
        self.on_response(response)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_score_is_in_input_order_and_batching_changes_nothing(served: Served) -> None:
    with RerankClient(served.base_url, batch_size=1000) as client:
        whole = client.score(QUERY, DOCS)
    counter = Counter()
    hooks = {"request": [counter.on_request], "response": [counter.on_response]}
    with httpx.Client(event_hooks=hooks, timeout=60) as http:
        client = RerankClient(served.base_url, batch_size=3, http_client=http)
        batched = client.score(QUERY, DOCS)
        client.close()
        assert not http.is_closed, "an injected client belongs to the caller"
    # Once per client: the model and its context length, then a 2-character template probe.
    assert counter.requests == ["/v1/models", "/v1/score", "/v1/score", "/v1/score", "/v1/score"]
    assert batched == pytest.approx(whole, abs=1e-6)
    assert len(set(whole)) == len(DOCS)


def test_rerank_sorts_and_cuts(served: Served) -> None:
    with RerankClient(served.base_url, model=served.model) as client:
        scores = client.score(QUERY, DOCS)
        results = client.rerank(QUERY, DOCS, top_n=3)
        everything = client.rerank(QUERY, DOCS, top_n=100)
    assert all(isinstance(r, RerankResult) for r in results)
    assert len(results) == 3
    assert len(everything) == len(DOCS)
    ranked = sorted(range(len(DOCS)), key=lambda i: -scores[i])
    assert [r.index for r in everything] == ranked
    assert [r.document for r in results] == [DOCS[i] for i in ranked[:3]]
    assert [r.score for r in everything] == pytest.approx(sorted(scores, reverse=True), abs=1e-6)


def test_empty_documents_make_no_request(served: Served) -> None:
    counter = Counter()
    with httpx.Client(event_hooks={"request": [counter.on_request]}) as http:
        client = RerankClient(served.base_url, http_client=http)
        assert client.score(QUERY, []) == []
        assert client.rerank(QUERY, []) == []
    assert counter.requests == []


def test_model_is_discovered_once(served: Served) -> None:
    counter = Counter()
    with httpx.Client(event_hooks={"request": [counter.on_request]}, timeout=60) as http:
        client = RerankClient(served.base_url, http_client=http)
        client.score(QUERY, DOCS[:2])
        client.score(QUERY, DOCS[:2])
    assert counter.requests.count("/v1/models") == 1
    assert client.model == served.model


def test_base_url_from_environment(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3_VLLM_RERANK_BASE_URL", served.base_url + "/")
    with RerankClient() as client:
        assert client.base_url == served.base_url
        assert len(client.score(QUERY, DOCS[:2])) == 2


async def test_async_sends_batches_concurrently_up_to_the_limit(served: Served) -> None:
    with RerankClient(served.base_url) as sync_client:
        expected = sync_client.score(QUERY, DOCS * 4)
    counter = Counter()
    hooks = {"request": [counter.aon_request], "response": [counter.aon_response]}
    async with httpx.AsyncClient(event_hooks=hooks, timeout=60) as http:
        client = AsyncRerankClient(
            served.base_url, model=served.model, batch_size=2, max_concurrency=3, http_client=http
        )
        scores = await client.score(QUERY, DOCS * 4)
        await client.aclose()
        assert not http.is_closed
    assert scores == pytest.approx(expected, abs=1e-6)
    # Once per client: /v1/models (context length) and the template probe; then 14 batches.
    assert counter.requests[:2] == ["/v1/models", "/v1/score"]
    assert len(counter.requests) == 2 + 14
    assert 1 < counter.max_in_flight <= 3


async def test_async_concurrent_calls_share_the_limit(served: Served) -> None:
    counter = Counter()
    hooks = {"request": [counter.aon_request], "response": [counter.aon_response]}
    async with httpx.AsyncClient(event_hooks=hooks, timeout=60) as http:
        client = AsyncRerankClient(
            served.base_url, model=served.model, batch_size=1, max_concurrency=2, http_client=http
        )
        queries = [f"question {i}" for i in range(4)]
        results = await asyncio.gather(*(client.rerank(q, DOCS[:3]) for q in queries))
    assert [len(r) for r in results] == [3, 3, 3, 3]
    assert counter.max_in_flight <= 2


def test_cannot_connect_names_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with RerankClient(url, model="m") as client, pytest.raises(RerankConnectionError) as info:
        client.score(QUERY, DOCS)
    assert url in str(info.value)
    assert isinstance(info.value, Qwen3RerankError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_async_cannot_connect() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    async with AsyncRerankClient(url, model="m", batch_size=1) as client:
        with pytest.raises(RerankConnectionError, match=url):
            await client.score(QUERY, DOCS)


def test_timeout_is_typed(served: Served) -> None:
    client = RerankClient(served.base_url, model=served.model, timeout=0.0005)
    with client, pytest.raises(RerankTimeoutError) as info:
        client.score(QUERY, DOCS * 50)
    assert isinstance(info.value, TimeoutError)


def test_unknown_model_is_an_http_error_with_the_servers_message(served: Served) -> None:
    client = RerankClient(served.base_url, model="no-such-model")
    with client, pytest.raises(RerankHTTPError) as info:
        client.score(QUERY, DOCS)
    assert info.value.status_code == 404
    assert "no-such-model" in info.value.server_message


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.score(QUERY, "one string"),
            "documents must be a list of str, Image or Content, got str",
        ),
        (lambda c: c.score(QUERY, ["ok", None]), r"documents\[1\]"),
        (lambda c: c.score(None, ["ok"]), "query must be a str"),
        (lambda c: c.rerank(QUERY, ["ok"], top_n=0), "top_n"),
    ],
)
def test_invalid_input_is_rejected_before_any_request(call: object, message: str) -> None:
    with RerankClient("http://127.0.0.1:9", model="m") as client, pytest.raises(InvalidInput, match=message):
        call(client)  # type: ignore[operator]


def test_invalid_configuration() -> None:
    with pytest.raises(InvalidInput, match="batch_size"):
        RerankClient(batch_size=0)
    with pytest.raises(InvalidInput, match="max_concurrency"):
        AsyncRerankClient(max_concurrency=0)
