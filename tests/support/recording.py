"""Watching HTTP traffic from the outside: httpx event hooks, a port nothing listens on, and a
local web server with one image that counts its fetches."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

__all__ = ["ImageSite", "RequestLog", "closed_port_url"]


class RequestLog:
    """Records every request an ``httpx`` client sends (path and headers)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.headers: list[httpx.Headers] = []

    def on_request(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)
        self.headers.append(request.headers)

    async def aon_request(self, request: httpx.Request) -> None:
        self.on_request(request)

    def client(self) -> httpx.Client:
        return httpx.Client(event_hooks={"request": [self.on_request]}, timeout=120)

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(event_hooks={"request": [self.aon_request]}, timeout=120)


def closed_port_url() -> str:
    """A loopback URL whose port was free a moment ago: connecting to it fails."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class ImageSite:
    """A local web server answering every path with one PNG (an image URL a document might name);
    ``hits`` counts the fetches, ``by_path`` counts them per path. With ``flapping``, the first fetch
    of each path starting with it answers 503 and later ones the PNG. Close it with :meth:`close`."""

    def __init__(self, body: bytes, flapping: str | None = None) -> None:
        site = self
        self.hits = 0
        self.by_path: Counter[str] = Counter()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits += 1
                site.by_path[self.path] += 1
                if flapping and self.path.startswith(flapping) and site.by_path[self.path] == 1:
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.url = f"{self.base}/page.png"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
