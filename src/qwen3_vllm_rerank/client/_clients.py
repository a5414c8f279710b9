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
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar

import httpx

from .. import _protocol as proto
from .._redaction import redact_url
from ..errors import InvalidInput, RerankHTTPError
from ..images import ImageCacheInfo, PreparedImageCache, UrlFetcher
from ..prompt import PROMPT_FAMILIES
from ._budget import LONG_DOCUMENT_POLICIES, LongDocuments
from ._discovery import Discovery, FamilyOption, ServerProfile, Template
from ._flow import Flow
from ._inputs import Input, Prepared, ScoreRequest, aprepare, positive_int, prepare, score_request
from ._inputs import image_cache as image_cache_of
from ._options import (
    API_KEY_ENV,
    BASE_URL_ENV,
    CONNECT_TIMEOUT,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    ClientOptions,
    options_doc,
)
from ._results import RerankResult, UsableRanking
from ._retry import Attempts, Endpoints, RetryPolicy
from ._score_cache import CacheInfo, ScoreCache
from ._scoring import Scored, Scoring, ScoringOptions, image_limit_of, max_tokens, refuse_images, score_flow
from ._tokens import TokenizerOption
from ._transport import (
    LoopBoundClient,
    build_request,
    http_error,
    limits,
    sync_client,
    translate_transport_error,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "DEFAULT_TIMEOUT", "AsyncRerankClient", "RerankClient"]

H = TypeVar("H", httpx.Client, httpx.AsyncClient)
T = TypeVar("T")


def _base_urls(base_url: str | Sequence[str] | None) -> list[str]:
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if isinstance(base_url, str):
        base_url = [u for u in base_url.split(",") if u.strip()]
    return [u.strip().rstrip("/") for u in base_url]


def _has_userinfo(url: str) -> bool:
    """Whether httpx reads ``user:password@`` in ``url`` (and would send it as Basic auth)."""
    try:
        return bool(httpx.URL(url).userinfo)
    except httpx.InvalidURL:
        return False  # refused, with its own message, when the first request is built


