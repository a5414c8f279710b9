"""Sync and async clients for Qwen3-Reranker served by vLLM's score API.

The work of a call is written once, as flows (generators that yield lists of
:class:`~qwen3_vllm_rerank._protocol.Call` and receive the responses): learning about
the server (``_discovery.py``) and scoring (``_scoring.py``). :class:`RerankClient`
sends each list one request after the other; :class:`AsyncRerankClient` sends it
concurrently, at most ``max_concurrency`` requests in flight per client. Retries and
endpoint choice are a shared state machine (``_retry.py``); only the sending and the
sleeping differ.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar

import httpx

from .. import _protocol as proto
from .._family import family_prompt
from ..errors import InvalidInput
from ..images._fetching import UrlFetcher
from ._budget import LONG_DOCUMENT_POLICIES, LongDocuments
from ._cache import CacheInfo, ScoreCache
from ._discovery import Discovery, FamilyOption, ServerProfile, Template
from ._flow import Flow
from ._inputs import Input, Item, ScoreRequest, aprepare, positive_int, prepare, score_request
from ._results import RerankResult
from ._retry import Attempts, Endpoints, RetryPolicy
from ._scoring import Scored, ScoringOptions, max_tokens, score_flow
from ._transport import LoopBoundClient, build_request, http_error, limits, translate_transport_error

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "DEFAULT_TIMEOUT", "AsyncRerankClient", "RerankClient"]

BASE_URL_ENV = "QWEN3_VLLM_RERANK_BASE_URL"
API_KEY_ENV = "QWEN3_VLLM_RERANK_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
#: Seconds for the server to answer one request. Generous: a CPU server can take a minute
#: for a batch of long documents, and a request that times out is not sent again.
DEFAULT_TIMEOUT = 300.0
#: Seconds to establish a connection; an endpoint that does not answer is unreachable.
CONNECT_TIMEOUT = 10.0

H = TypeVar("H", httpx.Client, httpx.AsyncClient)
T = TypeVar("T")


def _base_urls(base_url: str | Sequence[str] | None) -> list[str]:
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if isinstance(base_url, str):
        base_url = [u for u in base_url.split(",") if u.strip()]
    return [u.strip().rstrip("/") for u in base_url]


def _timeout(value: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInput(f"timeout must be positive seconds or an httpx.Timeout, got {value!r}")
    return httpx.Timeout(float(value), connect=min(float(value), CONNECT_TIMEOUT))


class _BaseClient(Generic[H]):
    """Settings, validation and the flows of every call; subclasses send.

    About 150 lines, most of them the documentation of the options, declared here once for
    both clients (and read by the adapters' settings).
    """

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        *,
        model: str | None = None,
        model_family: FamilyOption = "auto",
        instruction: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        batch_size: int = 128,
        max_concurrency: int = 8,
        max_length: int | None = None,
        long_documents: LongDocuments = "truncate",
        tokenizer: str | Path | Tokenizer | None = None,
        template: Template = "auto",
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        cache_size: int = 0,
        image_fetcher: UrlFetcher | None = None,
        http_client: H | None = None,
    ) -> None:
        """
        Args:
            base_url: the server, e.g. ``http://127.0.0.1:8000``, or several (a list or a
                comma-separated string) to spread requests over replicas; defaults to
                ``$QWEN3_VLLM_RERANK_BASE_URL``, else ``http://127.0.0.1:8000``.
            model: the served model name; discovered from ``/v1/models`` when omitted.
            model_family: ``"auto"`` (default) reads from the server whether it serves
                Qwen3-Reranker (``"text"``) or Qwen3-VL-Reranker (``"vl"``), whose prompts
                differ; naming one makes a server serving the other raise
                :class:`~qwen3_vllm_rerank.FamilyMismatchError`.
            instruction: the task instruction; the model family's default when omitted.
            api_key: sent as ``Authorization: Bearer``; defaults to ``$QWEN3_VLLM_RERANK_API_KEY``.
                With a key, only ``/v1/...`` endpoints (the ones ``--api-key`` guards) are used.
            timeout: seconds for the server to answer a request (default 300), or an
                ``httpx.Timeout``. Connecting gets at most 10 s. A request that timed out is
                not sent again: the server is probably still computing it.
            batch_size: documents per request; a larger call is split into several requests.
            max_concurrency: requests in flight at once across the calls of this client (async);
                connections kept per endpoint (both clients).
            max_length: cap on prompt tokens, below the server's ``max_model_len``.
            long_documents: ``"truncate"`` (default), ``"chunk"`` or ``"error"`` for a
                document that does not fit; the template is never cut.
            tokenizer: where to count tokens when a document may not fit: a checkpoint
                directory, a tokenizer.json, a hub id, a ``tokenizers.Tokenizer``, or
                ``"server"`` for the server's ``/tokenize``. By default the served model's
                directory when it is local, else the server's ``/tokenize`` (never with an API
                key: that endpoint is outside its guard). Loaded on first need only.
            template: ``"auto"`` (default) detects whether the server applies a score
                template itself and formats on exactly one side; ``"client"`` or
                ``"server"`` insist, and raise if the server disagrees.
            retry: a :class:`~qwen3_vllm_rerank.RetryPolicy`: tries, deadline, backoff and the
                cool-down of a failed replica.
            cache_size: entries of the LRU score cache (0, the default, turns it off).
            image_fetcher: the opt-in to ``http(s)://`` image URLs in queries and documents: a
                :class:`~qwen3_vllm_rerank.images.UrlFetcher` (timeout, size cap) with which
                this client fetches them. Without one such a URL raises ``InvalidInput``, and
                the server is never asked to fetch anything (a retrieved document is
                attacker-controlled; a server fetching its URLs is an SSRF hole).
            http_client: an httpx client to use instead of creating one; the caller keeps
                ownership and closes it.
        """
        self.batch_size = positive_int("batch_size", batch_size)
        self.max_concurrency = positive_int("max_concurrency", max_concurrency)
        self.max_length = None if max_length is None else positive_int("max_length", max_length)
        if long_documents not in LONG_DOCUMENT_POLICIES:
            raise InvalidInput(
                f"long_documents must be one of {LONG_DOCUMENT_POLICIES}, got {long_documents!r}"
            )
        if template not in ("client", "server", "auto"):
            raise InvalidInput(f"template must be 'client', 'server' or 'auto', got {template!r}")
        if model_family not in ("auto", "text", "vl"):
            raise InvalidInput(f"model_family must be 'auto', 'text' or 'vl', got {model_family!r}")
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidInput(f"instruction must be a str, got {type(instruction).__name__}")
        if not isinstance(retry, RetryPolicy):
            raise InvalidInput(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        if image_fetcher is not None and not isinstance(image_fetcher, UrlFetcher):
            raise InvalidInput(f"image_fetcher must be a UrlFetcher, got {type(image_fetcher).__name__}")
        self.image_fetcher = image_fetcher
        self.base_urls = _base_urls(base_url)
        self.instruction = instruction
        self.timeout = _timeout(timeout)
        self.retry = retry
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self._endpoints = Endpoints(self.base_urls, retry.cooldown)
        self._cache: ScoreCache[Scored] | None = ScoreCache(cache_size) if cache_size > 0 else None
        self._options = ScoringOptions(self.batch_size, self.max_length, long_documents)
        self._discovery = Discovery(
            self.base_urls[0], model, model_family, template, instruction, bool(self._api_key), tokenizer
        )
        self._profile: ServerProfile | None = None
        self._limits = limits(self.max_concurrency, len(self.base_urls))
        self._http: H | None = http_client
        self._init_transport()

    def _init_transport(self) -> None:
        """Set up what the subclass needs to send (its locks and connection pools)."""

    @property
    def base_url(self) -> str:
        """The first (or only) endpoint."""
        return self.base_urls[0]

    @property
    def model(self) -> str | None:
        """The served model: as given, or as discovered by the first call."""
        return self._profile.model if self._profile is not None else self._discovery.model

    @property
    def max_tokens(self) -> int | None:
        """The prompt budget: the server's ``max_model_len`` (known after the first call),
        capped by ``max_length``."""
        return max_tokens(self._profile, self.max_length)

    def cache_info(self) -> CacheInfo | None:
        """Hits and misses of the score cache, or ``None`` when ``cache_size`` is 0."""
        return self._cache.info() if self._cache is not None else None

    def cache_clear(self) -> None:
        """Empty the score cache."""
        if self._cache is not None:
            self._cache.clear()

    # -- the pieces both clients assemble -------------------------------------------------

    def _attempts(self) -> Attempts:
        return Attempts(self.retry, self._endpoints)

    def _request(self, http: H, url: str, call: proto.Call) -> httpx.Request:
        return build_request(http, url, call, self._api_key)

    def _scores(
        self, profile: ServerProfile, request: ScoreRequest, query: Item, documents: list[Item]
    ) -> Flow[list[Scored]]:
        instruction = next(
            (i for i in (request.instruction, self.instruction) if i is not None),
            family_prompt(profile.family).default_instruction,
        )
        return score_flow(profile, query, documents, instruction, self._options, self._cache)

    @staticmethod
    def _ranked(request: ScoreRequest, scored: list[Scored]) -> list[RerankResult]:
        order = sorted(range(len(scored)), key=lambda i: -scored[i].score)  # stable: ties keep input order
        if request.top_n is not None:
            order = order[: request.top_n]
        return [
            RerankResult(i, scored[i].score, request.documents[i], scored[i].truncated, scored[i].window)
            for i in order
        ]


class RerankClient(_BaseClient[httpx.Client]):
    """Blocking client: ``score`` and ``rerank`` against a vLLM server (options: see ``__init__``).

    Example:
        >>> with RerankClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
        ...     client.rerank("what is a closure?", ["A closure captures ...", "Rivers ..."], top_n=1)
    """

    def _init_transport(self) -> None:
        self._setup_lock = threading.Lock()
        self._owns_http = False

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout, limits=self._limits)
            self._owns_http = True
        return self._http

    def _send(self, call: proto.Call) -> httpx.Response:
        http = self._client()
        attempts = self._attempts()
        while True:
            url, delay = attempts.next()
            if delay:
                time.sleep(delay)
            request = self._request(http, url, call)
            try:
                response = http.send(request)
            except httpx.TransportError as exc:
                attempts.failed(url, translate_transport_error(exc, request))
                continue
            error = http_error(call, response)
            if error is None:
                attempts.succeeded(url)
                return response
            attempts.failed(url, error)  # raises unless another try is due

    def _run(self, flow: Flow[T]) -> T:
        try:
            calls = next(flow)
            while True:
                calls = flow.send([self._send(call) for call in calls])
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _ensure_profile(self) -> ServerProfile:
        """Learn about the server once, even when several threads start together."""
        if self._profile is None:
            with self._setup_lock:
                if self._profile is None:
                    self._profile = self._run(self._discovery.flow())
        return self._profile

    def _score_request(self, request: ScoreRequest) -> list[Scored]:
        if not request.documents:
            return []
        query, documents = prepare(request, self.image_fetcher)  # before any request
        return self._run(self._scores(self._ensure_profile(), request, query, documents))

    def score(
        self, query: Input, documents: Sequence[Input], *, instruction: str | None = None
    ) -> list[float]:
        """p(yes) for each document, in input order.

        A query or document is text, an :class:`~qwen3_vllm_rerank.Image` or a
        :class:`~qwen3_vllm_rerank.Content` (text and images; Qwen3-VL-Reranker only)."""
        request = score_request(query, documents, instruction)
        return [s.score for s in self._score_request(request)]

    def rerank(
        self,
        query: Input,
        documents: Sequence[Input],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
    ) -> list[RerankResult]:
        """Documents sorted by relevance, best first, at most ``top_n`` of them."""
        request = score_request(query, documents, instruction, top_n)
        return self._ranked(request, self._score_request(request))

    def close(self) -> None:
        """Close the HTTP client if this object created it; a later call opens a new one."""
        if self._owns_http and self._http is not None:
            http, self._http, self._owns_http = self._http, None, False
            http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncRerankClient(_BaseClient[httpx.AsyncClient]):
    """Asyncio client; the batches of a call are sent concurrently, at most
    ``max_concurrency`` requests in flight across all calls of this client (options: see
    ``__init__``).

    A client created by this object is bound to each event loop it is used on, and
    closed before that loop closes (see ``_transport.LoopBoundClient``), so one client
    can serve several ``asyncio.run`` calls without leaking connections.
    """

    def _init_transport(self) -> None:
        self._pools = LoopBoundClient(timeout=self.timeout, limits=self._limits)
        self._per_loop: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore, asyncio.Lock] | None = None

    def _client(self) -> httpx.AsyncClient:
        return self._http if self._http is not None else self._pools.get()

    def _loop_state(self) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        """The concurrency limit and the setup lock of the running event loop."""
        loop = asyncio.get_running_loop()
        if self._per_loop is None or self._per_loop[0] is not loop:
            self._per_loop = (loop, asyncio.Semaphore(self.max_concurrency), asyncio.Lock())
        return self._per_loop[1], self._per_loop[2]

    async def _send(self, call: proto.Call, limit: asyncio.Semaphore) -> httpx.Response:
        http = self._client()
        attempts = self._attempts()
        while True:
            url, delay = attempts.next()
            if delay:
                await asyncio.sleep(delay)
            request = self._request(http, url, call)
            try:
                async with limit:
                    response = await http.send(request)
            except httpx.TransportError as exc:
                attempts.failed(url, translate_transport_error(exc, request))
                continue
            error = http_error(call, response)
            if error is None:
                attempts.succeeded(url)
                return response
            attempts.failed(url, error)  # raises unless another try is due

    async def _send_all(self, calls: list[proto.Call]) -> list[httpx.Response]:
        limit, _ = self._loop_state()
        if len(calls) == 1:
            return [await self._send(calls[0], limit)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._send(call, limit)) for call in calls]
        except BaseExceptionGroup as group_error:
            # Surface the first failure as itself: callers catch Qwen3RerankError.
            first = group_error.exceptions[0]
            raise first from first.__cause__
        return [task.result() for task in tasks]

    async def _run(self, flow: Flow[T]) -> T:
        try:
            calls = next(flow)
            while True:
                calls = flow.send(await self._send_all(calls))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _ensure_profile(self) -> ServerProfile:
        """Learn about the server once, even when many calls start together."""
        if self._profile is None:
            _, setup = self._loop_state()
            async with setup:
                if self._profile is None:
                    self._profile = await self._run(self._discovery.flow())
        return self._profile

    async def _score_request(self, request: ScoreRequest) -> list[Scored]:
        if not request.documents:
            return []
        query, documents = await aprepare(request, self.image_fetcher)  # before any request
        profile = await self._ensure_profile()
        return await self._run(self._scores(profile, request, query, documents))

    async def score(
        self, query: Input, documents: Sequence[Input], *, instruction: str | None = None
    ) -> list[float]:
        """p(yes) for each document, in input order (inputs: see :meth:`RerankClient.score`)."""
        request = score_request(query, documents, instruction)
        return [s.score for s in await self._score_request(request)]

    async def rerank(
        self,
        query: Input,
        documents: Sequence[Input],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
    ) -> list[RerankResult]:
        """Documents sorted by relevance, best first, at most ``top_n`` of them."""
        request = score_request(query, documents, instruction, top_n)
        return self._ranked(request, await self._score_request(request))

    async def aclose(self) -> None:
        """Close the connections this object opened; a later call opens new ones."""
        await self._pools.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
