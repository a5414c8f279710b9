"""The contract the adapter distributions build on: settings, one rerank call, its outcome.

The LangChain, LlamaIndex and Haystack adapters (``integrations/*``, their own distributions) use
only what this module exports; it is free of every framework. Both LangChain and LlamaIndex build
components on pydantic v2, so the settings are pydantic models an adapter class inherits next to
its framework base (Haystack's ranker holds one instead); every shared option's default and
description are read from the core's one table (:class:`ClientOptions`).

Settings
    :class:`ClientSettings` (where the server is, how to talk to it) and :class:`RerankSettings`
    (plus ``top_n``, ``score_threshold``, ``on_error``). :func:`client_of` / :func:`async_client_of`
    give the core client built from them (created on first use, reused); :func:`warm_up` /
    :func:`awarm_up` learn the server before the first call.
One call
    :func:`rerank` / :func:`arerank` score an adapter's documents (each an :data:`AdapterInput`:
    text, :class:`~qwen3_vllm_rerank.Content`, or :class:`Unusable` for one the adapter could not
    map) and return a :class:`Reranked`; :func:`items_to_return` turns it into the
    :class:`ReturnedItem` s to return, in order, with the metadata keys (:data:`TRUNCATED_KEY`,
    :data:`WINDOW_KEY`, :data:`RERANK_ERROR_KEY`) to add.
Declaring more settings
    :class:`ClientOptions`, :func:`option_names`, :func:`options_doc`: the option table itself,
    for an adapter that cannot inherit the model and declares the options as keyword arguments.

It needs pydantic (``pydantic>=2,<3``), which the core does not depend on: the core's
``adapters`` extra and every adapter distribution declare it, and no other module of the core
imports it.

Which failure is which: a programmer error (a document of the wrong type, a ``page_content``
of ``None``, an empty query) is :class:`~qwen3_vllm_rerank.InvalidInput` and always raised;
whatever one document's content does, it can fail only that document: retrieved data that
cannot be scored (an image that cannot be read, is refused or cannot be fetched, an image
value of a type that is no image, more images than the server takes per prompt, a text that
cannot be shown to fit the token budget) is :class:`~qwen3_vllm_rerank.UnusableDocuments`:
raised with ``on_error="raise"``, naming every such document at once before any score batch
is sent, and with ``"passthrough"`` those documents come back last, unscored, and the others
are scored in the same client call; a failed server or transport is any other
:class:`~qwen3_vllm_rerank.Qwen3RerankError`: raised, or with ``"passthrough"`` the documents
come back in retrieval order, unscored.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    SerializerFunctionWrapHandler,
    field_serializer,
)

from ._redaction import redact_url, redact_urls_in
from .client import (
    API_KEY_ENV,
    BASE_URL_ENV,
    AsyncRerankClient,
    FamilyOption,
    LongDocuments,
    RerankClient,
    RerankResult,
    RetryPolicy,
    Template,
)
from .client._options import ClientOptions, option_default, option_doc, option_names, options_doc
from .errors import InvalidInput, Qwen3RerankError, RerankHTTPError, UnusableDocuments
from .images import Content, UrlFetcher

__all__ = [
    "RERANK_ERROR_KEY",
    "TRUNCATED_KEY",
    "WINDOW_KEY",
    "AdapterInput",
    "ClientOptions",
    "ClientSettings",
    "OnError",
    "RerankSettings",
    "Reranked",
    "ReturnedItem",
    "Unusable",
    "arerank",
    "async_client_of",
    "awarm_up",
    "client_of",
    "items_to_return",
    "option_names",
    "options_doc",
    "rerank",
    "warm_up",
]

OnError = Literal["raise", "passthrough"]

#: Metadata keys the adapters add to a returned document (only when they apply).
TRUNCATED_KEY = "truncated"
WINDOW_KEY = "window"
RERANK_ERROR_KEY = "rerank_error"

_MARKER_CHARS = 200


def _base_url_from_env() -> str | None:
    return os.environ.get(BASE_URL_ENV) or None


def _api_key_from_env() -> SecretStr | None:
    value = os.environ.get(API_KEY_ENV)
    return SecretStr(value) if value else None


def _shared(name: str, **validation: Any) -> Any:
    """The pydantic field of the shared option ``name``: its default (or ``default_factory``,
    when given in ``validation``) and its description are the core's (``client/_options.py``);
    it cannot be reassigned, since the client built from it is cached. ``validation`` adds
    pydantic's constraints (``gt=0``, ...)."""
    if "default_factory" not in validation:
        validation["default"] = option_default(name)
    return Field(description=option_doc(name), frozen=True, **validation)


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
    """Where the vLLM server is and how to talk to it: the core client's options as pydantic
    fields, shared by every adapter component, plus the injected HTTP clients.

    The fields cannot be reassigned once the object exists (the client built from them is
    cached); ``model_copy(update={...})`` makes a variant with its own client. Secrets are
    never shown or serialised: ``api_key`` is left out of ``repr`` and dumps, a
    ``user:password@`` in ``base_url`` is redacted there, and ``image_fetcher`` is dumped
    without its headers (a restored adapter's fetcher has the default ones).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    base_url: str | Sequence[str] | None = _shared("base_url", default_factory=_base_url_from_env)
    model: str | None = _shared("model")
    model_family: FamilyOption = _shared("model_family")
    instruction: str | None = _shared("instruction")
    api_key: SecretStr | None = _shared("api_key", default_factory=_api_key_from_env, exclude=True)
    timeout: float = _shared("timeout", gt=0)
    batch_size: int = _shared("batch_size", gt=0)
    max_concurrency: int = _shared("max_concurrency", gt=0)
    max_length: int | None = _shared("max_length", gt=0)
    long_documents: LongDocuments = _shared("long_documents")
    tokenizer: str | Path | None = _shared("tokenizer")
    template: Template = _shared("template")
    retry: RetryPolicy = _shared("retry")
    cache_size: int = _shared("cache_size", ge=0)
    image_cache: int = _shared("image_cache", ge=0)
    image_fetcher: UrlFetcher | None = _shared("image_fetcher")
    http_client: httpx.Client | None = Field(
        default=None,
        exclude=True,
        repr=False,
        frozen=True,
        description="An httpx.Client for the sync path (proxies, certificates, event hooks); the caller "
        "keeps ownership and closes it. Never serialised.",
    )
    http_async_client: httpx.AsyncClient | None = Field(
        default=None,
        exclude=True,
        repr=False,
        frozen=True,
        description="An httpx.AsyncClient for the async path; the caller keeps ownership and closes it. "
        "Never serialised.",
    )

    _clients: _Clients = PrivateAttr(default_factory=_Clients)

    def client_options(self) -> dict[str, Any]:
        """The core client's keyword arguments: every shared option (the injected HTTP
        clients are passed separately)."""
        options = {name: getattr(self, name) for name in option_names()}
        options["api_key"] = self.api_key.get_secret_value() if self.api_key is not None else None
        return options

    @field_serializer("base_url")
    def _dump_base_url(self, base_url: str | Sequence[str] | None) -> str | list[str] | None:
        if base_url is None or isinstance(base_url, str):
            return None if base_url is None else redact_url(base_url)
        return [redact_url(url) for url in base_url]

    @field_serializer("image_fetcher", mode="wrap")
    def _dump_image_fetcher(self, fetcher: UrlFetcher | None, handler: SerializerFunctionWrapHandler) -> Any:
        dumped = handler(fetcher)
        if isinstance(dumped, dict):
            dumped.pop("headers", None)  # may hold credentials (Authorization for a CDN)
        return dumped

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (self._dump_base_url(value) if name == "base_url" else value)

    @property
    def served_model(self) -> str | None:
        """The model as given, or as a client of this object discovered it, else ``None``."""
        for client in (self._clients.sync, self._clients.async_):
            if client is not None and client.model:
                return client.model
        return self.model

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


@dataclass(frozen=True, slots=True)
class Unusable:
    """A retrieved document the adapter itself found unscorable (e.g. an image that is not
    valid base64), in place of its input; ``reason`` says why, safe to show."""

    reason: str


#: What an adapter hands to :func:`rerank` for each of its documents.
AdapterInput = str | Content | Unusable


@dataclass(frozen=True, slots=True)
class Reranked:
    """What became of one adapter call's documents (indices are positions in them).

    ``scored``: the results, best first (``index`` mapped back to the adapter's documents).
    ``passed_through``: the documents sent to a call that failed, in retrieval order, each
    to be marked with ``failure``. ``unusable``: index -> marker of the documents that were
    dropped because they cannot be scored.
    """

    scored: list[RerankResult] = field(default_factory=list)
    passed_through: list[int] = field(default_factory=list)
    failure: str = ""
    unusable: dict[int, str] = field(default_factory=dict)


class _RerankCall:
    """The bookkeeping of one adapter call on ``documents``: which are sent, which were
    dropped, and what came back; ``on_error`` decides what a failure does, warnings go to
    ``logger``. Send :attr:`to_send` (when it is not empty) in one client call, report it
    with :meth:`scored` or :meth:`failed`, then read :meth:`outcome`.

    One client call at most: the client checks every document's content (its images, each
    fetched and prepared once, the images per prompt, its length) before it sends any score
    batch, and with ``on_error="passthrough"`` scores the usable documents in that same call
    and names the others (:meth:`RerankClient.rerank_usable`); with ``"raise"`` it raises one
    :class:`UnusableDocuments` naming every one of them. So no batch is sent twice, no image
    is fetched twice, and no document's content can fail the others.
    """

    def __init__(self, documents: Sequence[AdapterInput], on_error: OnError, logger: logging.Logger) -> None:
        self._documents = documents
        self._on_error = on_error
        self._logger = logger
        reasons = {i: d.reason for i, d in enumerate(documents) if isinstance(d, Unusable)}
        if reasons and on_error != "passthrough":
            raise UnusableDocuments(reasons)
        self._unusable: dict[int, str] = {}
        self._sent = [i for i in range(len(documents)) if i not in reasons]
        self._drop(reasons)
        self._outcome: Reranked | None = None if self._sent else Reranked(unusable=self._unusable)

    @property
    def lenient(self) -> bool:
        """Whether the client should score the usable documents and name the others
        (``on_error="passthrough"``) rather than raise :class:`UnusableDocuments`."""
        return self._on_error == "passthrough"

    @property
    def to_send(self) -> list[str | Content]:
        """The documents for the client call (empty when there is nothing to send)."""
        if self._outcome is not None:
            return []
        return [d for d in (self._documents[i] for i in self._sent) if not isinstance(d, Unusable)]

    def scored(self, results: Sequence[RerankResult], unusable: Mapping[int, str] | None = None) -> None:
        """The client call succeeded with ``results``, and named the ``unusable`` documents
        (index -> reason); indices are into what was sent."""
        self._drop({self._sent[i]: reason for i, reason in (unusable or {}).items()})
        self._outcome = Reranked(
            scored=[_moved(r, self._sent[r.index]) for r in results], unusable=self._unusable
        )

    def failed(self, error: Qwen3RerankError) -> None:
        """The client call raised ``error``: re-raised unless ``on_error="passthrough"`` absorbs it
        (never a programmer's :class:`InvalidInput`); a warning is logged when it does."""
        if self._on_error != "passthrough" or (
            isinstance(error, InvalidInput) and not isinstance(error, UnusableDocuments)
        ):
            raise error
        if isinstance(error, UnusableDocuments):  # a client that checks strictly: nothing was scored
            self._drop({self._sent[i]: reason for i, reason in error.reasons.items()})
            failure = f"{type(error).__name__}: not scored: other documents of the call are unusable"
        else:
            failure = _marker(error)
            self._warn_failed(error)
        passed = [i for i in self._sent if i not in self._unusable]
        self._outcome = Reranked(passed_through=passed, failure=failure, unusable=self._unusable)

    def outcome(self) -> Reranked:
        """What became of the documents (once the call was reported, or when none was sent)."""
        if self._outcome is None:
            raise RuntimeError("_RerankCall.outcome() before the call finished")  # a bug in an adapter
        return self._outcome

    def _drop(self, reasons: dict[int, str]) -> None:
        if not reasons:
            return
        for index, reason in reasons.items():
            # Whole: a reason is short and safe to show, and its end says what to do.
            self._unusable[index] = f"{UnusableDocuments.__name__}: {reason}"
        self._logger.warning(
            "%d of %d documents cannot be scored (UnusableDocuments at positions %s); returning them "
            "last, unscored, with %r in their metadata (on_error='passthrough')",
            len(reasons),
            len(self._documents),
            sorted(reasons),
            RERANK_ERROR_KEY,
        )

    def _warn_failed(self, error: Qwen3RerankError) -> None:
        # The error class, the endpoint (without credentials) and the HTTP status, never the
        # message itself: a server's error body may quote the query or a document.
        url = getattr(error, "url", None)
        where = f" at {redact_url(url)}" if isinstance(url, str) else ""
        status = f" (HTTP {error.status_code})" if isinstance(error, RerankHTTPError) else ""
        self._logger.warning(
            "reranking %d documents failed with %s%s%s; returning them in retrieval order "
            "(on_error='passthrough')",
            len(self._sent),
            type(error).__name__,
            where,
            status,
        )


class RerankSettings(ClientSettings):
    """The settings of a reranking adapter: the client's, plus what to return and what a
    failure does (:func:`rerank` / :func:`arerank` read them)."""

    top_n: int | None = Field(
        default=3,
        ge=1,
        description="Most items to return (scored ones first, then any unscored ones of "
        "on_error='passthrough'); None returns every one passing the threshold.",
    )
    score_threshold: float | None = Field(
        default=None,
        description="Drop scored items below this relevance (p(yes), in [0, 1]); applied before the "
        "top_n cut. Unscored items (on_error='passthrough') have no score to compare.",
    )
    on_error: OnError = Field(
        default="raise",
        description="What a failure does. 'raise': raise the Qwen3RerankError. 'passthrough': never "
        "fail the query for the server or for retrieved data. A failed server or transport: log a "
        "warning and return the items in retrieval order cut to top_n, unscored (no threshold), "
        "each a copy marked with 'rerank_error': '<ExceptionClass>: <message>' in its metadata. "
        "Documents that cannot be scored (UnusableDocuments: an image that cannot be read, is "
        "refused or cannot be fetched or is no image, more images than the server takes per prompt, "
        "a text that cannot be shown to fit the token budget): score the others in the same call and "
        "return those last, unscored, marked 'rerank_error': 'UnusableDocuments: <reason>'. A "
        "programmer error (InvalidInput: a document of the wrong type, a text of None, an empty "
        "query) is raised either way.",
    )


def client_of(settings: ClientSettings) -> RerankClient:
    """The sync client of ``settings``, created on first use and reused (a copy of the settings
    gets its own)."""
    return settings._clients.get_sync(settings)


def async_client_of(settings: ClientSettings) -> AsyncRerankClient:
    """The async client of ``settings``, created on first use and reused (on any event loop)."""
    return settings._clients.get_async(settings)


def warm_up(settings: ClientSettings) -> None:
    """Learn the server (served model, family, limits) on the sync client, once; raises its
    :class:`~qwen3_vllm_rerank.Qwen3RerankError` when the server cannot be reached or read."""
    client_of(settings)._ensure_profile()


async def awarm_up(settings: ClientSettings) -> None:
    """:func:`warm_up` on the async client."""
    await async_client_of(settings)._ensure_profile()


def rerank(
    settings: RerankSettings, query: str | Content, documents: Sequence[AdapterInput], logger: logging.Logger
) -> Reranked:
    """Rerank ``documents`` on the sync client of ``settings``, in one client call at most, as its
    ``on_error`` says (warnings to ``logger``); ``[]`` sends nothing."""
    call = _RerankCall(documents, settings.on_error, logger)
    if sent := call.to_send:
        client = client_of(settings)
        try:
            if call.lenient:
                ranking = client.rerank_usable(query, sent)
                call.scored(ranking.results, ranking.unusable)
            else:
                call.scored(client.rerank(query, sent))
        except Qwen3RerankError as error:
            call.failed(error)
    return call.outcome()


async def arerank(
    settings: RerankSettings, query: str | Content, documents: Sequence[AdapterInput], logger: logging.Logger
) -> Reranked:
    """:func:`rerank` on the async client."""
    call = _RerankCall(documents, settings.on_error, logger)
    if sent := call.to_send:
        client = async_client_of(settings)
        try:
            if call.lenient:
                ranking = await client.rerank_usable(query, sent)
                call.scored(ranking.results, ranking.unusable)
            else:
                call.scored(await client.rerank(query, sent))
        except Qwen3RerankError as error:
            call.failed(error)
    return call.outcome()


@dataclass(frozen=True, slots=True)
class ReturnedItem:
    """One item an adapter returns: ``index`` (its position in the adapter's input), its
    relevance ``score`` (``None`` when not scored), the ``metadata`` to add to its copy, and
    its ``status``: ``"scored"``, ``"passed_through"`` (its call failed) or ``"unusable"``."""

    index: int
    score: float | None
    metadata: dict[str, object]
    status: Literal["scored", "passed_through", "unusable"]


def items_to_return(outcome: Reranked, settings: RerankSettings) -> list[ReturnedItem]:
    """The items an adapter returns for ``outcome``, in order, cut to ``settings.top_n``.

    First the scored results (best first) at or above ``score_threshold``, with ``"truncated"``
    / ``"window"`` where they apply; then the passed-through items in retrieval order, marked
    with the failure; then the unusable ones in retrieval order, marked with their reason.
    """
    threshold = settings.score_threshold
    items = [
        ReturnedItem(r.index, r.score, _result_metadata(r), "scored")
        for r in outcome.scored
        if threshold is None or r.score >= threshold
    ]
    items += [
        ReturnedItem(i, None, {RERANK_ERROR_KEY: outcome.failure}, "passed_through")
        for i in outcome.passed_through
    ]
    items += [
        ReturnedItem(i, None, {RERANK_ERROR_KEY: marker}, "unusable")
        for i, marker in sorted(outcome.unusable.items())
    ]
    return items[: settings.top_n] if settings.top_n is not None else items


def _moved(result: RerankResult, index: int) -> RerankResult:
    return RerankResult(index, result.score, result.document, result.truncated, result.window)


def _result_metadata(result: RerankResult) -> dict[str, object]:
    extra: dict[str, object] = {}
    if result.truncated:
        extra[TRUNCATED_KEY] = True
    if result.window is not None:
        extra[WINDOW_KEY] = result.window
    return extra


def _marker(error: Qwen3RerankError) -> str:
    """``"<ExceptionClassName>: <first line of its message>"``, without credentials, shortened."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    url = getattr(error, "url", None)
    if isinstance(url, str):
        text = text.replace(url, redact_url(url))
    text = redact_urls_in(text)
    return _shortened(f"{type(error).__name__}: {text}")


def _shortened(text: str) -> str:
    return text if len(text) <= _MARKER_CHARS else text[: _MARKER_CHARS - 3] + "..."