def _timeout(value: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInput(f"timeout must be positive seconds or an httpx.Timeout, got {value!r}")
    return httpx.Timeout(float(value), connect=min(float(value), CONNECT_TIMEOUT))


class _BaseClient(Generic[H]):
    """Settings, validation and the flows of every call; subclasses send. The options are
    declared once, in ``_options.py``, and documented on the two public classes."""

    def __init__(
        self,
        base_url: str | Sequence[str] | None = ClientOptions.base_url,
        *,
        model: str | None = ClientOptions.model,
        model_family: FamilyOption = ClientOptions.model_family,
        instruction: str | None = ClientOptions.instruction,
        api_key: str | None = ClientOptions.api_key,
        timeout: float | httpx.Timeout = ClientOptions.timeout,
        batch_size: int = ClientOptions.batch_size,
        max_concurrency: int = ClientOptions.max_concurrency,
        max_length: int | None = ClientOptions.max_length,
        long_documents: LongDocuments = ClientOptions.long_documents,
        tokenizer: TokenizerOption | Tokenizer = ClientOptions.tokenizer,
        template: Template = ClientOptions.template,
        retry: RetryPolicy = ClientOptions.retry,
        cache_size: int = ClientOptions.cache_size,
        image_cache: int | PreparedImageCache = ClientOptions.image_cache,
        image_fetcher: UrlFetcher | None = ClientOptions.image_fetcher,
        http_client: H | None = None,
    ) -> None:
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
        self._image_cache = image_cache_of(image_cache)
        self.base_urls = _base_urls(base_url)
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        with_userinfo = [redact_url(u) for u in self.base_urls if _has_userinfo(u)]
        if with_userinfo and self._api_key:
            raise InvalidInput(
                f"base_url {with_userinfo[0]} carries user:password@ and an api_key is set too: httpx "
                "would send the password as Basic auth instead of the key as Bearer. Use one of them: "
                "drop the userinfo from base_url, or pass no api_key (and unset $" + API_KEY_ENV + ")"
            )
        self.instruction = instruction
        self.timeout = _timeout(timeout)
        self.retry = retry
        self._endpoints = Endpoints(self.base_urls, retry.cooldown)
        self._cache: ScoreCache[Scored] | None = ScoreCache(cache_size) if cache_size > 0 else None
        self._options = ScoringOptions(
            self.batch_size, self.max_length, long_documents, tuple(self._endpoints.urls)
        )
        self._discovery = Discovery(
            redact_url(self.base_urls[0]),
            model,
            model_family,
            template,
            instruction,
            bool(self._api_key),
            tokenizer,
        )
        self._profile: ServerProfile | None = None
        # What the server's --limit-mm-per-prompt allows, as learnt from its answers: the most
        # images per pair it refused above (None: never refused) and the most it took.
        self._image_limit: int | None = None
        self._images_accepted = 1
        self._limits = limits(self.max_concurrency, len(self.base_urls))
        self._http: H | None = http_client
        self._init_transport()

    def _init_transport(self) -> None:
        """Set up what the subclass needs to send (its locks and connection pools)."""

    def __repr__(self) -> str:
        urls = [redact_url(u) for u in self.base_urls]
        return f"{type(self).__name__}(base_url={urls!r}, model={self.model!r})"

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
        """Empty the score cache (the prepared-image cache, which other clients may share, stays)."""
        if self._cache is not None:
            self._cache.clear()

    def image_cache_info(self) -> ImageCacheInfo | None:
        """Hits, misses, evictions and bytes of the prepared-image cache (which other clients may
        share: the default one is process-wide), or ``None`` when ``image_cache`` is 0."""
        return self._image_cache.info() if self._image_cache is not None else None

    # -- the pieces both clients assemble -------------------------------------------------

    def _attempts(self, call: proto.Call) -> Attempts:
        """The tries of ``call``, routed by its route key (image pages to their replica)."""
        return Attempts(self.retry, self._endpoints, route=call.route)

    def _request(self, http: H, url: str, call: proto.Call) -> httpx.Request:
        return build_request(http, url, call, self._api_key)

    def _scores(
        self, profile: ServerProfile, request: ScoreRequest, prepared: Prepared, strict: bool
    ) -> Flow[Scoring]:
        instruction = next(
            (i for i in (request.instruction, self.instruction) if i is not None),
            PROMPT_FAMILIES[profile.family].default_instruction,
        )
        return score_flow(
            profile,
            prepared,
            instruction,
            self._options,
            self._cache,
            strict=strict,
            image_limit=self._image_limit,
            images_accepted=self._images_accepted,
        )

    def _learnt(self, scoring: Scoring) -> Scoring:
        self._images_accepted = max(self._images_accepted, scoring.images_accepted)
        return scoring

    def _learn_image_limit(self, error: RerankHTTPError) -> bool:
        """Whether ``error`` taught the server's image limit just now (then the call is scored
        again with it: the refused batch computed nothing, and was the first one sent)."""
        limit = image_limit_of(error)
        if limit is None or (self._image_limit is not None and self._image_limit <= limit):
            return False
        self._image_limit = limit
        return True

    @staticmethod
    def _ranked(request: ScoreRequest, scored: dict[int, Scored]) -> list[RerankResult]:
        order = sorted(scored, key=lambda i: -scored[i].score)  # stable: ties keep input order
        if request.top_n is not None:
            order = order[: request.top_n]
        return [
            RerankResult(i, scored[i].score, request.documents[i], scored[i].truncated, scored[i].window)
            for i in order
        ]


class RerankClient(_BaseClient[httpx.Client]):
    __doc__ = options_doc(
        """Blocking client: ``score`` and ``rerank`` against a vLLM server.

        Example:
            >>> with RerankClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
            ...     client.rerank("what is a closure?", ["A closure captures ...", "Rivers ..."], top_n=1)
        """,
        extra={
            "http_client": "An httpx.Client to use instead of creating one; the caller keeps ownership "
            "and closes it."
        },
    )

    def _init_transport(self) -> None:
        self._setup_lock = threading.Lock()
        self._owns_http = False

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = sync_client(self.timeout, self._limits)
            self._owns_http = True
        return self._http

    def _send(self, call: proto.Call) -> httpx.Response:
        http = self._client()
        attempts = self._attempts(call)
        while True:
            url, delay = attempts.next()
            if delay:
                time.sleep(delay)
            request = self._request(http, url, call)
            try:
                response = http.send(request)
            except httpx.RequestError as exc:
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

    def _score_request(self, request: ScoreRequest, strict: bool) -> Scoring:
        if not request.documents:
            return Scoring({}, {})
        profile = self._ensure_profile()
        refuse_images(profile, request)  # before any image is fetched or decoded
        prepared = prepare(request, self.image_fetcher, self._image_cache)  # each image once
        try:
            return self._learnt(self._run(self._scores(profile, request, prepared, strict)))
        except RerankHTTPError as error:
            if not self._learn_image_limit(error):
                raise
        return self._learnt(self._run(self._scores(profile, request, prepared, strict)))

    def score(
        self, query: Input, documents: Sequence[Input], *, instruction: str | None = None
    ) -> list[float]:
        """p(yes) for each document, in input order.

        A query or document is text, an :class:`~qwen3_vllm_rerank.Image` or a
        :class:`~qwen3_vllm_rerank.Content` (text and images; Qwen3-VL-Reranker only)."""
        request = score_request(query, documents, instruction)
        scored = self._score_request(request, strict=True).scored
        return [scored[i].score for i in range(len(documents))]

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
        return self._ranked(request, self._score_request(request, strict=True).scored)

    def rerank_usable(self, query: Input, documents: Sequence[Input]) -> UsableRanking:
        """Score the documents that can be scored and say why each other one cannot.

        :meth:`rerank` raises one :class:`~qwen3_vllm_rerank.UnusableDocuments` when any document's
        content cannot be used (an unreadable image, too long with ``long_documents="error"``, more
        images than the server takes); this scores the others in the same one call and returns
        ``UsableRanking(results, unusable)``, ``unusable`` mapping each such document's index to its
        reason (safe to show). What the adapters' ``on_error="passthrough"`` and
        :func:`~qwen3_vllm_rerank.batch.rerank_dataset` use. The query being unusable still raises.
        """
        request = score_request(query, documents, None)
        scoring = self._score_request(request, strict=False)
        return UsableRanking(self._ranked(request, scoring.scored), scoring.unusable)

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
    __doc__ = options_doc(
        """Asyncio client; the batches of a call are sent concurrently, at most
        ``max_concurrency`` requests in flight across all calls of this client.

        A client created by this object is bound to each event loop it is used on, and
        closed before that loop closes (see ``_transport.LoopBoundClient``), so one client
        can serve several ``asyncio.run`` calls without leaking connections.
        """,
        extra={
            "http_client": "An httpx.AsyncClient to use instead of creating one; the caller keeps "
            "ownership and closes it."
        },
    )

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
        attempts = self._attempts(call)
        while True:
            url, delay = attempts.next()
            if delay:
                await asyncio.sleep(delay)
            request = self._request(http, url, call)
            try:
                async with limit:
                    response = await http.send(request)
            except httpx.RequestError as exc:
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

    async def _score_request(self, request: ScoreRequest, strict: bool) -> Scoring:
        if not request.documents:
            return Scoring({}, {})
        profile = await self._ensure_profile()
        refuse_images(profile, request)  # before any image is fetched or decoded
        prepared = await aprepare(request, self.image_fetcher, self._image_cache)  # each image once
        try:
            return self._learnt(await self._run(self._scores(profile, request, prepared, strict)))
        except RerankHTTPError as error:
            if not self._learn_image_limit(error):
                raise
        return self._learnt(await self._run(self._scores(profile, request, prepared, strict)))

    async def score(
        self, query: Input, documents: Sequence[Input], *, instruction: str | None = None
    ) -> list[float]:
        """p(yes) for each document, in input order (inputs: see :meth:`RerankClient.score`)."""
        request = score_request(query, documents, instruction)
        scored = (await self._score_request(request, strict=True)).scored
        return [scored[i].score for i in range(len(documents))]

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
        return self._ranked(request, (await self._score_request(request, strict=True)).scored)

    async def rerank_usable(self, query: Input, documents: Sequence[Input]) -> UsableRanking:
        """:meth:`RerankClient.rerank_usable` on this client."""
        request = score_request(query, documents, None)
        scoring = await self._score_request(request, strict=False)
        return UsableRanking(self._ranked(request, scoring.scored), scoring.unusable)

    async def aclose(self) -> None:
        """Close the connections this object opened; a later call opens new ones."""
        await self._pools.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
