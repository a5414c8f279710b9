"""HTTP plumbing shared by the sync and async clients: building requests, reading
answers into our errors, the per-attempt deadline, and the per-event-loop lifetime of an
owned async connection pool.

Everything that can be written once for both clients is here; the clients keep only
the sending and the sleeping, which differ.

Each request carries an :class:`_Attempt` as httpcore's ``trace`` extension
(https://www.python-httpx.org/advanced/extensions/#trace). On the connection pools this
module builds (:func:`sync_client`, :class:`LoopBoundClient`) every socket is wrapped
(:class:`_SyncBackend` / :class:`_AsyncBackend`): each connect, write and read of the
attempt gets at most the time left of its deadline, and the attempt learns whether any
byte of the answer arrived. That is what decides a retry (:func:`translate_transport_error`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from .. import _protocol as proto
from .._redaction import redact_url
from .._streams import AsyncBoundedStream, Bound, BoundedStream, Phase
from ..errors import (
    InvalidInput,
    MalformedResponseError,
    Qwen3RerankError,
    RerankConnectionError,
    RerankHTTPError,
    RerankTimeoutError,
)

__all__ = [
    "LoopBoundClient",
    "build_request",
    "http_error",
    "limits",
    "sync_client",
    "translate_transport_error",
]

# The timeout parameters are httpcore's interface, bounded here by the attempt's deadline.
# ruff: noqa: ASYNC109

#: The end of httpcore's trace event for a received status line and headers (HTTP/1.1 and 2).
_HEADERS_RECEIVED = ".receive_response_headers.complete"
#: The start of sending a request on a connection (HTTP/1.1 and 2): from here the server may have it.
_SENDING = ".send_request_headers.started"
#: The answer was read to its end, or dropped: this attempt does no more I/O.
_CLOSED = ".response_closed.complete"

_TIMEOUTS: dict[Phase, type[httpcore.TimeoutException]] = {
    "connect": httpcore.ConnectTimeout,
    "write": httpcore.WriteTimeout,
    "read": httpcore.ReadTimeout,
}


def limits(max_concurrency: int, endpoints: int) -> httpx.Limits:
    """A pool large enough for ``max_concurrency`` requests to every endpoint."""
    pool = max_concurrency * endpoints
    return httpx.Limits(max_connections=pool, max_keepalive_connections=pool)


class _Attempt:
    """What one try of one request did on the wire, and its deadline.

    Set from httpcore's trace events (which run in the thread or task doing the I/O, so
    the attempt is also made the current one there, see :data:`_CURRENT`) and, on the
    pools this module builds, from every socket operation:

    - ``sent``: the request started going out on a connection, so the server may have it;
    - ``status``: the status line and headers arrived;
    - ``observed``: this module's socket wrapper carried the attempt, so ``received`` is known;
    - ``received``: at least one byte of the answer arrived (even half a status line);
    - ``deadline_hit``: a socket operation was cut short, or refused, by the deadline.

    The deadline is ``started + total``; ``started`` is the attempt's first traced event
    (opening or reusing a connection), ``total`` the pool's overall timeout.
    """

    __slots__ = ("deadline_hit", "observed", "received", "sent", "started", "status", "total")

    def __init__(self) -> None:
        self.status: int | None = None
        self.sent = False
        self.observed = False
        self.received = False
        self.deadline_hit = False
        self.started: float | None = None
        self.total: float | None = None

    def record(self, event: str, info: dict[str, Any]) -> None:
        if self.started is None:
            self.started = time.monotonic()
        if event.endswith(_CLOSED):
            _CURRENT.set(None)
            return
        _CURRENT.set(self)
        if event.endswith(_SENDING):
            self.sent = True
        elif event.endswith(_HEADERS_RECEIVED):
            # HTTP/1.1 returns (version, status, reason, headers), HTTP/2 (status, headers).
            returned = info.get("return_value") or ()
            self.status = next((v for v in returned if isinstance(v, int)), 0)

    def bound(self, phase: Phase, timeout: float | None, total: float | None) -> float | None:
        """The timeout for one socket operation: ``timeout``, or the time left if shorter.
        Raises httpcore's timeout for ``phase`` when none is left."""
        self.observed = True
        if total is None:
            return timeout
        if self.started is None:
            self.started = time.monotonic()
        self.total = total
        left = self.started + total - time.monotonic()
        if left <= 0:
            self.deadline_hit = True
            raise _TIMEOUTS[phase](f"the request took over its {total:g} s deadline")
        if timeout is None or left < timeout:
            self.deadline_hit = True  # if this operation times out, the deadline did it
            return left
        return timeout

    def saw(self, data: bytes) -> bytes:
        if data:
            self.received = True
        return data


