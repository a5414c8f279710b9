"""The opt-in fetcher for image URLs named by documents: :class:`UrlFetcher`."""

from __future__ import annotations

import asyncio
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from .._redaction import redact_url
from ..errors import InvalidInput
from ._addresses import HostRules, normalize_host, parse_address, refused_addresses
from ._failures import UnusableImage, logger

if TYPE_CHECKING:
    import httpcore

    from ._network import Deadline


__all__ = ["FETCH_FAILED", "OriginHeaders", "UrlFetcher", "fetch_failed"]

#: What the caller is told about any refused or failed fetch: one text, so that errors cannot
#: map a network (which hosts answer, which ports are open, what they serve).
FETCH_FAILED = (
    "the image URL could not be fetched (refused or failed); the reason is logged at debug level "
    "by the qwen3_vllm_rerank.images logger"
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = frozenset(
    {"host", "accept-encoding", "content-length", "transfer-encoding", "connection", "user-agent"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Printable ASCII a request target may carry as is; anything else is percent-encoded.
_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) not in '"<>\\^`{|}')


#: ``UrlFetcher.headers`` once checked: ``(origin, ((name, value), ...))`` sorted by origin, each
#: origin spelled ``scheme://host:port`` (lower case, IDNA, default port filled in).
OriginHeaders: TypeAlias = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

_KEY_BY_ORIGIN = (
    "UrlFetcher headers are keyed by origin, so that a credential goes only to the one scheme, host "
    "and port it is for: write headers={{'https://cdn.example.com': {{{name!r}: ...}}}} (the port "
    "defaults to 443 for https, 80 for http); User-Agent, sent to every host, is user_agent=..."
)


class _Refused(Exception):
    """A fetch refused or failed, with the detail that goes to the debug log only."""


def fetch_failed(url: str, label: str, detail: object) -> UnusableImage:
    """The one error for an image URL that was refused, failed, or did not give a usable image
    (the detail logged at debug)."""
    logger.debug("%s: fetching %s: %s", label, redact_url(url), detail)
    return UnusableImage(label, FETCH_FAILED)


def _origin_key(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _idna(host: str) -> str:
    return normalize_host(host).encode("idna").decode("ascii")


def _origin(text: str) -> str:
    """``text`` (``scheme://host[:port]``) as an origin key; :class:`InvalidInput` otherwise."""
    problem = f"UrlFetcher headers key {redact_url(text)!r} is not an origin (http(s)://host[:port])"
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
        host = _idna(parts.hostname or "")
    except (ValueError, UnicodeError) as exc:
        raise InvalidInput(f"{problem}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise InvalidInput(f"{problem}: only http and https, with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"{problem}: no user:password@ in it")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput(f"{problem}: no path, query or fragment (headers go to the whole origin)")
    return _origin_key(scheme, host, _DEFAULT_PORTS[scheme] if port is None else port)


def _checked_value(name: str, value: object) -> tuple[str, str]:
    if not isinstance(value, str) or any(c in value for c in "\r\n\0") or not value.isascii():
        raise InvalidInput(f"UrlFetcher header {name!r} needs an ASCII str value without CR, LF or NUL")
    return name, value


def _checked_fields(origin: str, fields: object) -> tuple[tuple[str, str], ...]:
    if isinstance(fields, Mapping):
        pairs = list(fields.items())
    elif isinstance(fields, tuple | list):
        pairs = list(fields)
    else:
        raise InvalidInput(
            f"UrlFetcher headers[{origin!r}] must map header names to values, got {type(fields).__name__}"
        )
    checked: list[tuple[str, str]] = []
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InvalidInput(f"UrlFetcher headers[{origin!r}] must map header names (str) to values")
        name = pair[0]
        if not _TOKEN.match(name):
            raise InvalidInput(f"UrlFetcher header {name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            which = "user_agent=..." if name.lower() == "user-agent" else "the fetcher itself"
            raise InvalidInput(f"UrlFetcher header {name!r} is set by {which}; leave it out of headers")
        checked.append(_checked_value(name, pair[1]))
    return tuple(checked)


def _checked_headers(given: object) -> OriginHeaders:
    """``UrlFetcher.headers`` checked and made hashable; a mapping not keyed by origin is refused."""
    if isinstance(given, Mapping):
        items = list(given.items())
    elif isinstance(given, tuple | list):
        items = list(given)
    else:
        raise InvalidInput(
            f"UrlFetcher headers must be a mapping of origin to headers, got {type(given).__name__}"
        )
    checked: dict[str, tuple[tuple[str, str], ...]] = {}
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise InvalidInput(_KEY_BY_ORIGIN.format(name="Authorization"))
        key, fields = item
        if "://" not in key:  # a header name: a flat mapping, which would go to every host
            raise InvalidInput(_KEY_BY_ORIGIN.format(name=key if _TOKEN.match(key) else "Authorization"))
        origin = _origin(key)
        if origin in checked:
            raise InvalidInput(f"UrlFetcher headers name the origin {origin!r} twice")
        checked[origin] = _checked_fields(origin, fields)
    return tuple(sorted(checked.items()))


@dataclass(frozen=True, slots=True)
class _Target:
    """One request of a fetch: where it goes and which headers it carries."""

    scheme: str
    host: str  # normalized: lower case, no brackets
    port: int
    target: str  # path and query

    @property
    def origin(self) -> str:
        """The origin key its configured headers are looked up by."""
        return _origin_key(self.scheme, self.host, self.port)

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
        headers: credentials and other headers, keyed by the origin they are for:
            ``{"https://cdn.example.com": {"Authorization": "Bearer ..."}}``. An origin is a
            scheme, host and port (``https://cdn.example.com`` is port 443, ``http://...`` port
            80); its headers go with a request to exactly that origin and no other: not to another
            port or subdomain of the host, not over plain http unless the origin is http, not to
            the target of a redirect to another origin. A mapping keyed by header names (which
            would go everywhere) is refused. ``repr`` shows origins and header names, never values.
        user_agent: the ``User-Agent`` sent to every host (``""``: none).
        file_roots: the directories local images may be read from, by any spelling: ``file:``
            URLs and paths a retrieved document names (``Image(..., retrieved=True)``, as the
            adapters make them) are read only inside them, and refused when there are none; a
            path the application gives itself is read anywhere when there are none, and only
            inside them when there are. Only regular files are read: the path is resolved to
            find what lies below a root, then opened component by component from the root
            following no symbolic link (see ``images/_files.py``), so nothing swapped in since
            is followed; the roots themselves are resolved once, here.

    Invalid settings raise :class:`~qwen3_vllm_rerank.errors.InvalidInput`. Pass one to the
    client (``image_fetcher=``) or to :func:`prepare_image`.
    """

    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    allowed_hosts: tuple[str, ...] | None = None
    headers: Mapping[str, Mapping[str, str]] | OriginHeaders = ()
    user_agent: str = "qwen3-vllm-rerank"
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
        object.__setattr__(self, "headers", _checked_headers(self.headers))
        _checked_value("User-Agent", self.user_agent)
        object.__setattr__(self, "file_roots", self._checked_roots())

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
        shown = "; ".join(
            f"{origin} ({', '.join(name for name, _ in fields)})" for origin, fields in self._origin_headers()
        )
        return (
            f"UrlFetcher(timeout={self.timeout!r}, max_bytes={self.max_bytes!r}, "
            f"max_redirects={self.max_redirects!r}, allowed_hosts={self.allowed_hosts!r}, "
            f"headers=<values hidden: {shown or 'none'}>, user_agent={self.user_agent!r}, "
            f"file_roots={self.file_roots!r})"
        )

    def _origin_headers(self) -> OriginHeaders:
        # Always the checked tuple once __post_init__ ran.
        return self.headers if isinstance(self.headers, tuple) else _checked_headers(self.headers)

    # -- pure steps, shared by fetch and afetch ------------------------------------------

    def _rules(self) -> HostRules | None:
        return None if self.allowed_hosts is None else HostRules.parse(self.allowed_hosts)

    def _target(self, url: str) -> _Target:
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
        try:
            host = _idna(parts.hostname or "")
        except UnicodeError as exc:
            raise _Refused(f"the host name does not encode ({exc})") from exc
        if not host:
            raise _Refused("the URL has no host")
        rules = self._rules()
        if rules is not None and not rules.names and not rules.suffixes and not rules.networks:
            raise _Refused("allowed_hosts=() fetches no URL")
        if port is None:
            port = _DEFAULT_PORTS[scheme]
        target = urllib.parse.quote(parts.path or "/", safe=_SAFE)
        if parts.query:
            target += "?" + urllib.parse.quote(parts.query, safe=_SAFE)
        return _Target(scheme, host, port, target)

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
        """The request's headers: the configured ones of exactly its own origin, and no other."""
        headers = [(b"Host", target.host_header.encode("ascii")), (b"Accept-Encoding", b"identity")]
        if self.user_agent:
            headers.append((b"User-Agent", self.user_agent.encode("ascii")))
        for origin, fields in self._origin_headers():
            if origin == target.origin:
                headers.extend((name.encode("ascii"), value.encode("ascii")) for name, value in fields)
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
        return fetch_failed(url, label, detail)

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
        with httpcore.ConnectionPool(network_backend=backend, max_connections=1) as pool:
            for _ in range(self.max_redirects + 1):
                target = self._target(url)
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
        async with httpcore.AsyncConnectionPool(network_backend=backend, max_connections=1) as pool:
            for _ in range(self.max_redirects + 1):
                target = self._target(url)
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
