"""Retries, replicas and failures: loud, typed, and never a partial result.

Status codes a real vLLM will not produce on demand (429, 5xx) come from
``httpx.MockTransport``; everything else runs against the real server.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from qwen3_vllm_rerank import (
    AsyncRerankClient,
    InvalidInput,
    RerankClient,
    RerankConnectionError,
    RerankHTTPError,
    RerankTimeoutError,
    RetryPolicy,
)
from qwen3_vllm_rerank._protocol import retry_after
from qwen3_vllm_rerank.client._retry import Attempts, Endpoints
from tests.support.fixtures import Served

QUERY = "what is a closure?"
DOCS = ["A closure captures variables.", "Rivers flow to the sea.", "Functions are objects."]


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


Handler = Callable[[httpx.Request], httpx.Response]


def _fake_vllm(score_statuses: list[int], headers: dict[str, str] | None = None) -> tuple[Handler, list[str]]:
    """A stand-in vLLM whose /v1/score answers the given statuses in turn (each error with
    ``headers``), then 200."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 8192}]})
        body = json.loads(request.content)
        if isinstance(body["text_2"][0], dict):  # the family probe: a text reranker refuses content lists
            message = "MultiModalParam is not supported for Qwen3ForSequenceClassification"
            return httpx.Response(400, json={"error": {"message": message}})
        if body["text_2"] == ["b"]:  # the client's one-off template probe
            return httpx.Response(
                200, json={"data": [{"index": 0, "score": 0.5}], "usage": {"prompt_tokens": 1}}
            )
        status = score_statuses.pop(0) if score_statuses else 200
        if status != 200:
            return httpx.Response(
                status, json={"error": {"message": f"status {status}"}}, headers=headers or {}
            )
        data = [{"index": i, "score": 0.1 * (i + 1)} for i in range(len(body["text_2"]))]
        return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": 9}})

    return handler, seen


#: The client's one-off probes: the template probe and the family probe.
PROBES = 2


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_statuses_are_retried(status: int) -> None:
    handler, seen = _fake_vllm([status, status])
    http = httpx.Client(transport=httpx.MockTransport(handler))
    with RerankClient("http://vllm", http_client=http, retry=RetryPolicy(max_attempts=3)) as client:
        assert client.score(QUERY, DOCS) == pytest.approx([0.1, 0.2, 0.3])
    assert seen.count("/v1/score") == PROBES + 3  # probes, then two failures and a success


@pytest.mark.parametrize("status", [400, 401, 404, 422, 504])
def test_client_errors_and_gateway_timeouts_are_never_retried(status: int) -> None:
    # 504: a gateway gave up while the server still computes; sending again doubles the load.
    handler, seen = _fake_vllm([status])
    http = httpx.Client(transport=httpx.MockTransport(handler))
    with RerankClient("http://vllm", http_client=http, retry=RetryPolicy(max_attempts=5)) as client:
        with pytest.raises(RerankHTTPError) as info:
            client.score(QUERY, DOCS)
    assert info.value.status_code == status
    assert seen.count("/v1/score") == PROBES + 1


def test_attempts_are_bounded() -> None:
    handler, seen = _fake_vllm([503] * 10)
    http = httpx.Client(transport=httpx.MockTransport(handler))
    with RerankClient("http://vllm", http_client=http, retry=RetryPolicy(max_attempts=2)) as client:
        with pytest.raises(RerankHTTPError, match="HTTP 503"):
            client.score(QUERY, DOCS)
    assert seen.count("/v1/score") == PROBES + 2