class _SyncTrace(_Attempt):
    __slots__ = ()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        self.record(event, info)


class _AsyncTrace(_Attempt):
    __slots__ = ()

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        self.record(event, info)


#: The attempt whose I/O the current thread (sync) or task (async) is doing, if any.
_CURRENT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "qwen3_vllm_rerank_attempt", default=None
)


def _bound(phase: Phase, timeout: float | None, total: float | None) -> float | None:
    attempt = _CURRENT.get()
    return timeout if attempt is None else attempt.bound(phase, timeout, total)


def _saw(data: bytes) -> bytes:
    attempt = _CURRENT.get()
    return data if attempt is None else attempt.saw(data)


def _stream_bound(total: float | None) -> Bound:
    """The bound of one attempt's socket: the current attempt's deadline, over ``total`` seconds."""
    return lambda phase, timeout: _bound(phase, timeout, total)


_SocketOptions = Iterable[Any]  # httpcore's SOCKET_OPTION, passed through


class _SyncBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, total: float | None) -> None:
        self._inner = inner
        self._total = total

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: _SocketOptions | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bound("connect", timeout, self._total)
        stream = self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return BoundedStream(stream, _stream_bound(self._total), _saw)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: _SocketOptions | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bound("connect", timeout, self._total)
        stream = self._inner.connect_unix_socket(path, bounded, socket_options)
        return BoundedStream(stream, _stream_bound(self._total), _saw)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend, total: float | None) -> None:
        self._inner = inner
        self._total = total

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: _SocketOptions | None = None,
    ) -> httpcore.AsyncNetworkStream:
        bounded = _bound("connect", timeout, self._total)
        stream = await self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return AsyncBoundedStream(stream, _stream_bound(self._total), _saw)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: _SocketOptions | None = None
    ) -> httpcore.AsyncNetworkStream:
        bounded = _bound("connect", timeout, self._total)
        stream = await self._inner.connect_unix_socket(path, bounded, socket_options)
        return AsyncBoundedStream(stream, _stream_bound(self._total), _saw)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _guard(pool: object, wrap: Any, total: float | None) -> None:
    """Wrap the network backend of httpx's connection ``pool`` (httpcore's
    ``_network_backend``, which every new connection of the pool uses). Without that
    attribute (another httpcore) the pool stays as it is, and the client treats its
    attempts as it treats those of an ``http_client`` you pass (see :func:`translate_transport_error`)."""
    inner = getattr(pool, "_network_backend", None)
    if inner is not None:
        pool._network_backend = wrap(inner, total)  # type: ignore[attr-defined]


def sync_client(timeout: httpx.Timeout, limits: httpx.Limits) -> httpx.Client:
    """The ``httpx.Client`` a :class:`~qwen3_vllm_rerank.RerankClient` opens: its sockets
    bound each attempt by ``timeout.read`` overall (see :class:`_Attempt`)."""
    transport = httpx.HTTPTransport(limits=limits)
    _guard(getattr(transport, "_pool", None), _SyncBackend, timeout.read)
    return httpx.Client(timeout=timeout, transport=transport)


