"""Failures on the wire, against a real HTTP server on 127.0.0.1: an answer that started
(even half a status line) is never sent again, one that never started is, ``timeout`` bounds
a whole attempt however slowly the answer trickles, and a password in ``base_url`` is never
shown.

The server here speaks just enough of vLLM's API for the client's discovery (the model
list and the two probes) and answers the scored batch the way each test chooses. It is a
real socket server, so httpx's own transport (not a mock of it) meets each fault.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from qwen3_vllm_rerank import (
    AsyncRerankClient,
    MalformedResponseError,
    Qwen3RerankError,
    RerankClient,
    RerankConnectionError,
    RerankHTTPError,
    RerankTimeoutError,
    RetryPolicy,
)
from qwen3_vllm_rerank._protocol import Call
from qwen3_vllm_rerank.client._transport import build_request, translate_transport_error

QUERY = "what is a closure?"
DOCS = ["A closure captures variables.", "Rivers flow to the sea."]
#: More tries than any test needs: a retried batch would show as a second request.
RETRY = RetryPolicy(max_attempts=3, backoff=0.0, deadline=30)
PASSWORD = "pw-7f3a9c"

Answer = Callable[["_Handler"], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM (uvicorn) speaks it
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads what the server saw from ``FakeVLLM``, not from stderr."""

    def do_GET(self) -> None:
        self.server.fake.seen.append(("GET", self.path, self.headers.get("Authorization")))
        if self.path == "/v1/models":
            self.server.fake.models_answer(self)
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        self.server.fake.seen.append(("POST", self.path, self.headers.get("Authorization")))
        documents = body.get("text_2") or []
        if documents and isinstance(documents[0], dict):  # the family probe: a text server refuses it
            message = "MultiModalParam is not supported for Qwen3ForSequenceClassification"
            self.send_json(400, {"error": {"message": message}})
        elif documents == ["b"]:  # the template probe
            self.send_json(200, {"data": [{"index": 0, "score": 0.5}], "usage": {"prompt_tokens": 1}})
        else:
            self.server.fake.batches += 1
            self.server.fake.batch_answer(self)

    def send_json(self, status: int, body: object) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def send_cut(self, headers: dict[str, str], sent: bytes) -> None:
        """Answer 200 with ``headers``, send ``sent`` of the body, then close the connection."""
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(sent)
        self.wfile.flush()
        self.close_connection = True

    def send_raw(self, data: bytes, *, reset: bool = False) -> None:
        """Write ``data`` as it is (no status line of its own), then close, with a TCP reset
        if ``reset``."""
        if data:
            self.wfile.write(data)
            self.wfile.flush()
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def trickle(self, head: bytes, body: bytes) -> None:
        """Send ``head`` at once, then ``body`` one byte every ``TRICKLE`` seconds, until the
        client hangs up (a bounded loop: at most ``len(body)`` bytes)."""
        try:
            self.wfile.write(head)
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(TRICKLE)
        except OSError:  # the client gave up and closed the connection
            pass
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeVLLM


