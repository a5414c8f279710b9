"""HTTP plumbing shared by the sync and async clients: building requests, reading
answers into our errors, and the per-event-loop lifetime of an owned async connection pool.

Everything that can be written once for both clients is here; the clients keep only
the sending and the sleeping, which differ.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass
from typing import Any

import httpx

from .. import _protocol as proto
from ..errors import (
    InvalidInput,
    MalformedResponseError,
    Qwen3RerankError,
    RerankConnectionError,
    RerankHTTPError,
    RerankTimeoutError,
)

__all__ = ["LoopBoundClient", "build_request", "http_error", "limits", "translate_transport_error"]

#: The end of httpcore's trace event for a received status line and headers (HTTP/1.1 and 2).
_HEADERS_RECEIVED = ".receive_response_headers.complete"


def limits(max_concurrency: int, endpoints: int) -> httpx.Limits:
    """A pool large enough for ``max_concurrency`` requests to every endpoint."""
    pool = max_concurrency * endpoints
    return httpx.Limits(max_connections=pool, max_keepalive_connections=pool)


class _ResponseStart:
    """Whether (and with which status) the answer to one request started, learnt through
    httpcore's ``trace`` extension (https://www.python-httpx.org/advanced/extensions/#trace).

    Once the status line has arrived, the request reached the server: a failure after
    it must not be retried (the batch may have been computed). Stays unset with a
    transport that does not trace (e.g. ``httpx.MockTransport``).
    """

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status: int | None = None

    def record(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(_HEADERS_RECEIVED):
            # HTTP/1.1 returns (version, status, reason, headers), HTTP/2 (status, headers).
            returned = info.get("return_value") or ()
            self.status = next((v for v in returned if isinstance(v, int)), 0)


class _SyncTrace(_ResponseStart):
    __slots__ = ()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        self.record(event, info)


class _AsyncTrace(_ResponseStart):
    __slots__ = ()

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        self.record(event, info)


def build_request(
    http: httpx.Client | httpx.AsyncClient, url: str, call: proto.Call, api_key: str | None
) -> httpx.Request:
    """The request for ``call`` at endpoint ``url``. The key goes on every request, so an
    injected HTTP client authenticates too.

    Userinfo in ``url`` (``http://user:pw@host``) is sent as Basic auth, as httpx would
    send it, but kept out of the request's URL, so that it never shows in httpx's own log
    lines, in ``repr(request)`` or in an error. ``api_key``'s Bearer header wins over it
    (the client refuses the two together). The request records when its answer starts
    (see :class:`_ResponseStart`), which :func:`translate_transport_error` reads.
    """
    try:
        target = httpx.URL(url + call.path)
    except httpx.InvalidURL:
        # httpx's message quotes the part it could not parse, which may be a password.
        raise InvalidInput(
            f"base_url {proto.redact_url(url)} is not a valid URL; write it as http://host:port"
        ) from None
    headers: dict[str, str] = {}
    if target.userinfo:
        pair = f"{target.username}:{target.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        target = target.copy_with(username=None, password=None)
    headers.update(proto.auth_headers(api_key))
    trace = _AsyncTrace() if isinstance(http, httpx.AsyncClient) else _SyncTrace()
    return http.build_request(
        call.method, target, json=call.json, headers=headers, extensions={"trace": trace}
    )


def _answer_status(request: httpx.Request) -> int | None:
    """The status of the answer to ``request`` if it started, else ``None``."""
    trace = request.extensions.get("trace")
    return trace.status if isinstance(trace, _ResponseStart) else None


def translate_transport_error(exc: httpx.RequestError, request: httpx.Request) -> Qwen3RerankError:
    """The one place where httpx's request errors become ours.

    No answer to the connection attempt (``ConnectTimeout``) means the endpoint is
    unreachable, like a refused connection: a :class:`RerankConnectionError`, retried
    elsewhere. ``PoolTimeout`` is local (too many requests for the pool). A read or
    write timeout means the server had the request: :class:`RerankTimeoutError`. An
    answer that broke off after its status line (the connection closed or reset
    mid-body, a body that cannot be decoded) means the request reached the model: a
    :class:`MalformedResponseError` saying it was not sent again. The URL shown is
    redacted (:func:`~qwen3_vllm_rerank._protocol.redact_url`).
    """
    url = proto.redact_url(str(request.url))
    timeouts = request.extensions.get("timeout", {})
    status = _answer_status(request)
    error: Qwen3RerankError
    if isinstance(exc, httpx.ConnectTimeout):
        error = RerankConnectionError(
            url, f"no answer to the connection attempt within {timeouts.get('connect')} s"
        )
    elif isinstance(exc, httpx.PoolTimeout):
        error = RerankTimeoutError(url, timeouts.get("pool"), kind="pool")
    elif isinstance(exc, httpx.TimeoutException):
        error = RerankTimeoutError(url, timeouts.get("read"))
    elif status is not None or isinstance(exc, httpx.DecodingError):
        answer = f"the answer (HTTP {status})" if status else "the answer"
        what = "could not be decoded" if isinstance(exc, httpx.DecodingError) else "broke off mid-body"
        error = MalformedResponseError(
            url,
            f"{answer} {what} ({type(exc).__name__}: {exc}). "
            "The request reached the server, so its batch may have been computed: it was not sent "
            "again (that could compute it twice). A proxy or a server restart can cut answers; "
            "call again if that is safe",
        )
    else:
        error = RerankConnectionError(url, f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc  # kept when the retry logic finally raises it
    return error


def http_error(call: proto.Call, response: httpx.Response) -> RerankHTTPError | None:
    """The error an answer stands for, or ``None`` for a success or a status the call tolerates."""
    if response.status_code in call.tolerate:
        return None
    return proto.status_error(response)


#: The closing tasks, held strongly (the event loop keeps only weak references): a pool
#: outlives a client dropped without ``aclose()`` until its loop ends, then closes.
_CLOSERS: set[asyncio.Task[None]] = set()


@dataclass(slots=True)
class _Bound:
    loop: asyncio.AbstractEventLoop
    http: httpx.AsyncClient
    closer: asyncio.Task[None]


class LoopBoundClient:
    """An owned ``httpx.AsyncClient`` per event loop, closed before its loop closes.

    Pooled connections belong to the loop that opened them. Used from a new loop (a
    second ``asyncio.run``), this opens a new pool; the old one was already closed by
    a small task that waits on its loop and closes the pool when the loop shuts down
    (``asyncio.run`` cancels leftover tasks before closing the loop), so no connection
    leaks and no "unclosed transport" warning appears.
    """

    def __init__(self, *, timeout: httpx.Timeout, limits: httpx.Limits) -> None:
        self._timeout = timeout
        self._limits = limits
        self._bound: _Bound | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        bound = self._bound
        if bound is None or bound.loop is not loop:
            http = httpx.AsyncClient(timeout=self._timeout, limits=self._limits)
            closer = loop.create_task(_close_at_loop_end(http), name="qwen3-vllm-rerank: close pool")
            # A loop closed without cancelling its tasks (``loop.close()`` by hand) never runs
            # this one; its pool is then left to the garbage collector, as it would be without
            # it. asyncio's "Task was destroyed but it is pending" would only be noise then.
            closer._log_destroy_pending = False  # type: ignore[attr-defined]
            _CLOSERS.difference_update([t for t in _CLOSERS if t.get_loop().is_closed()])
            _CLOSERS.add(closer)
            closer.add_done_callback(_CLOSERS.discard)
            self._bound = _Bound(loop, http, closer)
            return http
        return bound.http

    async def aclose(self) -> None:
        """Close the pool of the running loop; a pool of another, still running loop is
        closed by that loop's own task when it ends."""
        bound, self._bound = self._bound, None
        if bound is None:
            return
        if bound.loop is asyncio.get_running_loop():
            bound.closer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bound.closer
        elif not bound.loop.is_closed():
            bound.loop.call_soon_threadsafe(bound.closer.cancel)


async def _close_at_loop_end(http: httpx.AsyncClient) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await http.aclose()
        raise
