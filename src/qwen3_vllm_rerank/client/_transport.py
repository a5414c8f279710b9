"""HTTP plumbing shared by the sync and async clients: building requests, reading
answers into our errors, and the per-event-loop lifetime of an owned async connection pool.

Everything that can be written once for both clients is here; the clients keep only
the sending and the sleeping, which differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import httpx

from .. import _protocol as proto
from ..errors import Qwen3RerankError, RerankConnectionError, RerankHTTPError, RerankTimeoutError

__all__ = ["LoopBoundClient", "build_request", "http_error", "limits", "translate_transport_error"]

logger = logging.getLogger("qwen3_vllm_rerank")


def limits(max_concurrency: int, endpoints: int) -> httpx.Limits:
    """A pool large enough for ``max_concurrency`` requests to every endpoint."""
    pool = max_concurrency * endpoints
    return httpx.Limits(max_connections=pool, max_keepalive_connections=pool)


def build_request(
    http: httpx.Client | httpx.AsyncClient, url: str, call: proto.Call, api_key: str | None
) -> httpx.Request:
    """The request for ``call`` at endpoint ``url``. The key goes on every request, so an
    injected HTTP client authenticates too."""
    return http.build_request(
        call.method, url + call.path, json=call.json, headers=proto.auth_headers(api_key)
    )


def translate_transport_error(exc: httpx.TransportError, request: httpx.Request) -> Qwen3RerankError:
    """The one place where httpx's transport errors become ours.

    No answer to the connection attempt (``ConnectTimeout``) means the endpoint is
    unreachable, like a refused connection: a :class:`RerankConnectionError`, retried
    elsewhere. ``PoolTimeout`` is local (too many requests for the pool). A read or
    write timeout means the server had the request: :class:`RerankTimeoutError`.
    """
    url = str(request.url)
    timeouts = request.extensions.get("timeout", {})
    error: Qwen3RerankError
    if isinstance(exc, httpx.ConnectTimeout):
        error = RerankConnectionError(
            url, f"no answer to the connection attempt within {timeouts.get('connect')} s"
        )
    elif isinstance(exc, httpx.PoolTimeout):
        error = RerankTimeoutError(url, timeouts.get("pool"), kind="pool")
    elif isinstance(exc, httpx.TimeoutException):
        error = RerankTimeoutError(url, timeouts.get("read"))
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
