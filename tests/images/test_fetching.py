"""The opt-in image fetcher against hostile URLs and servers, all on 127.0.0.0/8.

SSRF (every non-public address refused after resolution and at every redirect hop), headers
kept to the hosts they are for, one generic error (no port-scanning oracle), compression
bombs, and one total deadline.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qwen3_vllm_rerank.errors import InvalidInput
from qwen3_vllm_rerank.images import UrlFetcher
from qwen3_vllm_rerank.images._fetching import FETCH_FAILED

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Site:
    """A local web server: ``routes`` maps a path to what it answers; ``seen`` records each
    request's path and headers."""

    host: str
    routes: dict[str, Route]
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up mid-answer is what several tests cause


def _serve(site: Site) -> Iterator[Site]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = site.routes.get(self.path.partition("?")[0])
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            route(self)

        def log_message(self, *args: object) -> None:
            pass

    server = _Quiet((site.host, 0), Handler)
    site.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def body(data: bytes, *headers: tuple[str, str]) -> Route:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return answer


def redirect(location: Callable[[], str], status: int = 302) -> Route:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location())
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


@pytest.fixture
def site() -> Iterator[Site]:
    yield from _serve(Site("127.0.0.1", {"/ok": body(b"image bytes")}))


@pytest.fixture
def other() -> Iterator[Site]:
    """A second server, on another loopback address (another host)."""
    yield from _serve(Site("127.0.0.2", {"/ok": body(b"other bytes")}))


def fails(fetcher: UrlFetcher, url: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        fetcher.fetch(url, "documents[2]")
    assert str(info.value) == f"documents[2]: {FETCH_FAILED}"
    return info.value


async def afails(fetcher: UrlFetcher, url: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        await fetcher.afetch(url, "documents[2]")
    assert str(info.value) == f"documents[2]: {FETCH_FAILED}"
    return info.value


# --- item 1: internal addresses -----------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "127.1", "0x7f000001", "localhost", "[::1]", "[::ffff:127.0.0.1]"]
)
def test_the_default_refuses_loopback_in_every_spelling(site: Site, host: str) -> None:
    fails(UrlFetcher(), f"http://{host}:{site.port}/ok")
    assert site.seen == [], "refused before connecting"


async def test_the_default_refuses_loopback_async(site: Site) -> None:
    await afails(UrlFetcher(), site.url("/ok"))
    assert site.seen == []


def test_a_redirect_to_an_address_outside_the_allow_list_is_refused(site: Site, other: Site) -> None:
    site.routes["/hop"] = redirect(lambda: other.url("/ok"))
    fetcher = UrlFetcher(allowed_hosts=("127.0.0.1",))
    assert fetcher.fetch(site.url("/ok")) == b"image bytes"
    fails(fetcher, site.url("/hop"))
    assert other.seen == [], "the redirect target was checked before it was connected"


async def test_a_redirect_is_checked_at_every_hop_async(site: Site, other: Site) -> None:
    site.routes["/hop"] = redirect(lambda: other.url("/ok"))
    await afails(UrlFetcher(allowed_hosts=("127.0.0.1",)), site.url("/hop"))
    assert other.seen == []
    both = UrlFetcher(allowed_hosts=("127.0.0.0/8",))
    assert await both.afetch(site.url("/hop")) == b"other bytes"


def test_an_allow_list_opens_what_it_names(site: Site) -> None:
    for allowed in [("127.0.0.1",), ("127.0.0.0/8",), ("localhost",), ("*.localhost", "localhost")]:
        fetcher = UrlFetcher(allowed_hosts=allowed)
        host = "localhost" if "localhost" in allowed else "127.0.0.1"
        assert fetcher.fetch(f"http://{host}:{site.port}/ok") == b"image bytes"
    fails(UrlFetcher(allowed_hosts=("10.0.0.0/8",)), site.url("/ok"))
    fails(UrlFetcher(allowed_hosts=()), site.url("/ok"))
    assert len(site.seen) == 4


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/a.png", "gopher://127.0.0.1/", "http://user:pw@127.0.0.1/ok", "http:///nohost"]
)
def test_only_plain_http_and_https_urls(url: str) -> None:
    fails(UrlFetcher(allowed_hosts=("127.0.0.1",)), url)


def test_too_many_redirects(site: Site) -> None:
    site.routes["/loop"] = redirect(lambda: site.url("/loop"))
    fails(UrlFetcher(allowed_hosts=("127.0.0.1",), max_redirects=2), site.url("/loop"))
    assert len(site.seen) == 3


# --- item 2: credentials only to their origin ---------------------------------------------


def test_configured_headers_go_only_to_their_origin(site: Site, other: Site) -> None:
    site.routes["/hop"] = redirect(lambda: other.url("/ok"))
    fetcher = UrlFetcher(
        allowed_hosts=("127.0.0.1", "127.0.0.2"),
        headers={site.url(""): {"Authorization": "Bearer cdn-secret"}},
        user_agent="test-agent",
    )
    assert fetcher.fetch(site.url("/hop")) == b"other bytes"
    ((_, first),) = site.seen
    ((_, second),) = other.seen
    assert first["authorization"] == "Bearer cdn-secret"
    assert "authorization" not in second
    assert first["user-agent"] == second["user-agent"] == "test-agent"
    assert first["accept-encoding"] == second["accept-encoding"] == "identity"