class FakeVLLM:
    """A loopback HTTP server answering discovery like a text vLLM, and the scored batch with
    ``batch_answer``. ``batches`` counts the scored batch's requests; ``seen`` every request
    as ``(method, path, Authorization header)``."""

    def __init__(self, batch_answer: Answer, models_answer: Answer | None = None) -> None:
        self.batch_answer = batch_answer
        self.models_answer = models_answer or (
            lambda h: h.send_json(200, {"data": [{"id": "m", "max_model_len": 8192}]})
        )
        self.batches = 0
        self.seen: list[tuple[str, str, str | None]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def __enter__(self) -> FakeVLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _scores(handler: _Handler) -> None:
    handler.send_json(200, {"data": [{"index": i, "score": 0.5} for i in range(len(DOCS))]})


# -- an answer cut mid-way is not sent again (issue 17, item 11) -----------------------------

#: The part of a score answer sent before the connection closes.
PART = b'{"data": [{"index": 0, '
CUTS: dict[str, Answer] = {
    # Content-Length promises more than is sent: httpx raises RemoteProtocolError.
    "content-length": lambda h: h.send_cut(
        {"Content-Type": "application/json", "Content-Length": "1000"}, PART
    ),
    # A chunked body without its last chunk: the same, without a length.
    "chunked": lambda h: h.send_cut(
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        b"%x\r\n%s\r\n" % (len(PART), PART),
    ),
}


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_an_answer_cut_mid_body_is_not_sent_again(cut: str) -> None:
    """Before the fix, the cut was a connection error, retried: the server computed the batch 3 times."""
    with FakeVLLM(CUTS[cut]) as server, RerankClient(server.url(), retry=RETRY) as client:
        with pytest.raises(MalformedResponseError) as info:
            client.score(QUERY, DOCS)
    assert server.batches == 1
    message = str(info.value)
    assert "the answer (HTTP 200) broke off mid-body" in message
    assert "not sent again" in message
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


@pytest.mark.parametrize("cut", sorted(CUTS))
async def test_an_answer_cut_mid_body_is_not_sent_again_async(cut: str) -> None:
    with FakeVLLM(CUTS[cut]) as server:
        async with AsyncRerankClient(server.url(), retry=RETRY) as client:
            with pytest.raises(MalformedResponseError, match="not sent again") as info:
                await client.score(QUERY, DOCS)
    assert server.batches == 1
    assert "the answer (HTTP 200) broke off mid-body" in str(info.value)


def test_an_answer_cut_short_without_a_length_is_not_sent_again() -> None:
    """No Content-Length and ``Connection: close``: httpx reads to the end and sees no error;
    the JSON is incomplete, and the error says the request was not sent again."""
    answer: Answer = lambda h: h.send_cut(  # noqa: E731
        {"Content-Type": "application/json", "Connection": "close"}, b'{"data": [{"index": 0, "sco'
    )
    with FakeVLLM(answer) as server, RerankClient(server.url(), retry=RETRY) as client:
        with pytest.raises(MalformedResponseError, match="not sent again") as info:
            client.score(QUERY, DOCS)
    assert server.batches == 1
    assert "not JSON" in str(info.value)


def test_a_connection_closed_before_any_answer_is_still_retried() -> None:
    """The other side of the line: no status line came back, so the model may not have had
    the request (a stale keep-alive connection, a restarting server): sent again."""
    answers = iter([lambda h: setattr(h, "close_connection", True), _scores])
    with FakeVLLM(lambda h: next(answers)(h)) as server, RerankClient(server.url(), retry=RETRY) as client:
        assert client.score(QUERY, DOCS) == [0.5, 0.5]
    assert server.batches == 2


@pytest.mark.parametrize("exc", [httpx.ReadError("reset"), httpx.RemoteProtocolError("cut")])
def test_a_transport_error_after_the_status_line_is_malformed_not_unreachable(
    exc: httpx.TransportError,
) -> None:
    """What httpcore's trace reports (the status line arrived) decides; the same error before
    it is an unreachable endpoint."""
    http = httpx.Client()
    before = build_request(http, "http://127.0.0.1:1", Call("GET", "/v1/models"), None)
    assert isinstance(translate_transport_error(exc, before), RerankConnectionError)
    after = build_request(http, "http://127.0.0.1:1", Call("GET", "/v1/models"), None)
    trace = after.extensions["trace"]
    trace("http11.receive_response_headers.complete", {"return_value": (b"HTTP/1.1", 200, b"OK", [])})
    error = translate_transport_error(exc, after)
    assert isinstance(error, MalformedResponseError)
    assert "the answer (HTTP 200) broke off mid-body" in str(error)
    http.close()


def test_a_body_that_cannot_be_decoded_is_malformed() -> None:
    """``DecodingError`` (a broken gzip body) is raised while reading an answer that started."""
    http = httpx.Client()
    request = build_request(http, "http://127.0.0.1:1", Call("GET", "/v1/models"), None)
    error = translate_transport_error(httpx.DecodingError("bad gzip"), request)
    assert isinstance(error, MalformedResponseError)
    assert "could not be decoded" in str(error)
    assert "not sent again" in str(error)
    http.close()


# -- a started answer is never sent again; one that never started is (issue 23, hole 9) --------

#: What the server sends of its answer before it closes the connection: a whole status line,
#: or just its first byte. Either way the server had the request.
STARTED = {"status-line": b"HTTP/1.1 200 OK\r\n", "one-byte": b"H"}


@pytest.mark.parametrize("sent", sorted(STARTED))
def test_an_answer_cut_after_its_first_bytes_is_sent_once(sent: str) -> None:
    """Before the fix, ``HTTP/1.1 200 OK\\r\\n`` then a close reached the server 3 times."""
    answer: Answer = lambda h: h.send_raw(STARTED[sent])  # noqa: E731
    with FakeVLLM(answer) as server, RerankClient(server.url(), retry=RETRY) as client:
        with pytest.raises(MalformedResponseError, match="not sent again") as info:
            client.score(QUERY, DOCS)
    assert server.batches == 1
    assert "broke off before its headers ended" in str(info.value)


@pytest.mark.parametrize("sent", sorted(STARTED))
async def test_an_answer_cut_after_its_first_bytes_is_sent_once_async(sent: str) -> None:
    answer: Answer = lambda h: h.send_raw(STARTED[sent])  # noqa: E731
    with FakeVLLM(answer) as server:
        async with AsyncRerankClient(server.url(), retry=RETRY) as client:
            with pytest.raises(MalformedResponseError, match="not sent again"):
                await client.score(QUERY, DOCS)
    assert server.batches == 1


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
async def test_a_connection_dropped_before_any_byte_is_retried_async(reset: bool) -> None:
    """No byte of an answer came back: the request is sent again, as the policy allows."""
    answers = iter([lambda h: h.send_raw(b"", reset=reset), _scores])
    with FakeVLLM(lambda h: next(answers)(h)) as server:
        async with AsyncRerankClient(server.url(), retry=RETRY) as client:
            assert await client.score(QUERY, DOCS) == [0.5, 0.5]
    assert server.batches == 2


def test_a_connection_reset_before_any_byte_is_retried() -> None:
    answers = iter([lambda h: h.send_raw(b"", reset=True), _scores])
    with FakeVLLM(lambda h: next(answers)(h)) as server, RerankClient(server.url(), retry=RETRY) as client:
        assert client.score(QUERY, DOCS) == [0.5, 0.5]
    assert server.batches == 2


def test_a_connection_dropped_before_any_byte_is_retried_at_most_per_the_policy() -> None:
    """Every try dropped before a byte: ``max_attempts`` tries, then the connection error."""
    answer: Answer = lambda h: h.send_raw(b"")  # noqa: E731
    policy = RetryPolicy(max_attempts=3, backoff=0.0, deadline=30)
    with FakeVLLM(answer) as server, RerankClient(server.url(), retry=policy) as client:
        with pytest.raises(RerankConnectionError):
            client.score(QUERY, DOCS)
    assert server.batches == 3


def test_through_an_http_client_you_pass_a_sent_request_is_never_sent_again() -> None:
    """An injected client's sockets are not this library's: whether a byte came back is
    unknown, so a failure after the request went out is not retried (and says why)."""
    answer: Answer = lambda h: h.send_raw(b"")  # noqa: E731
    with FakeVLLM(answer) as server, httpx.Client() as http:
        with RerankClient(server.url(), retry=RETRY, http_client=http) as client:
            with pytest.raises(MalformedResponseError, match="cannot tell whether the server"):
                client.score(QUERY, DOCS)
    assert server.batches == 1


# -- ``timeout`` bounds a whole attempt (issue 23, hole 14) ------------------------------------

#: Seconds between two trickled bytes: each read is well within any per-read timeout.
TRICKLE = 0.2
#: 200 bytes at TRICKLE: the call took ~40 s when ``timeout`` bounded each read only.
SLOW_BODY = b'{"data": [' + b" " * 190 + b"]}"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(SLOW_BODY)
TRICKLES: dict[str, Answer] = {
    "body": lambda h: h.trickle(HEAD, SLOW_BODY),
    "headers": lambda h: h.trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 190),
}
#: Far below the 40 s a trickle takes, far above the 2 s timeout on a loaded machine.
NOT_STALLED = 15.0


