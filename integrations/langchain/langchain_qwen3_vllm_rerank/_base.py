"""Connection fields shared by the LangChain components, and the core clients they build.

The components never format prompts, batch or speak HTTP themselves: they hold the
settings of a :class:`qwen3_vllm_rerank.RerankClient` /
:class:`qwen3_vllm_rerank.AsyncRerankClient`, create each client on first use and
reuse it for every later call.
"""

from __future__ import annotations

from typing import Self

import httpx
from langchain_core.utils import from_env, secret_from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from qwen3_vllm_rerank import API_KEY_ENV, BASE_URL_ENV, RerankClient
from qwen3_vllm_rerank._adapters import CoreClients, CoreClientsMixin, LongDocuments, Template

__all__ = ["Qwen3VLLMClientSettings"]


class Qwen3VLLMClientSettings(CoreClientsMixin, BaseModel):
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

    batch_size: int = Field(default=128, gt=0, frozen=True)
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

    _clients: CoreClients | None = PrivateAttr(default=None)

    @property
    def _client(self) -> RerankClient | None:
        """The sync client if one was created, else ``None`` (creates nothing)."""
        return self._clients.existing_sync if self._clients is not None else None

    def __copy__(self) -> Self:
        # A copy (``model_copy``, possibly with new settings) builds its own clients.
        copied = super().__copy__()
        copied._clients = None
        return copied
