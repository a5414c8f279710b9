"""What the LangChain and LlamaIndex adapters share, declared once, free of either framework.

Both frameworks build components on pydantic v2, so their settings are one pydantic model
here (:class:`ClientSettings`, :class:`RerankSettings`) that each adapter class inherits
next to its framework base. This module needs pydantic, which both adapter distributions
depend on; the core package itself never imports it.

Also here: the metadata keys the adapters add, the one rule for which failures
``on_error="passthrough"`` absorbs and how they are reported, and :func:`returned`,
which turns a rerank outcome into the documents or nodes an adapter returns.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from .client._budget import LongDocuments
from .client._clients import API_KEY_ENV, BASE_URL_ENV, DEFAULT_TIMEOUT, AsyncRerankClient, RerankClient
from .client._discovery import FamilyOption, Template
from .client._results import RerankResult
from .client._retry import RetryPolicy
from .errors import InvalidInput, Qwen3RerankError, RerankHTTPError
from .images import UrlFetcher

__all__ = [
    "RERANK_ERROR_KEY",
    "TRUNCATED_KEY",
    "WINDOW_KEY",
    "ClientSettings",
    "OnError",
    "Passthrough",
    "RerankSettings",
    "passthrough_or_raise",
    "returned",
]

OnError = Literal["raise", "passthrough"]

#: Metadata keys the adapters add to a returned document (only when they apply).
TRUNCATED_KEY = "truncated"
WINDOW_KEY = "window"
RERANK_ERROR_KEY = "rerank_error"

_MARKER_CHARS = 200
#: Settings that configure the adapter itself, not the core client.
_NOT_CLIENT_OPTIONS = frozenset({"http_client", "http_async_client", "top_n", "score_threshold", "on_error"})

Item = TypeVar("Item")
Out = TypeVar("Out")


def _base_url_from_env() -> str | None:
    return os.environ.get(BASE_URL_ENV) or None


def _api_key_from_env() -> SecretStr | None:
    value = os.environ.get(API_KEY_ENV)
    return SecretStr(value) if value else None


class _Clients:
    """The core clients of one adapter instance, created on first use and reused.

    A copy of an adapter (``copy``, ``deepcopy``, ``model_copy``) gets a fresh, empty
    holder: it builds its own clients from its own settings.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sync: RerankClient | None = None
        self.async_: AsyncRerankClient | None = None

    def __copy__(self) -> _Clients:
        return _Clients()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Clients:
        return _Clients()

    def get_sync(self, settings: ClientSettings) -> RerankClient:
        with self._lock:
            if self.sync is None:
                self.sync = RerankClient(**settings.client_options(), http_client=settings.http_client)
            return self.sync

    def get_async(self, settings: ClientSettings) -> AsyncRerankClient:
        with self._lock:
            if self.async_ is None:
                self.async_ = AsyncRerankClient(
                    **settings.client_options(), http_client=settings.http_async_client
                )
            return self.async_


