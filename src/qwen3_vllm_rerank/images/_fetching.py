"""The opt-in fetcher for image URLs named by documents: :class:`UrlFetcher`."""

from __future__ import annotations

import asyncio
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._protocol import redact_url
from ..errors import InvalidInput
from ._addresses import HostRules, normalize_host, parse_address, refused_addresses
from ._failures import UnusableImage, logger

if TYPE_CHECKING:
    import httpcore

    from ._network import Deadline


__all__ = ["FETCH_FAILED", "UrlFetcher"]

#: What the caller is told about any refused or failed fetch: one text, so that errors cannot
#: map a network (which hosts answer, which ports are open, what they serve).
FETCH_FAILED = (
    "the image URL could not be fetched (refused or failed); the reason is logged at debug level "
    "by the qwen3_vllm_rerank.images logger"
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = frozenset(
    {"host", "accept-encoding", "content-length", "transfer-encoding", "connection"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Printable ASCII a request target may carry as is; anything else is percent-encoded.
_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) not in '"<>\\^`{|}')


class _Refused(Exception):
    """A fetch refused or failed, with the detail that goes to the debug log only."""


@dataclass(frozen=True, slots=True)
class _Target:
    """One request of a fetch: where it goes and which headers it carries."""

    scheme: str
    host: str  # normalized: lower case, no brackets
    port: int
    target: str  # path and query
    origin: tuple[str, str, int]

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port == _DEFAULT_PORTS[self.scheme] else f"{shown}:{self.port}"


@dataclass(frozen=True, slots=True, repr=False)
class UrlFetcher:
    """The opt-in to fetch image URLs (``http``/``https``) by this client, never by the server;
    and, with ``file_roots``, to read ``file:`` URLs from those directories.

    A document's URL is chosen by whoever wrote the document, so by default the fetcher reaches
    only public addresses: every address a host resolves to must be global (no loopback,
    private, link-local, unique-local, multicast, reserved or unspecified address, nor an IPv6
    form embedding one such as ``::ffff:127.0.0.1``). Each host is resolved once, checked, and
    connected to at the checked address (a rebinding DNS server gets no second answer);
    redirects are followed by the fetcher itself, each hop checked the same way. No proxy from
    the environment is used (it would resolve names itself).

    Args:
        timeout: seconds for the whole fetch, total: resolving, connecting, TLS, headers,
            every redirect and the body.
        max_bytes: the most bytes a body may have (refused from ``Content-Length`` when
            declared, cut off when it grows past it). Responses must not be compressed: the
            fetcher asks for ``Accept-Encoding: identity`` and refuses any other
            ``Content-Encoding`` (a few kB of gzip can decode to gigabytes).
        max_redirects: redirects followed per fetch.
        allowed_hosts: ``None`` (the default): every public address, as above. A tuple of host
            names (exact ``cdn.example.com``, or ``*.example.com`` for its subdomains) and IP
            networks (``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``): then only those, private ones
            included, on any port: a host listed by name is fetched whatever it resolves to, any
            other host only if every address it resolves to lies in a listed network. ``()``
            fetches no URL at all (``file:`` URLs can still be read from ``file_roots``).
        headers: sent with each request. ``User-Agent`` goes to every host. Any other header
            (e.g. ``Authorization`` for the application's CDN) needs ``allowed_hosts`` and goes
            only to the host, port and scheme of the document's URL itself, never across a
            redirect to another one. ``repr`` shows header names, never their values.
        file_roots: directories ``file:`` URLs may be read from (``()``, the default: none, a
            ``file:`` URL is refused). Only a regular file whose real path (symlinks resolved)
            lies inside one of them is read.

    Invalid settings raise :class:`~qwen3_vllm_rerank.errors.InvalidInput`. Pass one to the
    client (``image_fetcher=``) or to :func:`prepare_image`.
    """

    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    allowed_hosts: tuple[str, ...] | None = None
    headers: tuple[tuple[str, str], ...] = (("User-Agent", "qwen3-vllm-rerank"),)
    file_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not self.timeout > 0
        ):
            raise InvalidInput(f"UrlFetcher timeout must be a number of seconds > 0, got {self.timeout!r}")
        for name in ("max_bytes", "max_redirects"):
            value = getattr(self, name)
            least = 1 if name == "max_bytes" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidInput(f"UrlFetcher {name} must be an integer >= {least}, got {value!r}")
        if self.allowed_hosts is not None:
            if isinstance(self.allowed_hosts, str):
                raise InvalidInput(
                    f"UrlFetcher allowed_hosts must be a tuple of host names or networks, got the string "
                    f"{self.allowed_hosts!r}: write allowed_hosts=({self.allowed_hosts!r},)"
                )
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
            HostRules.parse(self.allowed_hosts)
        object.__setattr__(self, "headers", self._checked_headers())
        object.__setattr__(self, "file_roots", self._checked_roots())

    def _checked_headers(self) -> tuple[tuple[str, str], ...]:
        checked: list[tuple[str, str]] = []
        for pair in self.headers:
            if not (
                isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
            ):
                raise InvalidInput(
                    f"UrlFetcher headers must be (name, value) pairs of str, got {type(pair).__name__}"
                )
            name, value = pair
            if not _TOKEN.match(name) or any(c in value for c in "\r\n\0") or not value.isascii():
                raise InvalidInput(f"UrlFetcher header {name!r} is not a valid header name and ASCII value")
            if name.lower() in _RESERVED_HEADERS:
                raise InvalidInput(f"UrlFetcher header {name!r} is set by the fetcher itself; leave it out")
            if name.lower() != "user-agent" and self.allowed_hosts is None:
                raise InvalidInput(
                    f"UrlFetcher header {name!r} would go to whatever host a document names: headers other "
                    "than User-Agent are sent only to hosts of allowed_hosts; give allowed_hosts=(...) "
                    "naming the hosts they are for"
                )
            checked.append((name, value))
        return tuple(checked)

    def _checked_roots(self) -> tuple[str, ...]:
        if isinstance(self.file_roots, str | os.PathLike):
            raise InvalidInput("UrlFetcher file_roots must be a tuple of directories, not one path")
        roots: list[str] = []
        for root in self.file_roots:
            if not isinstance(root, str | os.PathLike):
                raise InvalidInput(f"UrlFetcher file_roots entries must be paths, got {type(root).__name__}")
            text = os.fspath(root)
            if not isinstance(text, str) or not os.path.isabs(text):
                raise InvalidInput(f"UrlFetcher file_roots entries must be absolute paths, got {root!r}")
            roots.append(os.path.realpath(text))
        return tuple(roots)

    def __repr__(self) -> str:
        names = [name for name, _ in self.headers]
        return (
            f"UrlFetcher(timeout={self.timeout!r}, max_bytes={self.max_bytes!r}, "
            f"max_redirects={self.max_redirects!r}, allowed_hosts={self.allowed_hosts!r}, "
            f"headers=<values hidden: {', '.join(names) or 'none'}>, file_roots={self.file_roots!r})"
        )

    # -- pure steps, shared by fetch and afetch ------------------------------------------

    def _rules(self) -> HostRules | None:
        return None if self.allowed_hosts is None else HostRules.parse(self.allowed_hosts)

    def _target(self, url: str, first: _Target | None) -> _Target:
        """Where ``url`` points, refused when its scheme, shape or host may not be fetched."""
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise _Refused(f"malformed URL ({exc})") from exc
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise _Refused(f"scheme {scheme!r} is not fetched (only http and https)")
        if parts.username is not None or parts.password is not None:
            raise _Refused("the URL carries credentials (user:password@); such a URL is not fetched")
        host = normalize_host(parts.hostname or "")
        if not host:
            raise _Refused("the URL has no host")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise _Refused(f"the host name does not encode ({exc})") from exc
        rules = self._rules()
        if rules is not None and not rules.names and not rules.suffixes and not rules.networks:
            raise _Refused("allowed_hosts=() fetches no URL")
        if port is None:
            port = _DEFAULT_PORTS[scheme]
        target = urllib.parse.quote(parts.path or "/", safe=_SAFE)
        if parts.query:
            target += "?" + urllib.parse.quote(parts.query, safe=_SAFE)
        origin = (scheme, host, port)
        return _Target(scheme, host, port, target, first.origin if first is not None else origin)

    def _check_addresses(self, target: _Target, resolved: list[str]) -> list[str]:
        addresses = [parse_address(text) for text in resolved]
        if not addresses or any(address is None for address in addresses):
            raise _Refused(f"{target.host} resolved to no usable address ({resolved})")
        refused = refused_addresses(target.host, [a for a in addresses if a is not None], self._rules())
        if refused:
            which = "outside allowed_hosts" if self.allowed_hosts is not None else "not public"
            raise _Refused(f"{target.host} resolves to {', '.join(map(str, refused))}: {which}")
        return resolved

    def _request_headers(self, target: _Target) -> list[tuple[bytes, bytes]]:
        same_origin = (target.scheme, target.host, target.port) == target.origin
        headers = [(b"Host", target.host_header.encode("ascii")), (b"Accept-Encoding", b"identity")]
        for name, value in self.headers:
            if name.lower() == "user-agent" or same_origin:
                headers.append((name.encode("ascii"), value.encode("ascii")))
        return headers

    def _url(self, target: _Target) -> httpcore.URL:
        import httpcore

        return httpcore.URL(
            scheme=target.scheme.encode("ascii"),
            host=target.host.encode("ascii"),
            port=target.port,
            target=target.target.encode("ascii"),
        )

    def _next(self, status: int, headers: list[tuple[bytes, bytes]], url: str) -> str | None:
        """``None`` to read the body of a 200; the next URL for a redirect; refused otherwise."""
        fields = {name.lower(): value for name, value in headers}
        if status in _REDIRECTS:
            location = fields.get(b"location")
            if not location:
                raise _Refused(f"HTTP {status} without a Location")
            return urllib.parse.urljoin(url, location.decode("latin-1"))
        if status != 200:
            raise _Refused(f"HTTP {status}")
        encoding = fields.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"", b"identity"):
            raise _Refused(f"Content-Encoding {encoding.decode('latin-1')!r} refused (only identity)")
        declared = fields.get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            raise _Refused(f"Content-Length {int(declared)} is over max_bytes={self.max_bytes}")
        return None

    def _add(self, body: bytearray, chunk: bytes) -> None:
        body += chunk
        if len(body) > self.max_bytes:
            raise _Refused(f"the body grew over max_bytes={self.max_bytes}")

    def _failed(self, url: str, label: str, detail: object) -> UnusableImage:
        logger.debug("%s: fetching %s: %s", label, redact_url(url), detail)
        return UnusableImage(label, FETCH_FAILED)

    # -- sync and async shells -----------------------------------------------------------

    def fetch(self, url: str, label: str = "image") -> bytes:
        """The body at ``url``; :class:`InvalidInput` (one generic message) when refused or failed."""
        from ._network import TRANSPORT_ERRORS, Deadline

        try:
            return self._fetch(url, Deadline(self.timeout))
        except _Refused as exc:
            raise self._failed(url, label, exc) from None
        except TRANSPORT_ERRORS as exc:
            raise self._failed(url, label, f"{type(exc).__name__}: {exc}") from None

    def _fetch(self, url: str, deadline: Deadline) -> bytes:
        import httpcore

        from ._network import PinnedBackend, resolve

        backend = PinnedBackend(deadline)
        first: _Target | None = None
        with httpcore.ConnectionPool(network_backend=backend, max_connections=1) as pool:
            for _ in range(self.max_redirects + 1):
                target = self._target(url, first)
                first = first or target
                backend.pin(
                    target.host, self._check_addresses(target, resolve(target.host, target.port, deadline))
                )
                with pool.stream(
                    "GET",
                    self._url(target),
                    headers=self._request_headers(target),
                    extensions={"timeout": deadline.timeouts()},
                ) as response:
                    following = self._next(response.status, response.headers, url)
                    if following is None:
                        body = bytearray()
                        for chunk in response.iter_stream():
                            self._add(body, chunk)
                        return bytes(body)
                url = following
        raise _Refused(f"more than max_redirects={self.max_redirects} redirects")

    async def afetch(self, url: str, label: str = "image") -> bytes:
        """:meth:`fetch` for asyncio."""
        from ._network import TRANSPORT_ERRORS, Deadline

        deadline = Deadline(self.timeout)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._afetch(url, deadline)
        except _Refused as exc:
            raise self._failed(url, label, exc) from None
        except TimeoutError as exc:
            raise self._failed(url, label, f"over the total timeout of {self.timeout} s ({exc})") from None
        except TRANSPORT_ERRORS as exc:
            raise self._failed(url, label, f"{type(exc).__name__}: {exc}") from None

    async def _afetch(self, url: str, deadline: Deadline) -> bytes:
        import httpcore

        from ._network import AsyncPinnedBackend, aresolve

        backend = AsyncPinnedBackend(deadline)
        first: _Target | None = None
        async with httpcore.AsyncConnectionPool(network_backend=backend, max_connections=1) as pool:
            for _ in range(self.max_redirects + 1):
                target = self._target(url, first)
                first = first or target
                resolved = await aresolve(target.host, target.port, deadline)
                backend.pin(target.host, self._check_addresses(target, resolved))
                async with pool.stream(
                    "GET",
                    self._url(target),
                    headers=self._request_headers(target),
                    extensions={"timeout": deadline.timeouts()},
                ) as response:
                    following = self._next(response.status, response.headers, url)
                    if following is None:
                        body = bytearray()
                        async for chunk in response.aiter_stream():
                            self._add(body, chunk)
                        return bytes(body)
                url = following
        raise _Refused(f"more than max_redirects={self.max_redirects} redirects")
