"""``Qwen3VLLMReranker``: a LangChain document compressor that reranks with Qwen3-Reranker."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document

from qwen3_vllm_rerank import Content, Image, InvalidInput
from qwen3_vllm_rerank.adapters import (
    AdapterInput,
    RerankSettings,
    ReturnedItem,
    Unusable,
    arerank,
    items_to_return,
    rerank,
)

__all__ = ["Qwen3VLLMReranker"]

logger = logging.getLogger("langchain_qwen3_vllm_rerank")

RELEVANCE_SCORE_KEY = "relevance_score"
#: The metadata key of a document's image(s): a path, bytes, a PIL image, a ``data:`` or
#: ``http(s)://`` URL, a ``qwen3_vllm_rerank.Image``, or a list of them.
IMAGE_KEY = "image"
#: The kinds of image source that name something to read (marked retrieved), not data.
_REFERENCES = frozenset({"path", "file-url", "url"})


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
    scored as text, in the same call. ``http(s)://`` image URLs need ``image_fetcher``, and
    ``file://`` URLs a fetcher that opts in to local files (``UrlFetcher(file_roots=...)``).

    A path or URL in ``metadata["image"]`` is retrieved data: it is marked
    ``Image(..., retrieved=True)``, so that the client reads such a path only inside the
    ``file_roots`` of ``image_fetcher`` (``UrlFetcher(file_roots=...)``).

    Failures (see ``on_error``): a document that is not a ``Document`` or a ``page_content``
    that is not a ``str`` always raise ``InvalidInput``. A document whose image cannot be read,
    is refused, cannot be fetched or is a value of a type that is no image (``0``, ``{}``,
    ``[None]``, ...), or that cannot be scored for its own content otherwise (see
    ``on_error``), raises ``UnusableDocuments``; with ``on_error="passthrough"`` it comes back
    last, without a score, marked ``metadata["rerank_error"] = "UnusableDocuments: <reason>"``,
    and the others are scored.

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
        outcome = rerank(self, query, _inputs(documents), logger)
        return [_returned(documents[item.index], item) for item in items_to_return(outcome, self)]

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> list[Document]:
        """Async ``compress_documents`` on the async client (batches sent concurrently)."""
        outcome = await arerank(self, query, _inputs(documents), logger)
        return [_returned(documents[item.index], item) for item in items_to_return(outcome, self)]


def _inputs(documents: Sequence[Document]) -> list[AdapterInput]:
    """What is scored for each document: its text, with its image(s) when it has any
    (:class:`Unusable` when one is no image); ``InvalidInput`` naming the first document of a
    wrong type."""
    inputs: list[AdapterInput] = []
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
        images = _images(image if isinstance(image, list | tuple) else [image])
        inputs.append(images if isinstance(images, Unusable) else Content(doc.page_content, images=images))
    return inputs


def _images(values: Sequence[object]) -> list[Image] | Unusable:
    """A document's ``metadata["image"]`` values as images, a path or URL marked retrieved;
    :class:`Unusable` naming the first value that is no image."""
    images: list[Image] = []
    for value in values:
        try:
            image = value if isinstance(value, Image) else Image(value)  # type: ignore[arg-type]
        except InvalidInput:
            return Unusable(
                f'metadata["{IMAGE_KEY}"] holds a {type(value).__name__}, which is no image: expected a '
                "path, bytes, a PIL image, a data: or http(s):// URL, or a qwen3_vllm_rerank.Image"
            )
        if image.kind in _REFERENCES and not image.retrieved:
            image = Image(image.source, retrieved=True)
        images.append(image)
    return images


def _returned(document: Document, item: ReturnedItem) -> Document:
    """A copy of ``document`` (same class and id, metadata deep-copied) with the score (when
    there is one) and the item's metadata added to its metadata."""
    added = {RELEVANCE_SCORE_KEY: item.score, **item.metadata} if item.score is not None else item.metadata
    metadata = {**copy.deepcopy(document.metadata), **added}
    return document.model_copy(update={"metadata": metadata})
