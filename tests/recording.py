"""Watching HTTP traffic from the outside: httpx event hooks, and a port nothing listens on."""

from __future__ import annotations

import socket

import httpx

__all__ = ["RequestLog", "closed_port_url"]


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