class ClientSettings(BaseModel):
    """Where the vLLM server is and how to talk to it: the core client's options, as
    pydantic fields (documented in place), shared by every adapter component.

    The fields cannot be reassigned once the object exists (the client built from them is
    cached); ``model_copy(update={...})`` makes a variant with its own client.

    Long (~175 lines) because each of its 17 fields carries its documentation in place, as
    LangChain and LlamaIndex show it; the code is ``client_options`` and the client holder.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    base_url: str | list[str] | None = Field(
        default_factory=_base_url_from_env,
        frozen=True,
        description="The vLLM server, e.g. http://127.0.0.1:8000, or several replicas (a list, or one "
        "comma-separated string) that requests are spread over and retried on; "
        "$QWEN3_VLLM_RERANK_BASE_URL when not given, else http://127.0.0.1:8000.",
    )
    model: str | None = Field(
        default=None,
        frozen=True,
        description="The served model name; discovered from the server's /v1/models when not given.",
    )
    model_family: FamilyOption = Field(
        default="auto",
        frozen=True,
        description="'auto' reads from the server whether it serves Qwen3-Reranker ('text') or "
        "Qwen3-VL-Reranker ('vl'), whose prompts differ; naming one raises FamilyMismatchError when "
        "the server serves the other.",
    )
    instruction: str | None = Field(
        default=None,
        frozen=True,
        description="The task instruction in the prompt; the model family's default when not given.",
    )
    api_key: SecretStr | None = Field(
        default_factory=_api_key_from_env,
        frozen=True,
        exclude=True,
        description="Sent as 'Authorization: Bearer'; $QWEN3_VLLM_RERANK_API_KEY when not given. Never "
        "serialised.",
    )
    timeout: float = Field(
        default=DEFAULT_TIMEOUT,
        gt=0,
        frozen=True,
        description="Seconds for the server to answer one request (connecting: at most 10 s). A request "
        "that timed out is not sent again: the server is probably still computing it.",
    )
    batch_size: int = Field(
        default=128, gt=0, frozen=True, description="Documents per request; more are split into requests."
    )
    max_concurrency: int = Field(
        default=8,
        gt=0,
        frozen=True,
        description="Most requests in flight at once per client (async), and connections kept per endpoint.",
    )
    max_length: int | None = Field(
        default=None,
        gt=0,
        frozen=True,
        description="Most prompt tokens per pair (template + query + document), below the server's "
        "max_model_len; the server's limit alone when not given.",
    )
    long_documents: LongDocuments = Field(
        default="truncate",
        frozen=True,
        description="A document too long for the budget: 'truncate' scores its head (metadata "
        "'truncated': True), 'chunk' scores every window and keeps the best (metadata 'window': its "
        "index, from 0), 'error' raises InvalidInput. The prompt template and the query are never cut.",
    )
    tokenizer: str | None = Field(
        default=None,
        frozen=True,
        description="Where tokens are counted when a document may not fit: a checkpoint directory or a "
        "tokenizer.json path, a hub id, or 'server' (vLLM's /tokenize); by default the served model's "
        "directory when it is local, else the server. Loaded on first need only.",
    )
    template: Template = Field(
        default="auto",
        frozen=True,
        description="Who applies the prompt template: 'auto' detects a server started with "
        "--chat-template and formats on exactly one side; 'client' / 'server' insist and raise "
        "TemplateMismatchError if the server disagrees.",
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        frozen=True,
        description="Retries of a request that did not reach the model (connection errors, HTTP "
        "429/500/502/503): tries, deadline, backoff, and the cool-down of a failed replica.",
    )
    cache_size: int = Field(
        default=0,
        ge=0,
        frozen=True,
        description="Entries of an LRU cache of scores keyed by (model, instruction, query, document); 0 "
        "turns it off. The sync and the async client each keep their own.",
    )
    image_fetcher: UrlFetcher | None = Field(
        default=None,
        frozen=True,
        description="The opt-in to http(s):// image URLs in documents: a UrlFetcher (timeout, size "
        "cap) with which the client fetches them. Without one such a URL raises InvalidInput; the "
        "server is never asked to fetch anything (retrieved content is attacker-controlled).",
    )
    http_client: httpx.Client | None = Field(
        default=None,
        exclude=True,
        repr=False,
        frozen=True,
        description="An httpx.Client for the sync path (proxies, certificates, event hooks); the caller "
        "keeps ownership and closes it.",
    )
    http_async_client: httpx.AsyncClient | None = Field(
        default=None,
        exclude=True,
        repr=False,
        frozen=True,
        description="An httpx.AsyncClient for the async path; the caller keeps ownership and closes it.",
    )

    _clients: _Clients = PrivateAttr(default_factory=_Clients)

    def client_options(self) -> dict[str, Any]:
        """The core client's keyword arguments: every field of :class:`ClientSettings`
        but the injected HTTP clients (passed separately)."""
        options = {
            name: getattr(self, name)
            for name in ClientSettings.model_fields
            if name not in _NOT_CLIENT_OPTIONS
        }
        options["api_key"] = self.api_key.get_secret_value() if self.api_key is not None else None
        return options

    @property
    def served_model(self) -> str | None:
        """The model as given, or as a client of this object discovered it, else ``None``."""
        for client in (self._clients.sync, self._clients.async_):
            if client is not None and client.model:
                return client.model
        return self.model

    def _get_client(self) -> RerankClient:
        """The sync client, created on first use and reused."""
        return self._clients.get_sync(self)

    def _get_async_client(self) -> AsyncRerankClient:
        """The async client, created on first use and reused (on any event loop)."""
        return self._clients.get_async(self)

    def close(self) -> None:
        """Close the sync client's connections (if any). Later calls reconnect."""
        client, self._clients.sync = self._clients.sync, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the async client's connections (if any). Later calls reconnect."""
        client, self._clients.async_ = self._clients.async_, None
        if client is not None:
            await client.aclose()

    def __copy__(self) -> Self:
        # pydantic copies private attributes shallowly: give the copy its own clients.
        copied = super().__copy__()
        copied._clients = _Clients()
        return copied

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        # The caller's injected HTTP clients are shared, never deep-copied (they hold locks
        # and sockets, and the caller owns them).
        memo = {} if memo is None else memo
        for injected in (self.http_client, self.http_async_client):
            if injected is not None:
                memo[id(injected)] = injected
        return super().__deepcopy__(memo)


