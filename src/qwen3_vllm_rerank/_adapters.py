"""What the LangChain and LlamaIndex adapters must do identically, free of either framework.

The adapters ship behind different extras and never import each other, so the rules
they share live here: the metadata keys they add to returned documents, the option
types they pass to the core client, and which failures ``on_error="passthrough"``
absorbs and how such a failure is reported, and the core clients an adapter instance
builds from its settings (:class:`CoreClients`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import httpx

from .budget import LongDocuments
from .client import AsyncRerankClient, RerankClient, Template
from .errors import InvalidInput, Qwen3RerankError, RerankHTTPError
from .types import RerankResult

__all__ = [
    "CLIENT_OPTIONS",
    "RERANK_ERROR_KEY",
    "TRUNCATED_KEY",
    "WINDOW_KEY",
    "CoreClients",
    "CoreClientsMixin",
    "LongDocuments",
    "OnError",
    "Passthrough",
    "Template",
    "attempt",
    "client_options",
    "kept_results",
    "passthrough_or_raise",
    "result_metadata",
]

OnError = Literal["raise", "passthrough"]

#: Metadata keys the adapters add to a returned document (only when they apply).
TRUNCATED_KEY = "truncated"
WINDOW_KEY = "window"
RERANK_ERROR_KEY = "rerank_error"

_MARKER_CHARS = 200

#: The adapter settings passed to the core clients under the same names (``api_key``
#: unwrapped from its ``SecretStr`` by :func:`client_options`).
CLIENT_OPTIONS = (
    "base_url",
    "model",
    "instruction",
    "api_key",
    "timeout",
    "batch_size",
    "max_concurrency",
    "max_length",
    "long_documents",
    "tokenizer",
    "template",
    "max_attempts",
    "retry_deadline",
    "cache_size",
)

# Guards the lazy creation of clients (creation is rare and cheap; one lock is enough).
_CREATE_LOCK = threading.Lock()

_CallT = TypeVar("_CallT", bound="_RerankCall")


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class _RerankCall(Protocol):
    texts: list[str]
    results: list[RerankResult]


def result_metadata(result: RerankResult) -> dict[str, object]:
    """``{"truncated": True}`` / ``{"window": i}`` when they apply to ``result``, else ``{}``."""
    extra: dict[str, object] = {}
    if result.truncated:
        extra[TRUNCATED_KEY] = True
    if result.window is not None:
        extra[WINDOW_KEY] = result.window
    return extra


@dataclass(frozen=True, slots=True)
class Passthrough:
    """A failed rerank call answered with the documents in retrieval order.

    ``marker`` is ``"<ExceptionClassName>: <short message>"``, stored under
    :data:`RERANK_ERROR_KEY` on every document returned.
    """

    marker: str


def passthrough_or_raise(
    error: Qwen3RerankError, on_error: OnError, *, count: int, logger: logging.Logger
) -> Passthrough:
    """Re-raise ``error`` unless ``on_error="passthrough"`` absorbs it; then log a warning.

    ``InvalidInput`` is the caller's bug and always raised. The warning names the
    error class, the endpoint (without credentials) and the HTTP status, never the
    message itself: a server's error body may quote the query or a document.
    """
    if on_error != "passthrough" or isinstance(error, InvalidInput):
        raise error
    url = getattr(error, "url", None)
    where = f" at {_redacted(url)}" if isinstance(url, str) else ""
    status = f" (HTTP {error.status_code})" if isinstance(error, RerankHTTPError) else ""
    logger.warning(
        "reranking %d documents failed with %s%s%s; returning them in retrieval order "
        "(on_error='passthrough')",
        count,
        type(error).__name__,
        where,
        status,
    )
    return Passthrough(f"{type(error).__name__}: {_short_message(error, url)}")


def _short_message(error: Qwen3RerankError, url: object) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(url, str):
        text = text.replace(url, _redacted(url))
    return text if len(text) <= _MARKER_CHARS else text[: _MARKER_CHARS - 3] + "..."


def _redacted(url: str) -> str:
    """``url`` without ``user:password@``."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    return str(parsed.copy_with(userinfo=b"")) if parsed.userinfo else url


def attempt(
    call: _CallT, on_error: OnError, *, logger: logging.Logger
) -> Generator[_CallT, None, list[RerankResult] | Passthrough]:
    """The rerank call of an adapter's ``@contextmanager``, run with ``yield from``.

    Yields ``call`` to the ``with`` body, which stores the client's answer in
    ``call.results``, and returns those results; or, when the body raises a
    ``Qwen3RerankError`` that ``on_error`` absorbs, the :class:`Passthrough` (see
    :func:`passthrough_or_raise`). Any other exception propagates.
    """
    try:
        yield call
    except Qwen3RerankError as error:
        return passthrough_or_raise(error, on_error, count=len(call.texts), logger=logger)
    return call.results


