"""Sync and async clients for Qwen3-Reranker served by vLLM's score API.

The work of a call is written once, as a flow (a generator that yields lists of
:class:`~qwen3_vllm_rerank._protocol.Call` and receives the responses) in
:class:`_RerankCore`. :class:`RerankClient` sends a list one request after the other;
:class:`AsyncRerankClient` sends it concurrently, at most ``max_concurrency`` requests
in flight per client. Retries, endpoint choice and error translation are shared
state machines (``_retry.py``); only the sending and the sleeping differ.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import httpx

from . import _protocol as proto
from ._flow import Flow
from ._retry import Attempts, Endpoints, RetryPolicy
from .budget import LONG_DOCUMENT_POLICIES, LongDocuments, fit_documents
from .cache import CacheInfo, ScoreCache
from .errors import (
    InvalidInput,
    Qwen3RerankError,
    RerankConnectionError,
    RerankHTTPError,
    RerankTimeoutError,
    TemplateMismatchError,
)
from .prompt import DEFAULT_INSTRUCTION, format_document, format_prompt, format_query
from .sanitize import Neutraliser
from .tokens import LocalTokens, ServerTokens, TokenSource, load_tokenizer
from .types import RerankResult

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["AsyncRerankClient", "RerankClient"]

logger = logging.getLogger("qwen3_vllm_rerank")

BASE_URL_ENV = "QWEN3_VLLM_RERANK_BASE_URL"
API_KEY_ENV = "QWEN3_VLLM_RERANK_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"

Template = Literal["client", "server", "auto"]
T = TypeVar("T")

# A 2-character probe is 1-2 tokens bare and ~70 with the Qwen3 template around it.
_PROBE_TEMPLATED_ABOVE = 8
_PROBE_QUERY = "What is the capital of France?"
_PROBE_DOCUMENT = "Paris is the capital and largest city of France."
_TEMPLATE_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class _Scored:
    score: float
    truncated: bool
    window: int | None


def _translate_transport_error(exc: httpx.TransportError, request: httpx.Request) -> Qwen3RerankError:
    """The one place where httpx's transport errors become ours."""
    url = str(request.url)
    error: Qwen3RerankError
    if isinstance(exc, httpx.TimeoutException):
        error = RerankTimeoutError(url, request.extensions.get("timeout", {}).get("read"))
    else:
        error = RerankConnectionError(url, f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc  # kept when the retry logic finally raises it
    return error


def _http_error(response: httpx.Response) -> RerankHTTPError | None:
    try:
        proto.check_status(response)
    except RerankHTTPError as error:
        return error
    return None


def _base_urls(base_url: str | Sequence[str] | None) -> list[str]:
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if isinstance(base_url, str):
        base_url = [u for u in base_url.split(",") if u.strip()]
    return [u.strip().rstrip("/") for u in base_url]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return value


class _RerankCore:
    """Configuration, validation and the I/O-free flow of every call."""

    def __init__(
        self,
        base_url: str | Sequence[str] | None,
        model: str | None,
        instruction: str | None,
        api_key: str | None,
        timeout: float,
        batch_size: int,
        max_concurrency: int,
        max_length: int | None,
        long_documents: LongDocuments,
        tokenizer: str | Path | Tokenizer | None,
        template: Template,
        max_attempts: int,
        retry_deadline: float,
        cache_size: int,
    ) -> None:
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_concurrency = _positive_int("max_concurrency", max_concurrency)
        if max_length is not None:
            _positive_int("max_length", max_length)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidInput(f"timeout must be positive seconds, got {timeout!r}")
        if long_documents not in LONG_DOCUMENT_POLICIES:
            raise InvalidInput(
                f"long_documents must be one of {LONG_DOCUMENT_POLICIES}, got {long_documents!r}"
            )
        if template not in ("client", "server", "auto"):
            raise InvalidInput(f"template must be 'client', 'server' or 'auto', got {template!r}")
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidInput(f"instruction must be a str, got {type(instruction).__name__}")
        self.base_urls = _base_urls(base_url)
        self.model = model
        self.instruction = instruction if instruction is not None else DEFAULT_INSTRUCTION
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = float(timeout)
        self.max_length = max_length
        self.long_documents: LongDocuments = long_documents
        self.template: Template = template
        self._retry = RetryPolicy(max_attempts=max_attempts, deadline=retry_deadline)
        self._endpoints = Endpoints(self.base_urls, self._retry.cooldown)
        self._cache: ScoreCache[_Scored] | None = ScoreCache(cache_size) if cache_size > 0 else None
        # Learnt from the server on first use (see _setup_flow).
        self._tokenizer_option = tokenizer
        self._tokens: TokenSource | None = None
        self._neutralise: Neutraliser | None = None
        self._server_max_len: int | None = None
        self._server_templates: bool | None = None
        self._ready = False  # set only once every check of _setup_flow has passed

    @property
    def base_url(self) -> str:
        """The first (or only) endpoint."""
        return self.base_urls[0]

    # -- shared plumbing ------------------------------------------------------------

    def _client_kwargs(self) -> dict[str, Any]:
        pool = max(self.max_concurrency, 1) * len(self.base_urls)
        return {
            "timeout": httpx.Timeout(self.timeout),
            "limits": httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        }

    def _build(self, http: httpx.Client | httpx.AsyncClient, url: str, call: proto.Call) -> httpx.Request:
        """The request for ``call`` at endpoint ``url``; the key goes on every request, so an
        injected HTTP client authenticates too."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else None
        return http.build_request(call.method, url + call.path, json=call.json, headers=headers)

    def _attempts(self) -> Attempts:
        return Attempts(self._retry, self._endpoints)

    def cache_info(self) -> CacheInfo | None:
        """Hits and misses of the score cache, or ``None`` when ``cache_size`` is 0."""
        return self._cache.info() if self._cache is not None else None

    def cache_clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()

    @property
    def max_tokens(self) -> int | None:
        """The prompt budget: the server's ``max_model_len``, capped by ``max_length``."""
        limits = [n for n in (self._server_max_len, self.max_length) if n is not None]
        return min(limits) if limits else None

    # -- learning about the server, once ----------------------------------------------

    def _setup_flow(self) -> Flow[str]:
        if self._ready and self.model is not None:
            return self.model
        (response,) = yield [proto.models_call()]
        served = proto.parse_models(response)
        if self.model is None:
            if len(served) > 1:
                names = [m.name for m in served]
                raise InvalidInput(
                    f"the server at {self.base_url} serves several models {names}; pass model="
                )
            self.model = served[0].name
        self._server_max_len = next((m.max_model_len for m in served if m.name == self.model), None)
        self._tokens = self._resolve_tokens(self.model)
        self._neutralise = Neutraliser(
            self._tokens.added_tokens if self._tokens else ServerTokens.added_tokens
        )
        yield from self._template_flow(self.model)
        self._ready = True
        logger.debug(
            "server: model %r, max_model_len %s, tokens %s, server template %s",
            self.model,
            self._server_max_len,
            type(self._tokens).__name__,
            self._server_templates,
        )
        return self.model

    def _resolve_tokens(self, model: str) -> TokenSource | None:
        option = self._tokenizer_option
        if option == "server":
            if self._api_key:
                raise InvalidInput(
                    "tokenizer='server' needs /tokenize, which --api-key does not guard; with an API key "
                    "pass tokenizer= a local checkpoint directory, tokenizer.json or hub id"
                )
            return ServerTokens(model)
        if option is not None and not isinstance(option, (str, Path)):
            return LocalTokens(option)
        if option is not None:
            return LocalTokens(load_tokenizer(option))
        if Path(model, "tokenizer.json").is_file():  # served from a local directory
            return LocalTokens(load_tokenizer(model))
        if self._api_key:
            return None  # /tokenize is outside --api-key's guard: never used with a key
        return ServerTokens(model)

    def _template_flow(self, model: str) -> Flow[None]:
        """Find out whether the server wraps pairs in a template itself; format on one side only."""
        (probe,) = yield [proto.score_call(model, proto.ScoreBatch(0, "a", ["b"]))]
        self._server_templates = proto.parse_prompt_tokens(probe) > _PROBE_TEMPLATED_ABOVE
        if self._server_templates and self.template == "client":
            raise TemplateMismatchError(
                f"the server at {self.base_url} applies a score template itself (started with "
                "--chat-template), so client-side formatting would double the template and give wrong "
                "scores: use template='server' or 'auto', or restart vLLM without --chat-template"
            )
        if not self._server_templates and self.template == "server":
            raise TemplateMismatchError(
                f"template='server' but the server at {self.base_url} applies no score template: pairs "
                "would be scored without the Qwen3 prompt. Use template='client' or 'auto'"
            )
        if self._server_templates and self.template == "auto":
            yield from self._verify_server_template(model)

    def _verify_server_template(self, model: str) -> Flow[None]:
        """The server's template must give the client template's score, token for token."""
        if self._api_key:
            raise TemplateMismatchError(
                f"the server at {self.base_url} applies its own score template, and with an API key "
                "this client cannot check it against the Qwen3 template (that needs the unguarded "
                "/classify). Restart vLLM without --chat-template, or pass template='server' if you "
                "are sure its template is exactly Qwen3-Reranker's"
            )
        batch = proto.ScoreBatch(0, _PROBE_QUERY, [_PROBE_DOCUMENT], raw=True, instruction=self.instruction)
        served, reference = yield [
            proto.score_call(model, batch),
            proto.classify_call(model, format_prompt(_PROBE_QUERY, _PROBE_DOCUMENT, self.instruction)),
        ]
        (server_score,) = proto.parse_scores(served, 1)
        client_score = proto.parse_classify(reference)
        if abs(server_score - client_score) > _TEMPLATE_TOLERANCE:
            raise TemplateMismatchError(
                f"the server at {self.base_url} applies a score template that differs from "
                f"Qwen3-Reranker's (probe score {server_score:.6f} vs {client_score:.6f} with the exact "
                "template); a common cause is a template file that lost its final newline. Restart "
                "vLLM without --chat-template: this client formats the prompt itself"
            )

    # -- scoring ----------------------------------------------------------------------

    @staticmethod
    def _check_inputs(query: object, documents: object, instruction: object, top_n: object = None) -> None:
        """Reject what cannot be scored before any request is made."""
        if top_n is not None:
            _positive_int("top_n", top_n)
        if not isinstance(query, str):
            raise InvalidInput(f"query must be a str, got {type(query).__name__}")
        if not query.strip():
            raise InvalidInput("query is empty: there is nothing to rank documents against")
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise InvalidInput(f"documents must be a list of str, got {type(documents).__name__}")
        for i, doc in enumerate(documents):
            if not isinstance(doc, str):
                raise InvalidInput(f"documents[{i}] must be a str, got {type(doc).__name__}")
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidInput(f"instruction must be a str, got {type(instruction).__name__}")

    def _score_flow(
        self, query: str, documents: Sequence[str], instruction: str | None
    ) -> Flow[list[_Scored]]:
        self._check_inputs(query, documents, instruction)
        if not documents:
            return []
        model = yield from self._setup_flow()
        neutralise = self._neutralise or Neutraliser(())
        instruction = instruction if instruction is not None else self.instruction

        results: list[_Scored | None] = [None] * len(documents)
        keys = [(model, instruction, query, d) for d in documents]
        if self._cache is not None:
            results = [self._cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            scored = yield from self._score_missing(
                model, neutralise(query), neutralise(instruction), [neutralise(documents[i]) for i in todo]
            )
            for i, result in zip(todo, scored, strict=True):
                results[i] = result
                if self._cache is not None:
                    self._cache.put(keys[i], result)
        return [r for r in results if r is not None]

    def _score_missing(
        self, model: str, query: str, instruction: str, documents: list[str]
    ) -> Flow[list[_Scored]]:
        text_1 = format_query(query, instruction)
        prepared = yield from fit_documents(
            text_1, documents, max_tokens=self.max_tokens, policy=self.long_documents, tokens=self._tokens
        )
        pieces = [piece for p in prepared for piece in p.pieces]
        if self._server_templates:
            batches = proto.plan_batches(query, pieces, self.batch_size, raw=True, instruction=instruction)
        else:
            batches = proto.plan_batches(text_1, [format_document(p) for p in pieces], self.batch_size)
        responses = yield [proto.score_call(model, batch) for batch in batches]
        flat: list[float] = []
        for batch, response in zip(batches, responses, strict=True):
            flat.extend(proto.parse_scores(response, len(batch.texts_2)))
        logger.debug(
            "scored %d pieces of %d documents in %d requests", len(flat), len(documents), len(batches)
        )
        results = []
        position = 0
        for p in prepared:
            window_scores = flat[position : position + len(p.pieces)]
            position += len(p.pieces)
            best = max(range(len(window_scores)), key=window_scores.__getitem__)
            window = best if len(p.pieces) > 1 else None
            results.append(_Scored(window_scores[best], p.truncated, window))
        return results

    def _floats_flow(
        self, query: str, documents: Sequence[str], instruction: str | None
    ) -> Flow[list[float]]:
        scored = yield from self._score_flow(query, documents, instruction)
        return [s.score for s in scored]

    def _rerank_flow(
        self, query: str, documents: Sequence[str], top_n: int | None, instruction: str | None
    ) -> Flow[list[RerankResult]]:
        self._check_inputs(query, documents, instruction, top_n)
        scored = yield from self._score_flow(query, documents, instruction)
        order = sorted(range(len(scored)), key=lambda i: -scored[i].score)  # stable: ties keep input order
        if top_n is not None:
            order = order[:top_n]
        return [
            RerankResult(i, scored[i].score, documents[i], scored[i].truncated, scored[i].window)
            for i in order
        ]


_CLIENT_ARGS_DOC = """
    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``, or several (a list or a
            comma-separated string) to spread requests over replicas; defaults to
            ``$QWEN3_VLLM_RERANK_BASE_URL``, else ``http://127.0.0.1:8000``.
        model: the served model name; discovered from ``/v1/models`` when omitted.
        instruction: the task instruction; Qwen's default web-search one when omitted.
        api_key: sent as ``Authorization: Bearer``; defaults to ``$QWEN3_VLLM_RERANK_API_KEY``.
            With a key, only ``/v1/...`` endpoints (the ones ``--api-key`` guards) are used.
        timeout: seconds for each HTTP request.
        batch_size: pairs per request.
        max_concurrency: requests in flight (async) / pooled connections (sync).
        max_length: cap on prompt tokens, below the server's ``max_model_len``.
        long_documents: ``"truncate"`` (default), ``"chunk"`` or ``"error"`` for a
            document that does not fit; the template is never cut.
        tokenizer: where to count tokens: a checkpoint directory, a tokenizer.json, a hub
            id, a ``tokenizers.Tokenizer``, or ``"server"`` for the server's ``/tokenize``.
            By default the served model's directory when it is local, else the server's
            ``/tokenize`` (never with an API key: that endpoint is outside its guard).
        template: ``"auto"`` (default) detects whether the server applies a score
            template itself and formats on exactly one side; ``"client"`` or
            ``"server"`` insist, and raise if the server disagrees.
        max_attempts: tries per request on connection errors and 429/5xx.
        retry_deadline: seconds after which a request is no longer retried.
        cache_size: entries of the LRU score cache (0, the default, turns it off).
        http_client: an httpx client to use instead of creating one; the caller keeps
            ownership and closes it.
"""


class RerankClient(_RerankCore):
    __doc__ = "Blocking client: ``score`` and ``rerank`` against a vLLM server.\n" + _CLIENT_ARGS_DOC

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        *,
        model: str | None = None,
        instruction: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        batch_size: int = 128,
        max_concurrency: int = 8,
        max_length: int | None = None,
        long_documents: LongDocuments = "truncate",
        tokenizer: str | Path | Tokenizer | None = None,
        template: Template = "auto",
        max_attempts: int = 3,
        retry_deadline: float = 120.0,
        cache_size: int = 0,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            base_url, model, instruction, api_key, timeout, batch_size, max_concurrency, max_length,
            long_documents, tokenizer, template, max_attempts, retry_deadline, cache_size,
        )  # fmt: skip
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(**self._client_kwargs())

    def _send(self, call: proto.Call) -> httpx.Response:
        attempts = self._attempts()
        while True:
            url, delay = attempts.next()
            if delay:
                time.sleep(delay)
            request = self._build(self._http, url, call)
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                attempts.failed(url, _translate_transport_error(exc, request))
                continue
            error = _http_error(response)
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

    def score(self, query: str, documents: Sequence[str], *, instruction: str | None = None) -> list[float]:
        """p(yes) for each document, in input order."""
        return self._run(self._floats_flow(query, documents, instruction))

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
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncRerankClient(_RerankCore):
    __doc__ = (
        "Asyncio client; the batches of a call are sent concurrently, at most\n"
        "``max_concurrency`` requests in flight across all calls of this client.\n" + _CLIENT_ARGS_DOC
    )

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        *,
        model: str | None = None,
        instruction: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        batch_size: int = 128,
        max_concurrency: int = 8,
        max_length: int | None = None,
        long_documents: LongDocuments = "truncate",
        tokenizer: str | Path | Tokenizer | None = None,
        template: Template = "auto",
        max_attempts: int = 3,
        retry_deadline: float = 120.0,
        cache_size: int = 0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url, model, instruction, api_key, timeout, batch_size, max_concurrency, max_length,
            long_documents, tokenizer, template, max_attempts, retry_deadline, cache_size,
        )  # fmt: skip
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(**self._client_kwargs())
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._setup_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        """Per event loop: the limit, and (if this client owns it) a fresh connection pool,
        since pooled connections belong to the loop that opened them."""
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(self.max_concurrency))
        if self._owns_http and self._http_loop is not loop:
            if self._http_loop is not None and self._http_loop.is_closed():
                self._http = httpx.AsyncClient(**self._client_kwargs())
            self._http_loop = loop
        return self._limit[1]

    async def _send(self, call: proto.Call, limit: asyncio.Semaphore) -> httpx.Response:
        attempts = self._attempts()
        while True:
            url, delay = attempts.next()
            if delay:
                await asyncio.sleep(delay)
            request = self._build(self._http, url, call)
            try:
                async with limit:
                    response = await self._http.send(request)
            except httpx.TransportError as exc:
                attempts.failed(url, _translate_transport_error(exc, request))
                continue
            error = _http_error(response)
            if error is None:
                attempts.succeeded(url)
                return response
            attempts.failed(url, error)  # raises unless another try is due

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

    async def _ensure_setup(self) -> None:
        """Learn about the server once, even when many calls start together."""
        if self._ready:
            return
        loop = asyncio.get_running_loop()
        if self._setup_lock is None or self._setup_lock[0] is not loop:
            self._setup_lock = (loop, asyncio.Lock())
        async with self._setup_lock[1]:
            await self._run(self._setup_flow())

    async def score(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None
    ) -> list[float]:
        """p(yes) for each document, in input order."""
        self._check_inputs(query, documents, instruction)
        if documents:
            await self._ensure_setup()
        return await self._run(self._floats_flow(query, documents, instruction))

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
    ) -> list[RerankResult]:
        """Documents sorted by relevance, best first, at most ``top_n`` of them."""
        self._check_inputs(query, documents, instruction, top_n)
        if documents:
            await self._ensure_setup()
        return await self._run(self._rerank_flow(query, documents, top_n, instruction))

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