class RerankSettings(ClientSettings):
    """The settings of a reranking adapter: the client's, plus what to return."""

    top_n: int | None = Field(
        default=3, ge=1, description="Most items to return; None returns every one passing the threshold."
    )
    score_threshold: float | None = Field(
        default=None,
        description="Drop items scoring below this relevance (p(yes), in [0, 1]); applied before the "
        "top_n cut.",
    )
    on_error: OnError = Field(
        default="raise",
        description="What a failed rerank call does: 'raise' raises the Qwen3RerankError; 'passthrough' logs "
        "a warning and returns the items in retrieval order cut to top_n (no threshold: there are no "
        "scores), each a copy marked with 'rerank_error': '<ExceptionClass>: <message>' in its metadata. "
        "InvalidInput (the caller's bug) is raised either way.",
    )


@dataclass(frozen=True, slots=True)
class Passthrough:
    """A failed rerank call answered with the items in retrieval order.

    ``marker`` is ``"<ExceptionClassName>: <short message>"``, stored under
    :data:`RERANK_ERROR_KEY` on every item returned.
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


def returned(
    items: Sequence[Item],
    outcome: list[RerankResult] | Passthrough,
    settings: RerankSettings,
    build: Callable[[Item, float | None, dict[str, object]], Out],
) -> list[Out]:
    """What an adapter returns for ``items`` given the rerank ``outcome``.

    Scored: the results (best first) at or above ``score_threshold``, cut to ``top_n``,
    each built as ``build(item, score, extra)`` with ``extra`` holding ``"truncated"`` /
    ``"window"`` where they apply. Passed through: the first ``top_n`` items in
    retrieval order, built with no score and ``extra = {"rerank_error": marker}``.
    """
    top_n = settings.top_n
    if isinstance(outcome, Passthrough):
        kept_items = items[:top_n] if top_n is not None else items
        return [build(item, None, {RERANK_ERROR_KEY: outcome.marker}) for item in kept_items]
    threshold = settings.score_threshold
    kept = [r for r in outcome if threshold is None or r.score >= threshold]
    kept = kept[:top_n] if top_n is not None else kept
    return [build(items[r.index], r.score, _result_metadata(r)) for r in kept]


def _result_metadata(result: RerankResult) -> dict[str, object]:
    extra: dict[str, object] = {}
    if result.truncated:
        extra[TRUNCATED_KEY] = True
    if result.window is not None:
        extra[WINDOW_KEY] = result.window
    return extra


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
