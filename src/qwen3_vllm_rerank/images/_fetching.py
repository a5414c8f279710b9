"""The opt-in fetcher for ``http(s)://`` images named by documents."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput

if TYPE_CHECKING:
    import httpx


__all__ = ["UrlFetcher"]


@dataclass(frozen=True, slots=True)
class UrlFetcher:
    """The opt-in to fetch ``http(s)://`` images, by this client, never by the server.

    Each fetch has a total ``timeout`` (seconds, over connecting, redirects and the whole
    body) and a ``max_bytes`` cap (refused from ``Content-Length`` when declared, and cut off
    when the body grows past it). Pass one to the client (the lead's option) or to
    :func:`prepare_image`. Only the http and https schemes are ever requested; redirects are
    followed up to ``max_redirects`` times. The URL is still chosen by whoever wrote the
    document: opt in only where the client may reach any address such a document names.
    """

    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    headers: tuple[tuple[str, str], ...] = (("User-Agent", "qwen3-vllm-rerank"),)

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout!r}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes!r}")

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": self.timeout,
            "follow_redirects": True,
            "max_redirects": self.max_redirects,
            "headers": dict(self.headers),
        }

    def _check_declared(self, response: httpx.Response, url: str, label: str) -> None:
        if response.status_code != 200:
            raise InvalidInput(f"{label}: fetching image {url!r} answered HTTP {response.status_code}")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise InvalidInput(
                f"{label}: image {url!r} is {int(declared)} bytes, over the fetch limit of "
                f"{self.max_bytes}; raise UrlFetcher(max_bytes=...) or pass a smaller image"
            )

    def _over(self, size: int, url: str, label: str) -> InvalidInput:
        return InvalidInput(
            f"{label}: image {url!r} is over the fetch limit of {self.max_bytes} bytes; "
            "raise UrlFetcher(max_bytes=...) or pass a smaller image"
        )

    def _timed_out(self, url: str, label: str) -> InvalidInput:
        return InvalidInput(
            f"{label}: fetching image {url!r} took over {self.timeout} s; "
            "raise UrlFetcher(timeout=...) or pass the image itself"
        )

    def fetch(self, url: str, label: str = "image") -> bytes:
        """The body at ``url``, or :class:`InvalidInput` saying why not."""
        import httpx

        deadline = time.monotonic() + self.timeout
        body = bytearray()
        try:
            with (
                httpx.Client(**self._client_kwargs()) as client,
                client.stream("GET", url) as response,
            ):
                self._check_declared(response, url, label)
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise self._over(len(body), url, label)
                    if time.monotonic() > deadline:
                        raise self._timed_out(url, label)
        except httpx.TimeoutException as exc:
            raise self._timed_out(url, label) from exc
        except httpx.HTTPError as exc:
            raise InvalidInput(f"{label}: cannot fetch image {url!r}: {exc}") from exc
        return bytes(body)

    async def afetch(self, url: str, label: str = "image") -> bytes:
        """:meth:`fetch` for asyncio."""
        import httpx

        body = bytearray()
        try:
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(**self._client_kwargs()) as client,
                client.stream("GET", url) as response,
            ):
                self._check_declared(response, url, label)
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise self._over(len(body), url, label)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._timed_out(url, label) from exc
        except httpx.HTTPError as exc:
            raise InvalidInput(f"{label}: cannot fetch image {url!r}: {exc}") from exc
        return bytes(body)
