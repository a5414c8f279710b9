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

import base64
import binascii
import copy
import logging
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.callbacks.base import EventContext
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index_instrumentation import get_dispatcher

from qwen3_vllm_rerank import Content, Image, InvalidInput
from qwen3_vllm_rerank.adapters import (
    AdapterInput,
    Reranked,
    RerankSettings,
    ReturnedItem,
    Unusable,
    arerank,
    items_to_return,
    rerank,
)

__all__ = ["Qwen3VLLMReranker"]

dispatcher = get_dispatcher(__name__)
logger = logging.getLogger(__name__)

#: ``model_name`` of the events when no model was given and none was discovered yet.
FALLBACK_MODEL_NAME = "Qwen3-Reranker"
RETRIEVAL_SCORE_KEY = "retrieval_score"


class Qwen3VLLMReranker(RerankSettings, BaseNodePostprocessor):
    """Rerank nodes with Qwen3-Reranker served by vLLM.

    Returns new ``NodeWithScore`` objects whose ``score`` is the relevance (p(yes), in
    [0, 1]), best first; the caller's nodes are never modified. With
    ``keep_retrieval_score=True`` each returned node is a copy whose metadata holds the
    previous score under ``"retrieval_score"``. A node that did not fit the token budget
    comes back as a copy with ``"truncated": True`` or ``"window": i`` in its metadata (see
    ``long_documents``). Keys added this way are excluded from the text shown to the
    embedding model and the LLM. Every option is a documented field
    (``Qwen3VLLMReranker.model_fields``).

    Images (served Qwen3-VL-Reranker): an ``ImageNode`` is scored as its image with its text;
    text nodes in the same call are scored as text. Its image is ``image`` (base64), else
    ``image_path`` (a local path, always: never read as a URL), else ``image_url`` (a URL,
    always: ``data:``; ``http(s)://``, which needs ``image_fetcher``; ``file://``, which needs
    a fetcher that opts in to local files, ``UrlFetcher(file_roots=...)``; anything else is
    refused, never read as a path). ``image_path`` and ``image_url`` are retrieved data: they
    are marked ``Image(..., retrieved=True)``, so that the client reads such a path only inside
    the ``file_roots`` of ``image_fetcher`` (``UrlFetcher(file_roots=...)``); ``image`` is the
    image's own bytes. A ``QueryBundle`` with an ``image_path`` queries with that image and the
    query text: the query is the application's own, so its path is not marked retrieved.

    Failures (see ``on_error``): an item that is not a ``NodeWithScore``, a node without
    text, or a missing query always raise ``InvalidInput``. A node whose image cannot be read
    (bad base64, not an image, a field of a type that is no image), is refused or cannot be
    fetched, or that cannot be scored for its own content otherwise, raises ``UnusableDocuments``
    (its ``reasons`` are keyed by the node's position, the same as in ``nodes``); with
    ``on_error="passthrough"`` it comes back last with a score of ``None`` and
    ``"rerank_error": "UnusableDocuments: <reason>"`` in its metadata, and the others are
    scored.

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

    keep_retrieval_score: bool = Field(
        default=False,
        description='Keep the score the node came with in a copy of its metadata, under "retrieval_score".',
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="Which metadata goes into the text scored: node.get_content(metadata_mode=...).",
    )

    @classmethod
    def class_name(cls) -> str:
        return "Qwen3VLLMReranker"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query, inputs = _query_of(query_bundle), self._inputs(nodes)
        with self._reranking_event(nodes, query_bundle) as event:
            outcome = rerank(self, query, inputs, logger)
            return self._returned(nodes, outcome, event)

    @dispatcher.span
    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query, inputs = _query_of(query_bundle), self._inputs(nodes)
        with self._reranking_event(nodes, query_bundle) as event:
            outcome = await arerank(self, query, inputs, logger)
            return self._returned(nodes, outcome, event)

    # -- events ------------------------------------------------------------------------

    def _reranking_event(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> AbstractContextManager[EventContext]:
        """Emit ``ReRankStartEvent`` and open the ``CBEventType.RERANKING`` callback event."""
        model_name = self.served_model or FALLBACK_MODEL_NAME
        top_n = self.top_n if self.top_n is not None else len(nodes)
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=model_name)
        )
        payload: dict[str, Any] = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: model_name,
            EventPayload.QUERY_STR: query_bundle.query_str if query_bundle is not None else None,
            EventPayload.TOP_K: self.top_n,
        }
        return self.callback_manager.event(CBEventType.RERANKING, payload=payload)

    def _returned(
        self, nodes: list[NodeWithScore], outcome: Reranked, event: EventContext
    ) -> list[NodeWithScore]:
        """The nodes to return; closes the callback event and emits ``ReRankEndEvent``."""
        result = [self._rescored(nodes[item.index], item) for item in items_to_return(outcome, self)]
        event.on_end(payload={EventPayload.NODES: result})
        dispatcher.event(ReRankEndEvent(nodes=result))
        return result

    # -- mapping nodes onto the client -------------------------------------------------

    def _inputs(self, nodes: Sequence[NodeWithScore]) -> list[AdapterInput]:
        """What is scored for each node: its text, with its image for an ``ImageNode``
        (:class:`Unusable` when that image cannot be); ``InvalidInput`` naming the first
        node of a wrong type or without text."""
        inputs: list[AdapterInput] = []
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
            image = _image_of(node) if isinstance(node, ImageNode) else None
            inputs.append(image if isinstance(image, Unusable) else _content(text, image))
        return inputs

    def _rescored(self, original: NodeWithScore, item: ReturnedItem) -> NodeWithScore:
        """A new ``NodeWithScore``: the relevance when scored, the retrieval score when passed
        through after a failed call, ``None`` when unusable. Its node is a copy (metadata
        deep-copied) when metadata is added; the added keys are kept out of the text shown to
        the embedding model and the LLM, so a returned node reads (and reranks) like the
        original."""
        extra = item.metadata
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
        score = original.score if item.status == "passed_through" else item.score
        return NodeWithScore(node=node, score=score)


def _query_of(query_bundle: QueryBundle | None) -> str | Content:
    if query_bundle is None:
        raise InvalidInput(
            "Qwen3VLLMReranker needs the query: call postprocess_nodes(nodes, query_str=...) "
            "or pass a query_bundle"
        )
    if query_bundle.image_path:
        return Content(query_bundle.query_str, images=[Image(Path(query_bundle.image_path))])
    return query_bundle.query_str


def _content(text: str, image: Image | None) -> str | Content:
    return text if image is None else Content(text, images=[image])


def _image_of(node: ImageNode) -> Image | Unusable | None:
    """The image of an ``ImageNode``: ``image`` (base64), else ``image_path`` (always a path,
    never a URL), else ``image_url`` (always a URL: ``http(s)://`` and ``file://`` need
    ``image_fetcher``; a bare path there is refused); the path and the URL are marked
    retrieved. ``None`` when it has none; :class:`Unusable` when a field holds no image."""
    if node.image:
        if not isinstance(node.image, str | bytes):
            return _no_image(node, "image")
        try:
            return Image(base64.b64decode(node.image, validate=True))
        except (binascii.Error, ValueError):
            return Unusable(f"the image of node {node.node_id!r} is not valid base64")
    if node.image_path:
        if not isinstance(node.image_path, str | os.PathLike):
            return _no_image(node, "image_path")
        return Image(Path(node.image_path), retrieved=True)
    if node.image_url:
        if not isinstance(node.image_url, str):
            return _no_image(node, "image_url")
        image = Image(node.image_url, retrieved=True)
        if image.kind == "path":
            return Unusable(
                f"the image_url of node {node.node_id!r} is not a URL (a local path belongs in image_path)"
            )
        return image
    return None


def _no_image(node: ImageNode, name: str) -> Unusable:
    value = getattr(node, name)
    return Unusable(f"the {name} of node {node.node_id!r} is a {type(value).__name__}, which is no image")


def _with_keys(keys: list[str], added: dict[str, object]) -> list[str]:
    """A new list: ``keys`` plus the keys of ``added`` it lacks."""
    return [*keys, *(k for k in added if k not in keys)]