def _async_client(timeout: httpx.Timeout, limits: httpx.Limits) -> httpx.AsyncClient:
    """:func:`sync_client` for asyncio."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    _guard(getattr(transport, "_pool", None), _AsyncBackend, timeout.read)
    return httpx.AsyncClient(timeout=timeout, transport=transport)


def build_request(
    http: httpx.Client | httpx.AsyncClient, url: str, call: proto.Call, api_key: str | None
) -> httpx.Request:
    """The request for ``call`` at endpoint ``url``. The key goes on every request, so an
    injected HTTP client authenticates too.

    Userinfo in ``url`` (``http://user:pw@host``) is sent as Basic auth, as httpx would
    send it, but kept out of the request's URL, so that it never shows in httpx's own log
    lines, in ``repr(request)`` or in an error. ``api_key``'s Bearer header wins over it
    (the client refuses the two together). The request records what its attempt did on
    the wire (see :class:`_Attempt`), which :func:`translate_transport_error` reads.
    """
    try:
        target = httpx.URL(url + call.path)
    except httpx.InvalidURL:
        # httpx's message quotes the part it could not parse, which may be a password.
        raise InvalidInput(
            f"base_url {redact_url(url)} is not a valid URL; write it as http://host:port"
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


def _attempt(request: httpx.Request) -> _Attempt:
    trace = request.extensions.get("trace")
    return trace if isinstance(trace, _Attempt) else _Attempt()


def translate_transport_error(exc: httpx.RequestError, request: httpx.Request) -> Qwen3RerankError:
    """The one place where httpx's request errors become ours, and where it is decided
    whether the request may be sent again (only a :class:`RerankConnectionError` is).

    The rule: a request is sent again only if it certainly produced no answer: the
    connection could not be opened (refused, ``ConnectTimeout``), or it failed before any
    byte of the answer arrived. Once one byte arrived (even half a status line), the
    server had the request and may have computed the batch: a
    :class:`MalformedResponseError` saying it was not sent again. Whether a byte arrived is
    known on the pools this module builds; with an ``http_client`` you pass (or a proxy
    mounted from the environment) it is not, so there a failure after the request started
    going out is not retried either. A transport that reports no events at all (such as
    ``httpx.MockTransport``) is taken at its word: its transport errors count as
    unreachable. ``PoolTimeout`` is local (too many requests for the pool). A read or write
    timeout, or the attempt's deadline, means the server had the request:
    :class:`RerankTimeoutError`, not retried. The URL shown is redacted
    (:func:`~qwen3_vllm_rerank._redaction.redact_url`).
    """
    url = redact_url(str(request.url))
    timeouts = request.extensions.get("timeout", {})
    attempt = _attempt(request)
    status = attempt.status
    error: Qwen3RerankError
    if isinstance(exc, httpx.ConnectTimeout):
        error = RerankConnectionError(
            url, f"no answer to the connection attempt within {timeouts.get('connect')} s"
        )
    elif isinstance(exc, httpx.PoolTimeout):
        error = RerankTimeoutError(url, timeouts.get("pool"), kind="pool")
    elif isinstance(exc, httpx.TimeoutException):
        # The whole attempt's deadline, or (on a pool without it) httpx's per-read timeout.
        error = RerankTimeoutError(url, attempt.total if attempt.deadline_hit else timeouts.get("read"))
    elif isinstance(exc, httpx.ConnectError):
        error = RerankConnectionError(url, f"{type(exc).__name__}: {exc}")
    elif status is not None or attempt.received or isinstance(exc, httpx.DecodingError):
        if status:
            answer = f"the answer (HTTP {status})"
            what = "broke off mid-body"
        else:
            answer = "the answer"
            what = "broke off before its headers ended" if attempt.received else "broke off mid-body"
        if isinstance(exc, httpx.DecodingError):
            what = "could not be decoded"
        error = MalformedResponseError(
            url,
            f"{answer} {what} ({type(exc).__name__}: {exc}). "
            "The request reached the server, so its batch may have been computed: it was not sent "
            "again (that could compute it twice). A proxy or a server restart can cut answers; "
            "call again if that is safe",
        )
    elif attempt.sent and not attempt.observed:
        error = MalformedResponseError(
            url,
            f"the connection failed after the request was sent ({type(exc).__name__}: {exc}). "
            "Through an http_client you pass (or a proxy) this client cannot tell whether the "
            "server had started answering, so the request was not sent again (that could compute "
            "the batch twice); let the client open its own connections to have such failures "
            "retried, or call again if that is safe",
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
            http = _async_client(self._timeout, self._limits)
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