async def test_a_batch_that_fails_fails_the_whole_call() -> None:
    healthy, _ = _fake_vllm([])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/score" and any(
            DOCS[1] in t for t in json.loads(request.content)["text_2"]
        ):
            return httpx.Response(
                500, json={"error": {"message": "engine died"}}
            )  # this batch never succeeds
        return healthy(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with AsyncRerankClient("http://vllm", http_client=http, batch_size=1, max_concurrency=1) as client:
        with pytest.raises(RerankHTTPError, match="HTTP 500"):
            await client.score(QUERY, DOCS)
    await http.aclose()


def test_backoff_grows_with_jitter_and_the_deadline_stops_retries() -> None:
    now = [0.0]
    endpoints = Endpoints(["http://a"], cooldown=10, clock=lambda: now[0])
    policy = RetryPolicy(max_attempts=10, deadline=5.0, backoff=0.5, max_backoff=2.0)
    attempts = Attempts(policy, endpoints, clock=lambda: now[0])
    delays = []
    error = RerankHTTPError("http://a", 503, "busy")

    def one_try() -> None:
        _, delay = attempts.next()
        delays.append(delay)
        now[0] += 2.0
        attempts.failed("http://a", error)

    one_try()
    one_try()
    with pytest.raises(RerankHTTPError):
        one_try()
    assert delays[0] == 0
    assert all(0 <= d <= 2.0 for d in delays)
    assert len(delays) == 3  # the deadline (5 s) passed after the third try


def test_endpoints_round_robin_and_cool_down() -> None:
    now = [0.0]
    endpoints = Endpoints(["http://a", "http://b", "http://c"], cooldown=10, clock=lambda: now[0])
    assert [endpoints.pick() for _ in range(4)] == ["http://a", "http://b", "http://c", "http://a"]
    endpoints.failed("http://b")
    assert [endpoints.pick() for _ in range(4)] == ["http://c", "http://a", "http://c", "http://a"]
    now[0] = 11
    assert {endpoints.pick() for _ in range(3)} == {"http://a", "http://b", "http://c"}


def test_policy_is_validated() -> None:
    with pytest.raises(InvalidInput, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvalidInput, match="retry must be a RetryPolicy"):
        RerankClient(retry=3)  # type: ignore[arg-type]


def test_requests_spread_over_replicas_and_skip_a_dead_one(served: Served) -> None:
    port = served.base_url.rsplit(":", 1)[1]
    dead = _closed_url()
    replicas = [f"http://127.0.0.1:{port}", dead, f"http://localhost:{port}"]
    hosts: Counter[str] = Counter()
    with httpx.Client(
        event_hooks={"request": [lambda r: hosts.update([f"{r.url.host}:{r.url.port}"])]}
    ) as http:
        client = RerankClient(replicas, http_client=http, batch_size=1, retry=RetryPolicy(max_attempts=3))
        with RerankClient(served.base_url) as reference:
            expected = reference.score(QUERY, DOCS * 4)
        assert client.score(QUERY, DOCS * 4) == pytest.approx(expected, abs=1e-6)
    dead_host = dead.removeprefix("http://")
    assert hosts[dead_host] == 1, "a dead endpoint sits out its cool-down after one failure"
    assert hosts[f"127.0.0.1:{port}"] >= 5
    assert hosts[f"localhost:{port}"] >= 5


async def test_all_endpoints_down_names_them_all() -> None:
    urls = [_closed_url(), _closed_url()]
    retry = RetryPolicy(max_attempts=3, deadline=5)
    async with AsyncRerankClient(urls, model="m", retry=retry) as client:
        with pytest.raises(RerankConnectionError) as info:
            await client.score(QUERY, DOCS)
    for url in urls:
        assert url in str(info.value)
    assert "all endpoints are down" in str(info.value)


def test_base_url_may_be_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3_VLLM_RERANK_BASE_URL", "http://a:1, http://b:2/")
    with RerankClient() as client:
        assert client.base_urls == ["http://a:1", "http://b:2"]


def _timing_out(exc: type[httpx.TimeoutException], seen: list[str]) -> Handler:
    """A stand-in vLLM whose scoring requests (not the probes) raise ``exc``."""
    healthy, _ = _fake_vllm([])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        body = json.loads(request.content) if request.content else {}
        if (
            request.url.path == "/v1/score"
            and body.get("text_2") not in (["b"], None)
            and not isinstance(body["text_2"][0], dict)
        ):
            raise exc("simulated", request=request)
        return healthy(request)

    return handler


def test_a_read_timeout_fails_once_and_is_never_sent_again() -> None:
    # The server has the request and is probably still computing it: a retry would double its load.
    seen: list[str] = []
    http = httpx.Client(transport=httpx.MockTransport(_timing_out(httpx.ReadTimeout, seen)))
    with RerankClient("http://vllm", http_client=http, retry=RetryPolicy(max_attempts=5)) as client:
        with pytest.raises(RerankTimeoutError, match="not sent again") as info:
            client.score(QUERY, DOCS)
    assert info.value.kind == "read"
    assert seen.count("/v1/score") == PROBES + 1


async def test_a_connect_timeout_is_an_unreachable_endpoint_and_counts_as_down() -> None:
    # Regression: ConnectTimeout used to become a RerankTimeoutError with read-timeout advice
    # and never counted toward "all endpoints are down".
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("simulated", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    urls = ["http://a:1", "http://b:2"]
    retry = RetryPolicy(max_attempts=4, backoff=0.0)
    async with AsyncRerankClient(urls, model="m", http_client=http, retry=retry) as client:
        with pytest.raises(RerankConnectionError, match="all endpoints are down") as info:
            await client.score(QUERY, DOCS)
    assert "no answer to the connection attempt" in str(info.value.__cause__)
    await http.aclose()


def test_a_pool_timeout_says_the_pool_is_the_limit() -> None:
    seen: list[str] = []
    http = httpx.Client(transport=httpx.MockTransport(_timing_out(httpx.PoolTimeout, seen)))
    with RerankClient("http://vllm", http_client=http) as client:
        with pytest.raises(RerankTimeoutError, match="max_concurrency") as info:
            client.score(QUERY, DOCS)
    assert info.value.kind == "pool"
    assert seen.count("/v1/score") == PROBES + 1


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_are_honoured(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 429/503 with ``Retry-After: 1.5`` is retried after those seconds, not the jittered backoff."""
    waits: list[float] = []
    monkeypatch.setattr("time.sleep", waits.append)
    handler, seen = _fake_vllm([status], headers={"Retry-After": "1.5"})
    http = httpx.Client(transport=httpx.MockTransport(handler))
    with RerankClient("http://vllm", http_client=http, retry=RetryPolicy(max_attempts=3)) as client:
        assert client.score(QUERY, DOCS) == pytest.approx([0.1, 0.2, 0.3])
    assert waits == [1.5]
    assert seen.count("/v1/score") == PROBES + 2


def test_retry_after_is_read_only_as_a_sane_number_of_seconds() -> None:
    def asked(value: str, status: int = 503) -> float:
        attempts = Attempts(
            RetryPolicy(max_attempts=5, deadline=100.0, max_backoff=2.0), Endpoints(["http://a"], 10)
        )
        attempts.next()
        attempts.failed("http://a", RerankHTTPError("http://a", status, "busy", retry_after=float(value)))
        _, delay = attempts.next()
        return delay

    assert asked("3") == 3.0
    assert asked("0") == 0.0
    assert asked("61") <= 2.0  # over MAX_RETRY_AFTER: the backoff instead
    assert asked("3", status=500) <= 2.0  # a 500 carries no honoured Retry-After
    response = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})
    assert retry_after(response) is None  # an HTTP date is not read
    assert retry_after(httpx.Response(503, headers={"Retry-After": "-1"})) is None
    assert retry_after(httpx.Response(503, headers={"Retry-After": "nan"})) is None
    assert retry_after(httpx.Response(429, headers={"Retry-After": " 2 "})) == 2.0


def test_a_retry_after_past_the_deadline_fails_the_call_at_once() -> None:
    now = [0.0]
    attempts = Attempts(
        RetryPolicy(max_attempts=5, deadline=10.0), Endpoints(["http://a"], 10), clock=lambda: now[0]
    )
    attempts.next()
    with pytest.raises(RerankHTTPError, match="HTTP 503"):
        attempts.failed("http://a", RerankHTTPError("http://a", 503, "busy", retry_after=30.0))
