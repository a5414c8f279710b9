"""``Qwen3VLLMReranker``: a LangChain document compressor that reranks with Qwen3-Reranker."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import Field

from qwen3_vllm_rerank import InvalidInput, RerankResult
from qwen3_vllm_rerank._adapters import (
    RERANK_ERROR_KEY,
    OnError,
    Passthrough,
    attempt,
    kept_results,
    result_metadata,
)

from ._base import Qwen3VLLMClientSettings

__all__ = ["Qwen3VLLMReranker"]

logger = logging.getLogger("langchain_qwen3_vllm_rerank")

RELEVANCE_SCORE_KEY = "relevance_score"


class Qwen3VLLMReranker(BaseDocumentCompressor, Qwen3VLLMClientSettings):
    """Rerank documents with Qwen3-Reranker served by vLLM.

    Use it as the ``base_compressor`` of a ``ContextualCompressionRetriever``, or call
    ``compress_documents`` / ``acompress_documents`` directly. The documents returned are
    new ``Document`` objects (the caller's are never modified) with the same ``id`` and
    metadata plus ``metadata["relevance_score"]``, best first; ``metadata["truncated"]``
    (``True``) or ``metadata["window"]`` (an int) is added only to a document that did not
    fit the token budget (see ``long_documents``).

    Example:
        .. code-block:: python

            from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker

            reranker = Qwen3VLLMReranker(base_url="http://127.0.0.1:8000", top_n=3)
            best = reranker.compress_documents(documents, "how do I read a file?")
    """

    top_n: int | None = Field(default=3, ge=1)
    """How many documents to return at most; ``None`` returns every document that
    passes ``score_threshold``."""

    score_threshold: float | None = None
    """Drop documents scoring below this relevance (p(yes), in [0, 1]); applied before
    the ``top_n`` cut."""

    on_error: OnError = "raise"
    """What a failed rerank call does. ``"raise"`` raises the ``Qwen3RerankError``.
    ``"passthrough"`` logs a warning and returns the documents in retrieval order, cut
    to ``top_n`` (no threshold: there are no scores), each a copy marked with
    ``metadata["rerank_error"] = "<ExceptionClassName>: <message>"`` and without a new
    ``relevance_score``. ``InvalidInput`` (the caller's bug) is raised either way."""

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> list[Document]:
        """Documents sorted by relevance to ``query``, filtered and cut; ``[]`` for ``[]``."""
        with self._reranking(documents) as call:
            if call.texts:
                call.results = self._get_client().rerank(query, call.texts)
        return call.returned

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> list[Document]:
        """Async ``compress_documents`` on the async client (batches sent concurrently)."""
        with self._reranking(documents) as call:
            if call.texts:
                call.results = await self._get_async_client().rerank(query, call.texts)
        return call.returned

    @contextmanager
    def _reranking(self, documents: Sequence[Document]) -> Iterator[_Call]:
        """Everything around the one client call of a compression, for both paths.

        Before the ``with`` body: validation. After it: the selection. A
        ``Qwen3RerankError`` from the body is raised, or, when ``on_error="passthrough"``
        absorbs it, answered with the documents in retrieval order (the ``with``
        statement then ends normally).
        """
        call = _Call(_texts(documents))
        outcome = yield from attempt(call, self.on_error, logger=logger)
        call.returned = self._select(documents, outcome)

    def _select(
        self, documents: Sequence[Document], outcome: list[RerankResult] | Passthrough
    ) -> list[Document]:
        if isinstance(outcome, Passthrough):
            kept_in_order = documents[: self.top_n] if self.top_n is not None else documents
            return [_with_metadata(doc, {RERANK_ERROR_KEY: outcome.marker}) for doc in kept_in_order]
        kept = kept_results(outcome, top_n=self.top_n, score_threshold=self.score_threshold)
        return [
            _with_metadata(documents[r.index], {RELEVANCE_SCORE_KEY: r.score, **result_metadata(r)})
            for r in kept
        ]


@dataclass(slots=True)
class _Call:
    """One compression: the texts sent, what the client answered, what is returned."""

    texts: list[str]
    results: list[RerankResult] = field(default_factory=list)
    returned: list[Document] = field(default_factory=list)


def _texts(documents: Sequence[Document]) -> list[str]:
    """The text of each document; ``InvalidInput`` naming the first one without text."""
    texts: list[str] = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise InvalidInput(f"documents[{i}] must be a Document, got {type(doc).__name__}")
        if not isinstance(doc.page_content, str):
            raise InvalidInput(
                f"documents[{i}].page_content must be a str, got {type(doc.page_content).__name__}"
            )
        texts.append(doc.page_content)
    return texts


def _with_metadata(document: Document, extra: dict[str, Any]) -> Document:
    """A copy of ``document`` (same class and id, metadata deep-copied) with ``extra`` added."""
    metadata = {**copy.deepcopy(document.metadata), **extra}
    return document.model_copy(update={"metadata": metadata})
