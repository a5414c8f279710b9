"""The fetcher's connections: only to addresses checked beforehand, and never past the deadline.

httpcore (the transport under httpx) is given a network backend that connects a host only to
the addresses the fetcher resolved and checked for it (no second lookup that a rebinding DNS
server could answer differently), and whose every connect, read, write and TLS handshake
waits at most until one total deadline: a server that trickles its headers a byte at a time
cannot hold a fetch past ``timeout``. The URL keeps its host, so TLS checks the certificate
against the name.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import httpcore

from .._streams import AsyncBoundedStream, BoundedStream, Phase
from ._addresses import parse_address

# The timeout parameters are httpcore's interface, bounded here by the deadline.
# ruff: noqa: ASYNC109

__all__ = [
    "RESOLVER",
    "TRANSPORT_ERRORS",
    "AsyncPinnedBackend",
    "Deadline",
    "PinnedBackend",
    "Resolver",
    "aresolve",
    "resolve",
]

#: Everything the transport raises for a failed exchange (not programmer errors).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
    OSError,  # includes ssl.SSLError and socket.gaierror
    UnicodeError,  # a host name that does not encode
    ssl.CertificateError,
)


class Deadline:
    """One total time limit: :meth:`left` is what remains, never more than ``cap``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        """Seconds left (at most ``cap``); raises ``httpcore.ReadTimeout`` once none are."""
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise httpcore.ReadTimeout(f"the total deadline of {self.seconds} s passed")
        return remaining if cap is None else min(cap, remaining)

    def bound(self, phase: Phase, timeout: float | None) -> float:
        """A socket operation's timeout (:class:`~.._streams.Bound`): the time left, whatever the phase."""
        return self.left(timeout)

    def timeouts(self) -> dict[str, float]:
        """httpcore's per-request ``timeout`` extension, all set to the time left."""
        left = self.left()
        return {"connect": left, "read": left, "write": left, "pool": left}


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[str]:
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def _lookup(host: str, port: int) -> list[tuple[Any, ...]]:
    # socket.getaddrinfo looked up at each call: a test stalls it there (a DNS server that never
    # answers is a fault a real one cannot produce on demand).
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


class Resolver:
    """Name lookups in a bounded pool of threads, none of them ever waited for past a deadline.

    ``getaddrinfo`` cannot be cancelled: a lookup whose caller gave up keeps its thread until
    the system resolver answers or gives up. So a lookup is started only when a thread is free
    for it at once (never queued behind stuck ones) and fewer than ``per_host`` lookups of the
    same name are still running; otherwise it fails at once. A name that never answers holds at
    most ``per_host`` threads, and every other host (and every IP literal, never looked up)
    is resolved as fast as ever.
    """

    def __init__(self, threads: int = 32, per_host: int = 2) -> None:
        self._threads = threads
        self._per_host = per_host
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="qwen3-image-resolve")
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def running(self, host: str | None = None) -> int:
        """Lookups still running (of ``host``, or of every host)."""
        with self._lock:
            return sum(self._running.values()) if host is None else self._running.get(host, 0)

    def start(self, host: str, port: int) -> Future[list[tuple[Any, ...]]]:
        """A lookup of ``host`` started on a free thread; ``httpcore.ConnectError`` when none may be."""
        with self._lock:
            if sum(self._running.values()) >= self._threads:
                raise httpcore.ConnectError(f"not resolving {host}: {self._threads} lookups still unanswered")
            if self._running.get(host, 0) >= self._per_host:
                raise httpcore.ConnectError(
                    f"not resolving {host}: {self._per_host} lookups of it still unanswered"
                )
            self._running[host] = self._running.get(host, 0) + 1
        try:
            future = self._pool.submit(_lookup, host, port)
        except BaseException:
            self._finished(host)
            raise
        future.add_done_callback(lambda _: self._finished(host))
        return future

    def _finished(self, host: str) -> None:
        with self._lock:
            left = self._running.get(host, 1) - 1
            if left:
                self._running[host] = left
            else:
                self._running.pop(host, None)


RESOLVER = Resolver()


_LEGACY_IPV4 = re.compile(r"[0-9a-fA-Fx.]+")


def _literal(host: str) -> list[str] | None:
    """The address an IP literal names (IPv6, dotted IPv4, or a legacy IPv4 form such as
    ``127.1`` or ``0x7f000001`` that ``getaddrinfo`` would read as one), found without any
    lookup; ``None`` for a name."""
    if parse_address(host) is not None:
        return [host]
    if not _LEGACY_IPV4.fullmatch(host):
        return None
    try:
        return [socket.inet_ntoa(socket.inet_aton(host))]
    except (OSError, UnicodeError, ValueError):
        return None


def resolve(host: str, port: int, deadline: Deadline) -> list[str]:
    """The addresses ``host`` resolves to, waiting at most until ``deadline``."""
    literal = _literal(host)
    if literal is not None:
        return literal
    future = RESOLVER.start(host, port)
    try:
        return _addresses(future.result(timeout=deadline.left()))
    except FutureTimeout as exc:
        raise httpcore.ConnectTimeout(f"resolving {host} took over {deadline.seconds} s") from exc


async def aresolve(host: str, port: int, deadline: Deadline) -> list[str]:
    """:func:`resolve` for asyncio: the same pool, awaited (never the loop's default executor,
    which reading files shares)."""
    literal = _literal(host)
    if literal is not None:
        return literal
    future = RESOLVER.start(host, port)
    try:
        async with asyncio.timeout(deadline.left()):
            infos = await asyncio.wrap_future(future)
        return _addresses(infos)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"resolving {host} took over {deadline.seconds} s") from exc


class _Pins:
    """host -> the checked addresses to connect it to."""

    def __init__(self) -> None:
        self._pins: dict[str, tuple[str, ...]] = {}

    def pin(self, host: str, addresses: Iterable[str]) -> None:
        self._pins[host] = tuple(addresses)

    def addresses(self, host: str) -> tuple[str, ...]:
        addresses = self._pins.get(host)
        if not addresses:
            raise httpcore.ConnectError(f"{host} was not checked before connecting")
        return addresses


class PinnedBackend(httpcore.NetworkBackend):
    """Connects each host only to the addresses pinned for it (:meth:`pin`), within ``deadline``."""

    def __init__(self, deadline: Deadline) -> None:
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline
        self._pins = _Pins()
        self.pin = self._pins.pin

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in self._pins.addresses(host):
            try:
                stream = self._inner.connect_tcp(
                    address, port, self._deadline.left(timeout), local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return BoundedStream(stream, self._deadline.bound)
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("the image fetcher never connects to a Unix socket")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self._deadline.left()))


class AsyncPinnedBackend(httpcore.AsyncNetworkBackend):
    """:class:`PinnedBackend` for asyncio."""

    def __init__(self, deadline: Deadline) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._deadline = deadline
        self._pins = _Pins()
        self.pin = self._pins.pin

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in self._pins.addresses(host):
            try:
                stream = await self._inner.connect_tcp(
                    address, port, self._deadline.left(timeout), local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return AsyncBoundedStream(stream, self._deadline.bound)
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the image fetcher never connects to a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, self._deadline.left()))
