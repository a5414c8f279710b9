"""Connection fields shared by the LangChain components, and the core clients they build.

The components never format prompts, batch or speak HTTP themselves: they hold the
settings of a :class:`qwen3_vllm_rerank.RerankClient` /
:class:`qwen3_vllm_rerank.AsyncRerankClient`, create each client on first use and
reuse it for every later call.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

import httpx
from langchain_core.utils import from_env, secret_from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from qwen3_vllm_rerank import API_KEY_ENV, BASE_URL_ENV, AsyncRerankClient, RerankClient
from qwen3_vllm_rerank._adapters import LongDocuments, Template

__all__ = ["Qwen3VLLMClientSettings"]

# Guards the lazy creation of sync clients (creation is rare and cheap; one lock is enough).
_CREATE_LOCK = threading.Lock()


class Qwen3VLLMClientSettings(BaseModel):
    """Where the vLLM server is and how to talk to it; base of the LangChain components.

    The connection fields cannot be reassigned once the object exists (the client built
    from them is cached); use ``model_copy(update={...})`` for a variant, which builds
    its own client.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    base_url: str | list[str] | None = Field(
        default_factory=from_env(BASE_URL_ENV, default=None), frozen=True
    )
    """The vLLM server, e.g. ``http://127.0.0.1:8000``, or several replicas (a list, or
    one comma-separated string) that requests are spread over and retried on. Read from
    ``$QWEN3_VLLM_RERANK_BASE_URL`` when not given; ``http://127.0.0.1:8000`` when
    neither is set."""

    model: str | None = Field(default=None, frozen=True)
    """The served model name; discovered from the server's ``/v1/models`` when not given."""

    instruction: str | None = Field(default=None, frozen=True)
    """The task instruction put in the Qwen3 prompt; Qwen's default web-search
    instruction when not given."""

    api_key: SecretStr | None = Field(default_factory=secret_from_env(API_KEY_ENV, default=None), frozen=True)
    """Sent as ``Authorization: Bearer`` (a server started with ``--api-key``). Read from
    ``$QWEN3_VLLM_RERANK_API_KEY`` when not given."""

    timeout: float = Field(default=60.0, gt=0, frozen=True)
    """Seconds allowed for each HTTP request."""

    batch_size: int = Field(default=64, gt=0, frozen=True)
    """Documents sent per request; a larger call is split into several requests."""

    max_concurrency: int = Field(default=8, gt=0, frozen=True)
    """Most requests in flight at once (async) and size of the connection pool."""

    max_length: int | None = Field(default=None, gt=0, frozen=True)
    """Most prompt tokens per pair (template + query + document), below the server's
    ``max_model_len``; the server's limit alone when not given."""

    long_documents: LongDocuments = Field(default="truncate", frozen=True)
    """A document too long for the budget: ``"truncate"`` scores its head (the result
    gets ``metadata["truncated"] = True``), ``"chunk"`` scores every window and keeps the
    best (``metadata["window"]`` = its index, from 0), ``"error"`` raises ``InvalidInput``.
    The prompt template and the query are never cut."""

    tokenizer: str | None = Field(default=None, frozen=True)
    """Where tokens are counted for the budget: a checkpoint directory or a
    ``tokenizer.json`` (as a ``str`` path), a hub id, or ``"server"`` (vLLM's
    ``/tokenize``). By default the served model's directory when it is local, else the
    server. (A ``tokenizers.Tokenizer`` object is accepted by the core client only: it
    does not serialise.)"""

    template: Template = Field(default="auto", frozen=True)
    """Who applies the Qwen3 prompt: ``"auto"`` detects a server started with
    ``--chat-template`` and formats on exactly one side; ``"client"`` / ``"server"``
    insist and raise ``TemplateMismatchError`` if the server disagrees."""

    max_attempts: int = Field(default=3, ge=1, frozen=True)
    """Tries per request (the first included) on connection errors, timeouts and
    HTTP 429/5xx."""

    retry_deadline: float = Field(default=120.0, gt=0, frozen=True)
    """Seconds from a request's first try after which it is not tried again."""

    cache_size: int = Field(default=0, ge=0, frozen=True)
    """Entries of an LRU cache of scores keyed by (model, instruction, query, document);
    0 turns it off. The sync client and the async client (one per event loop) each keep
    their own."""

    http_client: httpx.Client | None = Field(default=None, exclude=True, repr=False, frozen=True)
    """An ``httpx.Client`` for the sync path (proxies, certificates, event hooks). The
    caller keeps ownership and closes it."""

    http_async_client: httpx.AsyncClient | None = Field(default=None, exclude=True, repr=False, frozen=True)
    """An ``httpx.AsyncClient`` for the async path. The caller keeps ownership and
    closes it."""

    _client: RerankClient | None = PrivateAttr(default=None)
    _async_client: tuple[asyncio.AbstractEventLoop, AsyncRerankClient] | None = PrivateAttr(default=None)

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "instruction": self.instruction,
            "api_key": self.api_key.get_secret_value() if self.api_key is not None else None,
            "timeout": self.timeout,
            "batch_size": self.batch_size,
            "max_concurrency": self.max_concurrency,
            "max_length": self.max_length,
            "long_documents": self.long_documents,
            "tokenizer": self.tokenizer,
            "template": self.template,
            "max_attempts": self.max_attempts,
            "retry_deadline": self.retry_deadline,
            "cache_size": self.cache_size,
        }

    def _get_client(self) -> RerankClient:
        """The sync client, created on first use and reused."""
        client = self._client
        if client is None:
            with _CREATE_LOCK:
                if self._client is None:
                    self._client = RerankClient(**self._client_kwargs(), http_client=self.http_client)
                client = self._client
        return client

    def _get_async_client(self) -> AsyncRerankClient:
        """The async client for the running event loop, created on first use and reused.

        An ``httpx.AsyncClient``'s connections belong to the loop that opened them, so a
        new loop (a second ``asyncio.run``) gets a new client instead of dead connections.
        """
        loop = asyncio.get_running_loop()
        cached = self._async_client
        if cached is not None and cached[0] is loop:
            return cached[1]
        client = AsyncRerankClient(**self._client_kwargs(), http_client=self.http_async_client)
        self._async_client = (loop, client)
        return client

    def close(self) -> None:
        """Close the sync client's connections (if one was created). Later calls reconnect."""
        with _CREATE_LOCK:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the async client's connections (if one was created). Later calls reconnect."""
        cached, self._async_client = self._async_client, None
        if cached is not None and cached[0] is asyncio.get_running_loop():
            await cached[1].aclose()

    def __copy__(self) -> Self:
        # A copy (``model_copy``, possibly with new settings) builds its own clients.
        copied = super().__copy__()
        copied._client = None
        copied._async_client = None
        return copied