@pytest.mark.parametrize("part", sorted(TRICKLES))
def test_an_answer_trickled_byte_by_byte_fails_after_the_timeout(part: str) -> None:
    with FakeVLLM(TRICKLES[part]) as server, RerankClient(server.url(), timeout=2, retry=RETRY) as client:
        start = time.monotonic()
        with pytest.raises(RerankTimeoutError) as info:
            client.score(QUERY, DOCS)
        took = time.monotonic() - start
    assert took < NOT_STALLED
    assert server.batches == 1, "a timed-out request is not sent again"
    assert "did not answer within 2.0 s" in str(info.value)
    assert "Raise `timeout`" in str(info.value)


@pytest.mark.parametrize("part", sorted(TRICKLES))
async def test_an_answer_trickled_byte_by_byte_fails_after_the_timeout_async(part: str) -> None:
    with FakeVLLM(TRICKLES[part]) as server:
        async with AsyncRerankClient(server.url(), timeout=2, retry=RETRY) as client:
            start = time.monotonic()
            with pytest.raises(RerankTimeoutError, match=r"did not answer within 2\.0 s"):
                await client.score(QUERY, DOCS)
            took = time.monotonic() - start
    assert took < NOT_STALLED
    assert server.batches == 1


def test_the_deadline_is_per_attempt_and_fast_answers_still_succeed() -> None:
    """Discovery's requests and the batch each get their own ``timeout``: a client used for
    longer than ``timeout`` in all keeps working."""
    with FakeVLLM(_scores) as server, RerankClient(server.url(), timeout=0.5, retry=RETRY) as client:
        for _ in range(3):
            assert client.score(QUERY, DOCS) == [0.5, 0.5]
            time.sleep(0.3)
    assert server.batches == 3


