"""``Qwen3VLLMReranker``: a LangChain document compressor that reranks with Qwen3-Reranker."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document

from qwen3_vllm_rerank import Content, InvalidInput, Qwen3RerankError, RerankResult
from qwen3_vllm_rerank.adapters import Passthrough, RerankSettings, passthrough_or_raise, returned

__all__ = ["Qwen3VLLMReranker"]

logger = logging.getLogger("langchain_qwen3_vllm_rerank")

RELEVANCE_SCORE_KEY = "relevance_score"
#: The metadata key of a document's image(s): a path, bytes, a PIL image, a ``data:`` or
#: ``http(s)://`` URL, a ``qwen3_vllm_rerank.Image``, or a list of them.
IMAGE_KEY = "image"


class Qwen3VLLMReranker(RerankSettings, BaseDocumentCompressor):
    """Rerank documents with Qwen3-Reranker served by vLLM.

    Use it as the ``base_compressor`` of a ``ContextualCompressionRetriever``, or call
    ``compress_documents`` / ``acompress_documents`` directly. The documents returned are
    new ``Document`` objects (the caller's are never modified) with the same ``id`` and
    metadata plus ``metadata["relevance_score"]``, best first; ``metadata["truncated"]``
    (``True``) or ``metadata["window"]`` (an int) is added only to a document that did not
    fit the token budget (see ``long_documents``). Every option is a documented field
    (``Qwen3VLLMReranker.model_fields``).

    Images (served Qwen3-VL-Reranker): a document whose ``metadata["image"]`` holds an image
    (a path, bytes, a PIL image, a ``data:`` URL, a ``qwen3_vllm_rerank.Image``, or a list of
    them) is scored as that image with ``page_content`` as its text; documents without one are
    scored as text, in the same call. ``http(s)://`` image URLs need ``image_fetcher``.

    Example:
        .. code-block:: python

            from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker

            reranker = Qwen3VLLMReranker(base_url="http://127.0.0.1:8000", top_n=3)
            best = reranker.compress_documents(documents, "how do I read a file?")
    """

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> list[Document]:
        """Documents sorted by relevance to ``query``, filtered and cut; ``[]`` for ``[]``."""
        texts = _inputs(documents)
        outcome: list[RerankResult] | Passthrough = []
        try:
            if texts:
                outcome = self._get_client().rerank(query, texts)
        except Qwen3RerankError as error:
            outcome = passthrough_or_raise(error, self.on_error, count=len(texts), logger=logger)
        return returned(documents, outcome, self, _with_score)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> list[Document]:
        """Async ``compress_documents`` on the async client (batches sent concurrently)."""
        texts = _inputs(documents)
        outcome: list[RerankResult] | Passthrough = []
        try:
            if texts:
                outcome = await self._get_async_client().rerank(query, texts)
        except Qwen3RerankError as error:
            outcome = passthrough_or_raise(error, self.on_error, count=len(texts), logger=logger)
        return returned(documents, outcome, self, _with_score)


def _inputs(documents: Sequence[Document]) -> list[str | Content]:
    """What is scored for each document: its text, with its image(s) when it has any;
    ``InvalidInput`` naming the first document that cannot be scored."""
    inputs: list[str | Content] = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise InvalidInput(f"documents[{i}] must be a Document, got {type(doc).__name__}")
        if not isinstance(doc.page_content, str):
            raise InvalidInput(
                f"documents[{i}].page_content must be a str, got {type(doc.page_content).__name__}"
            )
        image = doc.metadata.get(IMAGE_KEY)
        if image is None:
            inputs.append(doc.page_content)
            continue
        try:
            inputs.append(
                Content(doc.page_content, images=image if isinstance(image, list | tuple) else [image])
            )
        except InvalidInput as error:
            raise InvalidInput(f'documents[{i}].metadata["{IMAGE_KEY}"]: {error}') from error
    return inputs


def _with_score(document: Document, score: float | None, extra: dict[str, Any]) -> Document:
    """A copy of ``document`` (same class and id, metadata deep-copied) with the score (when
    there is one) and ``extra`` added to its metadata."""
    added = {RELEVANCE_SCORE_KEY: score, **extra} if score is not None else extra
    metadata = {**copy.deepcopy(document.metadata), **added}
    return document.model_copy(update={"metadata": metadata})