def test_flat_headers_are_refused_saying_how_to_key_them_and_values_never_show() -> None:
    for flat in ({"Authorization": "Bearer secret"}, (("Authorization", "Bearer secret"),)):
        with pytest.raises(InvalidInput, match="keyed by origin") as info:
            UrlFetcher(headers=flat)  # type: ignore[arg-type]
        assert "headers={'https://cdn.example.com': {'Authorization': ...}}" in str(info.value)
        assert "secret" not in str(info.value)
    fetcher = UrlFetcher(headers={"https://cdn.example.com": {"Authorization": "Bearer secret"}})
    assert "secret" not in repr(fetcher)
    assert "https://cdn.example.com:443 (Authorization)" in repr(fetcher)
    assert hash(fetcher) == hash(
        UrlFetcher(headers={"https://CDN.example.com:443/": {"Authorization": "Bearer secret"}})
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"timeout": 0},
        {"timeout": "5"},
        {"max_bytes": 0},
        {"max_redirects": -1},
        {"allowed_hosts": "example.com"},
        {"allowed_hosts": ("http://example.com",)},
        {"allowed_hosts": ("example.com:8080",)},
        {"allowed_hosts": ("10.0.0.1/8",)},
        {"allowed_hosts": ("127.1",)},
        {"headers": {"https://cdn.example.com": {"Bad Name": "x"}}},
        {"headers": {"https://cdn.example.com": {"X-Key": "a\r\nInjected: 1"}}},
        {"headers": {"https://cdn.example.com": {"Host": "x"}}},
        {"headers": {"https://cdn.example.com": {"User-Agent": "x"}}},
        {"headers": {"https://cdn.example.com/path": {"X-Key": "x"}}},
        {"headers": {"ftp://cdn.example.com": {"X-Key": "x"}}},
        {"headers": {"https://user:pw@cdn.example.com": {"X-Key": "x"}}},
        {"headers": {"https://cdn.example.com": "Bearer x"}},
        {"user_agent": "a\r\nInjected: 1"},
        {"file_roots": "/tmp"},
        {"file_roots": ("relative/dir",)},
    ],
)
def test_invalid_settings_are_invalid_input(settings: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        UrlFetcher(**settings)  # type: ignore[arg-type]


# --- item 3: no oracle --------------------------------------------------------------------


def test_every_failure_says_the_same_thing_and_details_go_to_the_debug_log(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.routes["/text"] = body(b"not an image at all", ("Content-Type", "text/plain"))
    site.routes["/err"] = lambda h: (
        h.send_response(500),
        h.send_header("Content-Length", "0"),
        h.end_headers(),
    )
    fetcher = UrlFetcher(allowed_hosts=("127.0.0.0/8",), timeout=5)
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    closed_port = closed.server_address[1]
    closed.server_close()  # nothing listens there any more: connection refused
    messages = set()
    with caplog.at_level(logging.DEBUG, logger="qwen3_vllm_rerank.images"):
        for url in [
            site.url("/missing?token=s3cr3t"),
            site.url("/err"),
            f"http://127.0.0.1:{closed_port}/a.png",
            "http://10.1.2.3/a.png",
        ]:
            messages.add(str(fails(fetcher, url)))
    assert len(messages) == 1
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "HTTP 404" in logged
    assert "HTTP 500" in logged
    assert "ConnectError" in logged
    assert "s3cr3t" not in logged


# --- item 4: compression bombs ------------------------------------------------------------


def _bomb(decoded: int) -> bytes:
    return gzip.compress(gzip.compress(b"\0" * decoded, 9), 9)


@pytest.fixture
def bomb_site(site: Site) -> Site:
    site.routes["/bomb"] = body(_bomb(200 * 1024 * 1024), ("Content-Encoding", "gzip, gzip"))
    site.routes["/gzip"] = body(gzip.compress(b"x" * 100), ("Content-Encoding", "gzip"))
    return site


def _peak(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput):
            run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_compression_bomb_is_refused_within_a_small_multiple_of_max_bytes(bomb_site: Site) -> None:
    fetcher = UrlFetcher(allowed_hosts=("127.0.0.1",), max_bytes=1024 * 1024)
    assert _peak(lambda: fetcher.fetch(bomb_site.url("/bomb"))) < 4 * fetcher.max_bytes
    fails(fetcher, bomb_site.url("/gzip"))  # any encoding but identity
    assert all(headers["accept-encoding"] == "identity" for _, headers in bomb_site.seen)


async def test_a_compression_bomb_is_refused_async(bomb_site: Site) -> None:
    fetcher = UrlFetcher(allowed_hosts=("127.0.0.1",), max_bytes=1024 * 1024)
    tracemalloc.start()
    try:
        await afails(fetcher, bomb_site.url("/bomb"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * fetcher.max_bytes


# --- item 5: one total deadline -----------------------------------------------------------


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    """Headers one byte every 0.2 s: each read succeeds, the whole never ends in time."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Padding: " + b"p" * 100:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.2)


def test_the_timeout_is_total_even_while_headers_trickle(site: Site) -> None:
    site.routes["/trickle"] = _trickle
    fetcher = UrlFetcher(allowed_hosts=("127.0.0.1",), timeout=1.0)
    started = time.monotonic()
    fails(fetcher, site.url("/trickle"))
    assert time.monotonic() - started < 5.0


async def test_the_timeout_is_total_async(site: Site) -> None:
    site.routes["/trickle"] = _trickle
    fetcher = UrlFetcher(allowed_hosts=("127.0.0.1",), timeout=1.0)
    started = time.monotonic()
    await afails(fetcher, site.url("/trickle"))
    assert time.monotonic() - started < 5.0