# -- a password in base_url is never shown (issue 17, item 13) -------------------------------


def _assert_no_password(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the error, nor its causes (and their requests), nor any log line shows it."""
    shown: list[str] = []
    cause: BaseException | None = error
    for _ in range(10):  # the chains here are 1-3 long
        if cause is None:
            break
        shown.extend([str(cause), repr(cause), str(getattr(cause, "url", ""))])
        if isinstance(cause, httpx.RequestError):
            shown.append(str(cause.request.url))
        cause = cause.__cause__ or cause.__context__
    shown.extend(record.getMessage() for record in caplog.records)
    leaks = [text for text in shown if PASSWORD in text]
    assert not leaks


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_an_http_error_does_not_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answer: Answer = lambda h: h.send_json(500, {"error": {"message": "boom"}})  # noqa: E731
    with FakeVLLM(answer) as server:
        with RerankClient(server.url(f"svc:{PASSWORD}@"), retry=RETRY) as client:
            with pytest.raises(RerankHTTPError) as info:
                client.score(QUERY, DOCS)
    assert info.value.status_code == 500
    assert info.value.url == f"http://127.0.0.1:{server.port}/v1/score"  # the URL requested
    _assert_no_password(info.value, caplog)
    assert any("/v1/score" in r.getMessage() for r in caplog.records), "httpx logged the requests"
    # The userinfo is still sent, as Basic auth, as httpx would send it.
    assert {auth for _, _, auth in server.seen} == {_basic("svc", PASSWORD)}


async def test_an_http_error_does_not_show_the_password_async(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    not_found: Answer = lambda h: h.send_json(404, {"detail": "Not Found"})  # noqa: E731
    with FakeVLLM(_scores, models_answer=not_found) as server:
        async with AsyncRerankClient(server.url(f"svc:{PASSWORD}@"), retry=RETRY) as client:
            with pytest.raises(RerankHTTPError) as info:
                await client.score(QUERY, DOCS)
    assert info.value.status_code == 404
    assert info.value.url == f"http://127.0.0.1:{server.port}/v1/models"
    _assert_no_password(info.value, caplog)


def test_a_cut_answer_does_not_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeVLLM(CUTS["content-length"]) as server:
        with RerankClient(server.url(f"svc:{PASSWORD}@"), retry=RETRY) as client:
            with pytest.raises(MalformedResponseError) as info:
                client.score(QUERY, DOCS)
    assert info.value.url == f"http://127.0.0.1:{server.port}/v1/score"  # the URL requested
    _assert_no_password(info.value, caplog)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("endpoints", [1, 2])
def test_a_refused_connection_does_not_show_the_password(
    endpoints: int, caplog: pytest.LogCaptureFixture
) -> None:
    """One endpoint: its own error; two: "all endpoints are down", naming each (redacted)."""
    caplog.set_level(logging.DEBUG)
    urls = [f"http://svc:{PASSWORD}@127.0.0.1:{_closed_port()}" for _ in range(endpoints)]
    with RerankClient(urls, model="m", retry=RETRY) as client:
        with pytest.raises(RerankConnectionError) as info:
            client.score(QUERY, DOCS)
    _assert_no_password(info.value, caplog)
    # One endpoint: the URL requested (no userinfo); several: each endpoint, redacted.
    assert ("http://***@127.0.0.1:" if endpoints > 1 else "at http://127.0.0.1:") in str(info.value)


async def test_a_refused_connection_does_not_show_the_password_async(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://svc:{PASSWORD}@127.0.0.1:{_closed_port()}"
    async with AsyncRerankClient(url, model="m", retry=RETRY) as client:
        with pytest.raises(Qwen3RerankError) as info:
            await client.score(QUERY, DOCS)
    assert isinstance(info.value, RerankConnectionError)
    _assert_no_password(info.value, caplog)
