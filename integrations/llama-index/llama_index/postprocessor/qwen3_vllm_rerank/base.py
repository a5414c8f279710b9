"""``Qwen3VLLMReranker``: a LlamaIndex node postprocessor that reranks with Qwen3-Reranker.

Prompt formatting, batching and HTTP are the core client's
(:class:`qwen3_vllm_rerank.RerankClient` / :class:`qwen3_vllm_rerank.AsyncRerankClient`);
this module maps nodes onto it and reports through LlamaIndex's instrumentation.

Events: every call that gets a query emits one ``ReRankStartEvent`` and, when it
succeeds (or ``on_error="passthrough"`` absorbs a failure), one ``ReRankEndEvent``
through the instrumentation dispatcher, and one ``CBEventType.RERANKING`` start/end
pair through the callback manager -- an empty input too (with no nodes, and no
request sent), so handlers that pair starts with ends never see a dangling start. A
call without a query, or with a node that has no text, raises ``InvalidInput`` before
any event.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
from llama_index.core.bridge.pydantic import Field, PrivateAttr, SecretStr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index_instrumentation import get_dispatcher

from qwen3_vllm_rerank import (
    API_KEY_ENV,
    BASE_URL_ENV,
    InvalidInput,
    RerankResult,
)
from qwen3_vllm_rerank._adapters import (
    RERANK_ERROR_KEY,
    CoreClients,
    CoreClientsMixin,
    LongDocuments,
    OnError,
    Passthrough,
    Template,
    attempt,
    kept_results,
    result_metadata,
)

__all__ = ["Qwen3VLLMReranker"]

dispatcher = get_dispatcher(__name__)
logger = logging.getLogger(__name__)

#: ``model_name`` of the events when no model was given and none was discovered yet.
FALLBACK_MODEL_NAME = "Qwen3-Reranker"
RETRIEVAL_SCORE_KEY = "retrieval_score"


def _api_key_from_env() -> SecretStr | None:
    value = os.environ.get(API_KEY_ENV)
    return SecretStr(value) if value else None


def _base_url_from_env() -> str | list[str] | None:
    return os.environ.get(BASE_URL_ENV) or None


class Qwen3VLLMReranker(CoreClientsMixin, BaseNodePostprocessor):
    """Rerank nodes with Qwen3-Reranker served by vLLM.

    Returns new ``NodeWithScore`` objects whose ``score`` is the relevance (p(yes), in
    [0, 1]), best first; the caller's nodes are never modified. With
    ``keep_retrieval_score=True`` each returned node is a copy whose metadata holds the
    previous score under ``"retrieval_score"``. A node that did not fit the token budget
    comes back as a copy with ``"truncated": True`` or ``"window": i`` in its metadata (see
    ``long_documents``). Keys added this way are excluded from the text shown to the
    embedding model and the LLM.

    The connection fields cannot be reassigned once the object exists (the client built
    from them is cached); use ``model_copy(update={...})`` for a variant. The API key is
    never serialised: ``to_dict()`` / ``to_json()`` leave it out, and ``from_dict`` reads
    it from ``$QWEN3_VLLM_RERANK_API_KEY`` again.

    Example:
        .. code-block:: python

            from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker

            reranker = Qwen3VLLMReranker(base_url="http://127.0.0.1:8000", top_n=3)
            engine = index.as_query_engine(node_postprocessors=[reranker])
    """

    top_n: int | None = Field(
        default=3,
        ge=1,
        description="Most nodes to return; None returns every node passing the threshold.",
    )
    score_threshold: float | None = Field(
        default=None,
        description="Drop nodes scoring below this relevance (p(yes)); applied before the top_n cut.",
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description='Keep the score the node came with in a copy of its metadata, under "retrieval_score".',
    )
    on_error: OnError = Field(
        default="raise",
        description="What a failed rerank call does: 'raise' raises the Qwen3RerankError; 'passthrough' "
        "logs a warning and returns the nodes in retrieval order cut to top_n (no threshold), each with "
        "its retrieval score and a copy of its node whose metadata holds 'rerank_error': "
        "'<ExceptionClassName>: <message>'. InvalidInput (the caller's bug) is raised either way.",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="Which metadata goes into the text scored: node.get_content(metadata_mode=...).",
    )
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
    instruction: str | None = Field(
        default=None,
        frozen=True,
        description="The task instruction in the Qwen3 prompt; Qwen's default web-search one when not given.",
    )
    api_key: SecretStr | None = Field(
        default_factory=_api_key_from_env,
        frozen=True,
        exclude=True,
        description="Sent as 'Authorization: Bearer'; $QWEN3_VLLM_RERANK_API_KEY when not given. Never "
        "serialised.",
    )
    timeout: float = Field(
        default=60.0, gt=0, frozen=True, description="Seconds allowed for each HTTP request."
    )
    batch_size: int = Field(default=128, gt=0, frozen=True, description="Documents sent per request.")
    max_concurrency: int = Field(
        default=8,
        gt=0,
        frozen=True,
        description="Most requests in flight at once (async) and size of the connection pool.",
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
        description="A node too long for the budget: 'truncate' scores its head (metadata 'truncated': "
        "True), 'chunk' scores every window and keeps the best (metadata 'window': its index, from 0), "
        "'error' raises InvalidInput. The prompt template and the query are never cut.",
    )
    tokenizer: str | None = Field(
        default=None,
        frozen=True,
        description="Where tokens are counted for the budget: a checkpoint directory or a tokenizer.json "
        "(a str path), a "
        "hub id, or 'server' (vLLM's /tokenize); by default the served model's directory when it is "
        "local, else the server.",
    )
    template: Template = Field(
        default="auto",
        frozen=True,
        description="Who applies the Qwen3 prompt: 'auto' detects a server started with --chat-template "
        "and formats on exactly one side; 'client' / 'server' insist and raise TemplateMismatchError if "
        "the server disagrees.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        frozen=True,
        description="Tries per request (the first included) on connection errors, timeouts and HTTP 429/5xx.",
    )
    retry_deadline: float = Field(
        default=120.0,
        gt=0,
        frozen=True,
        description="Seconds from a request's first try after which it is not tried again.",
    )
    cache_size: int = Field(
        default=0,
        ge=0,
        frozen=True,
        description="Entries of an LRU cache of scores keyed by (model, instruction, query, text); 0 turns "
        "it off. The sync client and the async client (one per event loop) each keep their own.",
    )
    http_client: httpx.Client | None = Field(
        default=None,
        exclude=True,
        repr=False,
        frozen=True,
        description="An httpx.Client for the sync path; the caller keeps ownership and closes it.",
    )
    http_async_client: httpx.AsyncClient | None = Field(
        default=None,
        exclude=True,
        repr=False,
        frozen=True,
        description="An httpx.AsyncClient for the async path; the caller keeps ownership and closes it.",
    )

    _clients: CoreClients | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "Qwen3VLLMReranker"

    # -- the two entry points ----------------------------------------------------------

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        with self._reranking(nodes, query_bundle) as call:
            if call.texts:
                call.results = self._get_client().rerank(call.query, call.texts)
        return call.returned

    @dispatcher.span
    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        with self._reranking(nodes, query_bundle) as call:
            if call.texts:
                call.results = await self._get_async_client().rerank(call.query, call.texts)
        return call.returned

    @contextmanager
    def _reranking(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> Iterator[_Call]:
        """Everything around the one client call of a postprocess, for both paths.

        Before the ``with`` body: validation, then the start events. After it: the
        selection and the end events. A ``Qwen3RerankError`` from the body is raised, or,
        when ``on_error="passthrough"`` absorbs it, answered with the nodes in retrieval
        order (the ``with`` statement then ends normally).
        """
        call = _Call(_query_of(query_bundle), self._texts(nodes))
        dispatcher.event(self._start_event(nodes, query_bundle))
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=self._payload(nodes, call.query)
        ) as event:
            outcome = yield from attempt(call, self.on_error, logger=logger)
            call.returned = self._select(nodes, outcome)
            event.on_end(payload={EventPayload.NODES: call.returned})
        dispatcher.event(ReRankEndEvent(nodes=call.returned))

    # -- mapping nodes onto the client -------------------------------------------------

    def _texts(self, nodes: Sequence[NodeWithScore]) -> list[str]:
        """The text scored for each node; ``InvalidInput`` naming the first one without text."""
        texts: list[str] = []
        for i, item in enumerate(nodes):
            node = item.node if isinstance(item, NodeWithScore) else None
            if not isinstance(node, BaseNode):
                raise InvalidInput(f"nodes[{i}] must be a NodeWithScore holding a node, got {item!r:.80}")
            # The bare content first: a text of None would otherwise be formatted as "None".
            raw = node.get_content(metadata_mode=MetadataMode.NONE)
            text = node.get_content(metadata_mode=self.metadata_mode) if isinstance(raw, str) else raw
            if not isinstance(text, str):
                raise InvalidInput(
                    f"nodes[{i}] (id {node.node_id!r}) has no text content: got {type(text).__name__}"
                )
            texts.append(text)
        return texts

    def _select(
        self, nodes: Sequence[NodeWithScore], outcome: list[RerankResult] | Passthrough
    ) -> list[NodeWithScore]:
        if isinstance(outcome, Passthrough):
            in_order = nodes[: self.top_n] if self.top_n is not None else nodes
            return [self._rescored(n, n.score, {RERANK_ERROR_KEY: outcome.marker}) for n in in_order]
        kept = kept_results(outcome, top_n=self.top_n, score_threshold=self.score_threshold)
        return [self._rescored(nodes[r.index], r.score, result_metadata(r)) for r in kept]

    def _rescored(
        self, original: NodeWithScore, score: float | None, extra: dict[str, object]
    ) -> NodeWithScore:
        """A new ``NodeWithScore``; its node is a copy (metadata deep-copied) when metadata is
        added. The added keys are kept out of the text shown to the embedding model and the
        LLM, so a returned node reads (and reranks) like the original."""
        if self.keep_retrieval_score:
            extra = {RETRIEVAL_SCORE_KEY: original.score, **extra}
        node = original.node
        if extra:
            node = node.model_copy(
                update={
                    "metadata": {**copy.deepcopy(node.metadata), **extra},
                    "excluded_embed_metadata_keys": _with_keys(node.excluded_embed_metadata_keys, extra),
                    "excluded_llm_metadata_keys": _with_keys(node.excluded_llm_metadata_keys, extra),
                }
            )
        return NodeWithScore(node=node, score=score)

    def _model_name(self) -> str:
        if self.model:
            return self.model
        discovered = self._clients.model if self._clients is not None else None
        return discovered or FALLBACK_MODEL_NAME

    def _start_event(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> ReRankStartEvent:
        return ReRankStartEvent(
            query=query_bundle,
            nodes=nodes,
            top_n=self.top_n if self.top_n is not None else len(nodes),
            model_name=self._model_name(),
        )

    def _payload(self, nodes: list[NodeWithScore], query: str) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self._model_name(),
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n,
        }

    # -- the clients (``close``, ``aclose`` and the getters: CoreClientsMixin) -----------

    def __copy__(self) -> Self:
        # A copy (``model_copy``, possibly with new settings) builds its own clients.
        copied = super().__copy__()
        copied._clients = None
        return copied


@dataclass(slots=True)
class _Call:
    """One postprocess call: what the client is asked, what it answered, what is returned."""

    query: str
    texts: list[str]
    results: list[RerankResult] = field(default_factory=list)
    returned: list[NodeWithScore] = field(default_factory=list)


def _query_of(query_bundle: QueryBundle | None) -> str:
    if query_bundle is None:
        raise InvalidInput(
            "Qwen3VLLMReranker needs the query: call postprocess_nodes(nodes, query_str=...) "
            "or pass a query_bundle"
        )
    return query_bundle.query_str


def _with_keys(keys: list[str], added: dict[str, object]) -> list[str]:
    """A new list: ``keys`` plus the keys of ``added`` it lacks."""
    return [*keys, *(k for k in added if k not in keys)]
