"""Sockets whose every operation gets its timeout from a bound: the one httpcore stream wrapper that
the client's per-attempt deadline (``client/_transport.py``) and the image fetcher's total deadline
(``images/_network.py``) share."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, Literal

import httpcore

# The timeout parameters are httpcore's interface, bounded here.
# ruff: noqa: ASYNC109

__all__ = ["AsyncBoundedStream", "Bound", "BoundedStream", "Phase", "Seen"]

Phase = Literal["connect", "write", "read"]
#: ``(phase, the timeout httpcore asked for) -> the timeout to use``.
Bound = Callable[[Phase, float | None], float | None]
#: Called with every chunk read, returns it (to record that an answer started, say).
Seen = Callable[[bytes], bytes]


def _unchanged(data: bytes) -> bytes:
    return data


class BoundedStream(httpcore.NetworkStream):
    """``inner`` with each read, write and TLS handshake bounded by ``bound``; reads pass ``seen``."""

    def __init__(self, inner: httpcore.NetworkStream, bound: Bound, seen: Seen = _unchanged) -> None:
        self._inner = inner
        self._bound = bound
        self._seen = seen

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._seen(self._inner.read(max_bytes, self._bound("read", timeout)))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._bound("write", timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._bound("connect", timeout))
        return BoundedStream(inner, self._bound, self._seen)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class AsyncBoundedStream(httpcore.AsyncNetworkStream):
    """:class:`BoundedStream` for asyncio: the same bounds, awaited."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, bound: Bound, seen: Seen = _unchanged) -> None:
        self._inner = inner
        self._bound = bound
        self._seen = seen

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._seen(await self._inner.read(max_bytes, self._bound("read", timeout)))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, self._bound("write", timeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.start_tls(ssl_context, server_hostname, self._bound("connect", timeout))
        return AsyncBoundedStream(inner, self._bound, self._seen)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
