"""Sync and async clients for Qwen3-Reranker served by vLLM's score API.

The work of a call is written once, as a generator that yields lists of
:class:`~qwen3_vllm_rerank._protocol.Call` and receives the responses
(``_RerankCore``). :class:`RerankClient` sends each list one request after the other;
:class:`AsyncRerankClient` sends a list concurrently, at most ``max_concurrency``
requests in flight per client. Nothing else differs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from . import _protocol as proto
from .errors import (
    InvalidInput,
    Qwen3RerankError,
    RerankConnectionError,
    RerankTimeoutError,
)
from .prompt import DEFAULT_INSTRUCTION, format_document, format_query
from .types import RerankResult

__all__ = ["AsyncRerankClient", "RerankClient"]

logger = logging.getLogger("qwen3_vllm_rerank")

BASE_URL_ENV = "QWEN3_VLLM_RERANK_BASE_URL"
API_KEY_ENV = "QWEN3_VLLM_RERANK_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"

T = TypeVar("T")
Flow = Generator[list[proto.Call], list[httpx.Response], T]


def _translate_transport_error(exc: httpx.TransportError, request: httpx.Request) -> Qwen3RerankError:
    """The one place where httpx's transport errors become ours."""
    url = str(request.url)
    if isinstance(exc, httpx.TimeoutException):
        timeout = request.extensions.get("timeout", {}).get("read")
        return RerankTimeoutError(url, timeout)
    return RerankConnectionError(url, f"{type(exc).__name__}: {exc}")


def rank(documents: Sequence[str], scores: Sequence[float], top_n: int | None) -> list[RerankResult]:
    """Results sorted by score (stable: ties keep input order), cut to ``top_n``."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if top_n is not None:
        order = order[:top_n]
    return [RerankResult(index=i, score=scores[i], document=documents[i]) for i in order]


class _RerankCore:
    """Configuration, validation and the I/O-free flow of every call."""

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        instruction: str | None,
        api_key: str | None,
        timeout: float,
        batch_size: int,
        max_concurrency: int,
    ) -> None:
        if batch_size <= 0:
            raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_concurrency <= 0:
            raise InvalidInput(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
        if timeout <= 0:
            raise InvalidInput(f"timeout must be positive seconds, got {timeout!r}")
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.model = model
        self.instruction = instruction if instruction is not None else DEFAULT_INSTRUCTION
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency

    def _client_kwargs(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return {
            "base_url": self.base_url,
            "timeout": httpx.Timeout(self.timeout),
            "headers": headers,
            "limits": httpx.Limits(
                max_connections=max(self.max_concurrency, 1),
                max_keepalive_connections=max(self.max_concurrency, 1),
            ),
        }

    def _model_flow(self) -> Flow[str]:
        if self.model is None:
            (response,) = yield [proto.models_call()]
            names = [m.name for m in proto.parse_models(response)]
            if len(names) > 1:
                raise InvalidInput(
                    f"the server at {self.base_url} serves several models {names}; pass model=..."
                )
            self.model = names[0]
            logger.debug("discovered served model %r", self.model)
        return self.model

    def _score_flow(self, query: str, documents: Sequence[str], instruction: str | None) -> Flow[list[float]]:
        if not isinstance(query, str):
            raise InvalidInput(f"query must be a str, got {type(query).__name__}")
        if isinstance(documents, str):
            raise InvalidInput("documents must be a list of str, got a single str")
        for i, doc in enumerate(documents):
            if not isinstance(doc, str):
                raise InvalidInput(f"documents[{i}] must be a str, got {type(doc).__name__}")
        if not documents:
            return []
        model = yield from self._model_flow()
        text_1 = format_query(query, instruction if instruction is not None else self.instruction)
        batches = proto.plan_batches(text_1, [format_document(d) for d in documents], self.batch_size)
        responses = yield [proto.score_call(model, batch) for batch in batches]
        scores: list[float] = []
        for batch, response in zip(batches, responses, strict=True):
            scores.extend(proto.parse_scores(response, len(batch.texts_2)))
        logger.debug("scored %d documents in %d requests", len(scores), len(batches))
        return scores

    def _rerank_flow(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None,
        instruction: str | None,
    ) -> Flow[list[RerankResult]]:
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n <= 0):
            raise InvalidInput(f"top_n must be a positive integer or None, got {top_n!r}")
        scores = yield from self._score_flow(query, documents, instruction)
        return rank(documents, scores, top_n)


class RerankClient(_RerankCore):
    """Blocking client: ``score`` and ``rerank`` against a vLLM server.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``; defaults to
            ``$QWEN3_VLLM_RERANK_BASE_URL``, else ``http://127.0.0.1:8000``.
        model: the served model name; discovered from ``/v1/models`` when omitted.
        instruction: the task instruction; Qwen's default web-search one when omitted.
        api_key: sent as ``Authorization: Bearer``; defaults to ``$QWEN3_VLLM_RERANK_API_KEY``.
        timeout: seconds for each HTTP request.
        batch_size: documents per request.
        max_concurrency: size of the connection pool.
        http_client: an ``httpx.Client`` to use instead of creating one; the caller keeps
            ownership and closes it.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str | None = None,
        instruction: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        batch_size: int = 64,
        max_concurrency: int = 8,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, model, instruction, api_key, timeout, batch_size, max_concurrency)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(**self._client_kwargs())

    def _send(self, call: proto.Call) -> httpx.Response:
        request = self._http.build_request(call.method, self.base_url + call.path, json=call.json)
        try:
            return self._http.send(request)
        except httpx.TransportError as exc:
            raise _translate_transport_error(exc, request) from exc

    def _run(self, flow: Flow[T]) -> T:
        try:
            calls = next(flow)
            while True:
                calls = flow.send([self._send(call) for call in calls])
        except StopIteration as stop:
            result: T = stop.value
            return result

    def score(self, query: str, documents: Sequence[str], *, instruction: str | None = None) -> list[float]:
        """p(yes) for each document, in input order."""
        return self._run(self._score_flow(query, documents, instruction))

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
    ) -> list[RerankResult]:
        """Documents sorted by relevance, best first, at most ``top_n`` of them."""
        return self._run(self._rerank_flow(query, documents, top_n, instruction))

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRerankClient(_RerankCore):
    """Asyncio client; batches of one call are sent concurrently.

    Takes the same arguments as :class:`RerankClient`; ``max_concurrency`` bounds the
    requests in flight across all calls made through this client, and ``http_client``
    is an ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str | None = None,
        instruction: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        batch_size: int = 64,
        max_concurrency: int = 8,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, model, instruction, api_key, timeout, batch_size, max_concurrency)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(**self._client_kwargs())
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(self.max_concurrency))
        return self._limit[1]

    async def _send(self, call: proto.Call, limit: asyncio.Semaphore) -> httpx.Response:
        request = self._http.build_request(call.method, self.base_url + call.path, json=call.json)
        async with limit:
            try:
                return await self._http.send(request)
            except httpx.TransportError as exc:
                raise _translate_transport_error(exc, request) from exc

    async def _send_all(self, calls: list[proto.Call]) -> list[httpx.Response]:
        limit = self._semaphore()
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

    async def score(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None
    ) -> list[float]:
        """p(yes) for each document, in input order."""
        return await self._run(self._score_flow(query, documents, instruction))

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
    ) -> list[RerankResult]:
        """Documents sorted by relevance, best first, at most ``top_n`` of them."""
        return await self._run(self._rerank_flow(query, documents, top_n, instruction))

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
