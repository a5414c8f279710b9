"""A server slower than the client's timeout: the call fails once, cleanly, and the load is
never multiplied by retries (issue: a CPU server in bf16 took ~94 s for one batch and the
retry sent the same batch again while vLLM was still computing the first)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from qwen3_vllm_rerank import AsyncRerankClient, RerankClient, RerankTimeoutError, RetryPolicy
from tests.support.fixtures import Served

QUERY = "what is a closure?"
DOCS = [f"Document {i}: a closure captures variables." for i in range(12)]
DELAY = 8.0
# Well under DELAY, and well over what the unheld discovery requests take on a loaded 2-core machine.
TIMEOUT = 3.0


class SlowProxy:
    """A real HTTP proxy in front of the vLLM server that holds every scoring request with
    more than one document for ``DELAY`` seconds before forwarding it, and counts them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.scoring_requests = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/v1/score" and body.count(b"Document ") > 1:
                    with proxy._lock:
                        proxy.scoring_requests += 1
                    time.sleep(DELAY)
                answer = httpx.request(
                    self.command, proxy.upstream + self.path, content=body or None,
                    headers={"content-type": "application/json"}, timeout=60,
                )  # fmt: skip
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SlowProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def slow(served: Served) -> Iterator[SlowProxy]:
    with SlowProxy(served.base_url) as proxy:
        yield proxy


def test_a_call_slower_than_the_timeout_fails_once_without_a_second_request(slow: SlowProxy) -> None:
    retry = RetryPolicy(max_attempts=5)
    with RerankClient(slow.base_url, timeout=TIMEOUT, retry=retry) as client:
        with pytest.raises(RerankTimeoutError, match="not sent again"):
            client.score(QUERY, DOCS)
    time.sleep(DELAY)  # let the proxy's held request finish
    assert slow.scoring_requests == 1


async def test_async_calls_slower_than_the_timeout_fail_once_each(slow: SlowProxy) -> None:
    retry = RetryPolicy(max_attempts=5)
    async with AsyncRerankClient(slow.base_url, timeout=TIMEOUT, retry=retry, batch_size=4) as client:
        with pytest.raises(RerankTimeoutError):
            await client.score(QUERY, DOCS)
    assert slow.scoring_requests == 3, "three batches, each sent once"


def test_a_slow_call_within_the_timeout_succeeds_with_one_request(slow: SlowProxy, served: Served) -> None:
    with RerankClient(served.base_url) as direct:
        expected = direct.score(QUERY, DOCS)
    with RerankClient(slow.base_url, timeout=30.0) as client:
        assert client.score(QUERY, DOCS) == pytest.approx(expected, abs=1e-6)
    assert slow.scoring_requests == 1