def kept_results(
    results: Sequence[RerankResult], *, top_n: int | None, score_threshold: float | None
) -> list[RerankResult]:
    """``results`` (best first) scoring at least ``score_threshold``, then the first ``top_n``."""
    kept = [r for r in results if score_threshold is None or r.score >= score_threshold]
    return kept[:top_n] if top_n is not None else kept


def client_options(settings: object) -> dict[str, Any]:
    """The :data:`CLIENT_OPTIONS` of an adapter's ``settings``, as core-client keyword arguments."""
    options = {name: getattr(settings, name) for name in CLIENT_OPTIONS}
    api_key: _Secret | None = options["api_key"]
    options["api_key"] = api_key.get_secret_value() if api_key is not None else None
    return options


class CoreClients:
    """The core clients of one adapter instance, each created on first use and reused.

    One :class:`RerankClient` for the sync path, and one :class:`AsyncRerankClient` per
    running event loop for the async path. An injected ``http_client`` /
    ``http_async_client`` is passed on (its owner keeps it and closes it).
    """

    __slots__ = ("_async", "_http_async_client", "_http_client", "_options", "_sync")

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._options = dict(options)
        self._http_client = http_client
        self._http_async_client = http_async_client
        self._sync: RerankClient | None = None
        self._async: tuple[asyncio.AbstractEventLoop, AsyncRerankClient] | None = None

    @classmethod
    def of(cls, settings: object) -> CoreClients:
        """For an adapter's ``settings``: its :data:`CLIENT_OPTIONS`, ``http_client`` and
        ``http_async_client``."""
        return cls(
            client_options(settings),
            http_client=getattr(settings, "http_client", None),
            http_async_client=getattr(settings, "http_async_client", None),
        )

    @property
    def existing_sync(self) -> RerankClient | None:
        """The sync client if one was created, else ``None`` (creates nothing)."""
        return self._sync

    @property
    def model(self) -> str | None:
        """The model named by the sync or the async client created so far (given or
        discovered), else ``None``."""
        for client in (self._sync, self._async[1] if self._async else None):
            if client is not None and client.model:
                return client.model
        return None

    def sync(self) -> RerankClient:
        """The sync client, created on first use and reused."""
        client = self._sync
        if client is None:
            with _CREATE_LOCK:
                if self._sync is None:
                    self._sync = RerankClient(**self._options, http_client=self._http_client)
                client = self._sync
        return client

    def for_running_loop(self) -> AsyncRerankClient:
        """The async client for the running event loop, created on first use and reused.

        An ``httpx.AsyncClient``'s connections belong to the loop that opened them, so a
        new loop (a second ``asyncio.run``) gets a new client instead of dead connections.
        """
        loop = asyncio.get_running_loop()
        cached = self._async
        if cached is not None and cached[0] is loop:
            return cached[1]
        client = AsyncRerankClient(**self._options, http_client=self._http_async_client)
        self._async = (loop, client)
        return client

    def close(self) -> None:
        """Close the sync client's connections (if one was created). Later calls reconnect."""
        with _CREATE_LOCK:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the async client's connections (if one was created). Later calls reconnect."""
        cached, self._async = self._async, None
        if cached is not None and cached[0] is asyncio.get_running_loop():
            await cached[1].aclose()


class CoreClientsMixin:
    """The client methods of an adapter model, on its :class:`CoreClients`.

    The model (pydantic) has the :data:`CLIENT_OPTIONS`, ``http_client`` and
    ``http_async_client`` fields, declares ``_clients: CoreClients | None =
    PrivateAttr(default=None)``, and resets ``_clients`` to ``None`` in its ``__copy__``
    so that a copy (``model_copy``, possibly with new settings) builds its own clients.
    """

    _clients: CoreClients | None

    def _core_clients(self) -> CoreClients:
        """The core clients built from this object's settings, set up on first use."""
        clients = self._clients
        if clients is None:
            with _CREATE_LOCK:
                if self._clients is None:
                    self._clients = CoreClients.of(self)
                clients = self._clients
        return clients

    def _get_client(self) -> RerankClient:
        """The sync client, created on first use and reused."""
        return self._core_clients().sync()

    def _get_async_client(self) -> AsyncRerankClient:
        """The async client for the running event loop, created on first use and reused."""
        return self._core_clients().for_running_loop()

    def close(self) -> None:
        """Close the sync client's connections (if one was created). Later calls reconnect."""
        self._core_clients().close()

    async def aclose(self) -> None:
        """Close the async client's connections (if one was created). Later calls reconnect."""
        await self._core_clients().aclose()
