"""``Qwen3VLLMRanker``: a Haystack ranker that scores Documents with Qwen3-Reranker served by vLLM.

Prompt formatting, batching, images and HTTP are the core client's
(:class:`qwen3_vllm_rerank.RerankClient` / :class:`qwen3_vllm_rerank.AsyncRerankClient`), and which
failures ``on_error="passthrough"`` absorbs is the shared adapter call's
(:mod:`qwen3_vllm_rerank.adapters`); this module maps Haystack ``Document`` s onto them and back.

Haystack builds components with its own metaclass, so the ranker cannot be the shared pydantic
settings model the other two adapters inherit: it holds one (:attr:`Qwen3VLLMRanker.settings`),
built from its keyword arguments, whose defaults and docs are read from the core's option table.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import mimetypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import httpx
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import Secret, deserialize_secrets_inplace
from pydantic import SecretStr, TypeAdapter

from qwen3_vllm_rerank import Content, Image, InvalidInput, Qwen3RerankError, RetryPolicy
from qwen3_vllm_rerank.adapters import (
    AdapterInput,
    ClientOptions,
    OnError,
    Reranked,
    RerankSettings,
    ReturnedItem,
    Unusable,
    arerank,
    awarm_up,
    items_to_return,
    option_names,
    options_doc,
    rerank,
    warm_up,
)
from qwen3_vllm_rerank.client import FamilyOption, LongDocuments, Template
from qwen3_vllm_rerank.images import UrlFetcher

__all__ = ["Qwen3VLLMRanker"]

logger = logging.getLogger(__name__)

#: The environment variable of the default ``api_key``: vLLM's own, which Haystack's vLLM components
#: and this library's launcher use too (``qwen3_vllm_rerank.serve.VLLM_API_KEY_ENV``, proven equal by
#: ``unit_tests/test_serialization.py``; adapters import only the client's and images' faces).
API_KEY_ENV_VAR = "VLLM_API_KEY"
#: Init parameters that hold live objects: never serialised (``to_dict`` leaves them out).
_INJECTED = ("http_client", "http_async_client")

_HAYSTACK_DOCS = {
    "api_key": f"A Haystack Secret sent as 'Authorization: Bearer'; by default ${API_KEY_ENV_VAR} "
    "(Secret.from_env_var, strict=False), and when that is unset the core client's own "
    "$QWEN3_VLLM_RERANK_API_KEY. With a key, only the /v1/... endpoints (the ones vLLM's --api-key "
    "guards) are used. Resolved when the ranker is made; never shown in a repr, and serialised only "
    "as the name of its environment variable (to_dict refuses a Secret.from_token, as Haystack does).",
    "top_k": "Most Documents to return (scored ones first, then any unscored ones of "
    "on_error='passthrough'); None returns every one passing score_threshold. run(top_k=...) "
    "overrides it for one call.",
    "score_threshold": "Drop scored Documents below this relevance (p(yes), in [0, 1]); applied before "
    "the top_k cut. Unscored Documents (on_error='passthrough') have no score to compare. "
    "run(score_threshold=...) overrides it for one call.",
    "on_error": "What a failure does. 'raise': raise the Qwen3RerankError. 'passthrough': never fail "
    "the pipeline for the server or for retrieved data. A failed server or transport: log a warning "
    "and return the Documents in retrieval order, cut to top_k, with their retrieval score, each "
    "marked meta['rerank_error'] = '<ExceptionClass>: <message>' (warm_up logs instead of raising). "
    "Documents that cannot be scored (UnusableDocuments: no content and no image, an image that "
    "cannot be read, is refused or cannot be fetched): score the others and return those last, with "
    "score None, marked meta['rerank_error'] = 'UnusableDocuments: <reason>'. A programmer error "
    "(InvalidInput: an item that is not a Document, content that is not a str, an empty query) is "
    "raised either way.",
    "meta_fields_to_embed": "Metadata fields whose values (str() of each, when present and not "
    "None) are scored before the Document's content, joined by meta_data_separator.",
    "meta_data_separator": "Joins the meta_fields_to_embed values and the content.",
    "file_path_meta_field": "The metadata field naming a Document's image file (what "
    "ImageFileToDocument writes); it is read as an image when its MIME type (meta['mime_type'], else "
    "guessed from the name) is image/*.",
    "root_path": "The directory a relative file path is joined to (ImageFileToDocument stores base "
    "names by default). It only says where the file is: whether it may be read is the source "
    "policy's, i.e. image_fetcher's file_roots.",
    "http_client": "An httpx.Client for the sync path (proxies, certificates, event hooks); the caller "
    "keeps ownership and closes it. Never serialised.",
    "http_async_client": "An httpx.AsyncClient for the async path; the caller keeps ownership and "
    "closes it. Never serialised.",
}


@component
class Qwen3VLLMRanker:
    __doc__ = options_doc(
        """Ranks Documents by their relevance to a query with Qwen3-Reranker served by vLLM.

        ``run`` returns ``documents``: copies of the input Documents (the caller's are never
        modified) with ``score`` set to the relevance (p(yes), in [0, 1]), best first, cut to
        ``top_k``; and ``meta``: ``{"model": <the served model>}``. A Document that did not fit the
        token budget has ``meta["truncated"]`` or ``meta["window"]`` (see ``long_documents``).
        ``run_async`` is the same on the async client. Documents are not deduplicated: each one
        given comes back once.

        What is scored: the content (with ``meta_fields_to_embed`` before it). Images (served
        Qwen3-VL-Reranker): a Document whose ``blob`` is an image (``mime_type`` image/*) is scored
        as those bytes with its content; else one whose ``meta["file_path"]`` names an image file
        (what ``ImageFileToDocument`` produces) is scored as that file, read only as the
        ``image_fetcher``'s ``file_roots`` allow (``UrlFetcher(file_roots=(...))``). A PDF page is
        scored as an image only when its page image is given as the ``blob``; a Document with no
        content whose file is not an image cannot be scored (``UnusableDocuments``).

        ``warm_up`` / ``warm_up_async`` learn the server (model, family, limits) before the first
        run; a Pipeline calls them. The settings cannot change once the ranker exists (the client
        built from them is kept); ``top_k`` and ``score_threshold`` can, per call.

        Example:
            >>> from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker
            >>> ranker = Qwen3VLLMRanker(base_url="http://127.0.0.1:8000", top_k=3)  # doctest: +SKIP
            >>> ranker.run(query="what is a closure?", documents=documents)["documents"]  # doctest: +SKIP
        """,
        extra=_HAYSTACK_DOCS,
    )

    def __init__(
        self,
        *,
        base_url: str | Sequence[str] | None = ClientOptions.base_url,
        model: str | None = ClientOptions.model,
        model_family: FamilyOption = ClientOptions.model_family,
        instruction: str | None = ClientOptions.instruction,
        api_key: Secret | None = Secret.from_env_var(API_KEY_ENV_VAR, strict=False),  # noqa: B008
        timeout: float = ClientOptions.timeout,
        batch_size: int = ClientOptions.batch_size,
        max_concurrency: int = ClientOptions.max_concurrency,
        max_length: int | None = ClientOptions.max_length,
        long_documents: LongDocuments = ClientOptions.long_documents,
        tokenizer: str | Path | None = ClientOptions.tokenizer,
        template: Template = ClientOptions.template,
        retry: RetryPolicy = ClientOptions.retry,
        cache_size: int = ClientOptions.cache_size,
        image_cache: int = ClientOptions.image_cache,
        image_fetcher: UrlFetcher | None = ClientOptions.image_fetcher,
        top_k: int | None = None,
        score_threshold: float | None = None,
        on_error: OnError = "raise",
        meta_fields_to_embed: list[str] | None = None,
        meta_data_separator: str = "\n",
        file_path_meta_field: str = "file_path",
        root_path: str | None = None,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
    ) -> None:
        if api_key is not None and not isinstance(api_key, Secret):
            raise InvalidInput(
                "api_key must be a haystack.utils.Secret (Secret.from_env_var(...) or "
                f"Secret.from_token(...)), got {type(api_key).__name__}"
            )
        self.api_key = api_key
        self.top_k = _checked_top_k(top_k)
        self.score_threshold = score_threshold
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.meta_data_separator = meta_data_separator
        self.file_path_meta_field = file_path_meta_field
        self.root_path = root_path
        key = api_key.resolve_value() if api_key is not None else None
        self._settings = RerankSettings(
            base_url=base_url,
            model=model,
            model_family=model_family,
            instruction=instruction,
            # None: the core client falls back to $QWEN3_VLLM_RERANK_API_KEY itself.
            api_key=SecretStr(key) if isinstance(key, str) and key else None,
            timeout=timeout,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            max_length=max_length,
            long_documents=long_documents,
            tokenizer=tokenizer,
            template=template,
            retry=retry,
            cache_size=cache_size,
            image_cache=image_cache,
            image_fetcher=image_fetcher,
            top_n=None,  # the cut is this ranker's top_k, read per call
            on_error=on_error,
            http_client=http_client,
            http_async_client=http_async_client,
        )

    @property
    def settings(self) -> RerankSettings:
        """The shared settings this ranker runs with (read-only; its client is created on first use)."""
        return self._settings

    # -- lifecycle -------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Learn the server (served model, family, limits) on the sync client, once."""
        try:
            warm_up(self._settings)
        except Qwen3RerankError as error:
            self._warm_up_failed(error)

    async def warm_up_async(self) -> None:
        """:meth:`warm_up` on the async client."""
        try:
            await awarm_up(self._settings)
        except Qwen3RerankError as error:
            self._warm_up_failed(error)

    def _warm_up_failed(self, error: Qwen3RerankError) -> None:
        if self._settings.on_error != "passthrough" or isinstance(error, InvalidInput):
            raise error
        # The class only: a message may quote the server's answer.
        logger.warning(
            "warming up Qwen3VLLMRanker failed with %s; each run tries the server again "
            "(on_error='passthrough')",
            type(error).__name__,
        )

    def close(self) -> None:
        """Close the sync client's connections (if any); a later run reconnects."""
        self._settings.close()

    async def close_async(self) -> None:
        """Close the async client's connections (if any); a later run reconnects."""
        await self._settings.aclose()

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ranker as Haystack's serialisable dict: every setting but the injected HTTP clients;
        ``api_key`` as its environment variable's name, a ``user:password@`` in ``base_url``
        redacted, ``image_fetcher`` without its headers."""
        shared = self._settings.model_dump(mode="json", include=set(option_names()) - {"api_key"})
        return default_to_dict(
            self,
            **shared,
            api_key=self.api_key.to_dict() if self.api_key is not None else None,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            on_error=self._settings.on_error,
            meta_fields_to_embed=self.meta_fields_to_embed,
            meta_data_separator=self.meta_data_separator,
            file_path_meta_field=self.file_path_meta_field,
            root_path=self.root_path,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """A ranker from :meth:`to_dict`'s output (the secret read from its environment variable again)."""
        init = dict(data.get("init_parameters", {}))
        deserialize_secrets_inplace(init, keys=["api_key"])
        for name, kind in (("retry", RetryPolicy), ("image_fetcher", UrlFetcher)):
            if isinstance(init.get(name), dict):
                init[name] = TypeAdapter(kind).validate_python(init[name])
        ranker: Self = default_from_dict(cls, {**data, "init_parameters": init})
        return ranker

    # -- running ---------------------------------------------------------------------------

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, Any]:
        """Rank ``documents`` by relevance to ``query``.

        :param query: The query.
        :param documents: The Documents to rank (never modified).
        :param top_k: Most Documents to return for this call; the ranker's ``top_k`` when None.
        :param score_threshold: Drop scored Documents below this for this call; the ranker's when None.
        :returns: ``documents``: copies with ``score`` set, best first; ``meta``: ``{"model": ...}``.
        """
        limits = self._limits(top_k, score_threshold)
        if not documents:
            return self._output([])
        outcome = rerank(self._settings, _checked_query(query), self._inputs(documents), logger)
        return self._output(self._returned(documents, outcome, limits))

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, Any]:
        """:meth:`run` on the async client (batches sent concurrently)."""
        limits = self._limits(top_k, score_threshold)
        if not documents:
            return self._output([])
        outcome = await arerank(self._settings, _checked_query(query), self._inputs(documents), logger)
        return self._output(self._returned(documents, outcome, limits))

    def _limits(self, top_k: int | None, score_threshold: float | None) -> RerankSettings:
        """Settings carrying this call's cut and threshold (for :func:`items_to_return` only)."""
        top_n = _checked_top_k(top_k) if top_k is not None else self.top_k
        threshold = score_threshold if score_threshold is not None else self.score_threshold
        return self._settings.model_copy(update={"top_n": top_n, "score_threshold": threshold})

    def _output(self, documents: list[Document]) -> dict[str, Any]:
        return {"documents": documents, "meta": {"model": self._settings.served_model}}

    # -- mapping Documents onto the client -------------------------------------------------

    def _inputs(self, documents: Sequence[Document]) -> list[AdapterInput]:
        """What is scored for each Document: its text, with its image when it has one
        (:class:`Unusable` when it has neither, or names a file that is not an image);
        ``InvalidInput`` naming the first item that is not a Document or has non-text content."""
        if isinstance(documents, str | bytes) or not isinstance(documents, Sequence):
            raise InvalidInput(f"documents must be a list of Documents, got {type(documents).__name__}")
        inputs: list[AdapterInput] = []
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise InvalidInput(f"documents[{i}] must be a haystack Document, got {type(doc).__name__}")
            if doc.content is not None and not isinstance(doc.content, str):
                raise InvalidInput(
                    f"documents[{i}] (id {doc.id!r}).content must be a str or None, "
                    f"got {type(doc.content).__name__}"
                )
            image = self._image_of(doc)
            if isinstance(image, Unusable):
                inputs.append(image)
            elif image is not None:
                inputs.append(Content(self._text_of(doc), images=[image]))
            elif doc.content is None:
                inputs.append(Unusable(f"Document {doc.id!r} has no content and no image"))
            else:
                inputs.append(self._text_of(doc))
        return inputs

    def _text_of(self, doc: Document) -> str:
        """The meta fields to embed, then the content, joined by the separator (as Haystack's rankers do)."""
        parts = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k) is not None]
        if doc.content is not None:
            parts.append(doc.content)
        return self.meta_data_separator.join(parts)

    def _image_of(self, doc: Document) -> Image | Unusable | None:
        """The image of ``doc``: its ``blob`` when that is an image, else the image file its
        ``file_path`` meta field names (a retrieved reference, read only as the source policy allows).
        ``None`` when it has none; :class:`Unusable` when, without content, it names no image."""
        blob = doc.blob
        if blob is not None and _is_image_type(blob.mime_type):
            return Image(bytes(blob.data))
        reference = doc.meta.get(self.file_path_meta_field)
        if reference is None:
            return None
        if isinstance(reference, str | os.PathLike) and os.fspath(reference):
            path = Path(self.root_path, reference) if self.root_path else Path(reference)
            mime_type = doc.meta.get("mime_type")
            if not isinstance(mime_type, str) or not mime_type:
                mime_type = mimetypes.guess_type(path.name)[0]
            if _is_image_type(mime_type):
                return Image(path, retrieved=True)
            if doc.content is not None:
                return None  # a text Document from a file (PDF, HTML, ...): scored as its text
            what = mime_type or "a file of unknown type"
            pdf = what.endswith("/pdf")
            hint = " (a PDF page is scored when its page image is the Document's blob)" if pdf else ""
            return Unusable(
                f"Document {doc.id!r} has no content and its meta[{self.file_path_meta_field!r}] names "
                f"{what}, not an image{hint}"
            )
        if doc.content is not None:
            return None
        return Unusable(
            f"Document {doc.id!r} has no content and its meta[{self.file_path_meta_field!r}] is "
            f"{type(reference).__name__}, not a path"
        )

    @staticmethod
    def _returned(documents: Sequence[Document], outcome: Reranked, limits: RerankSettings) -> list[Document]:
        return [_rescored(documents[item.index], item) for item in items_to_return(outcome, limits)]


def _rescored(original: Document, item: ReturnedItem) -> Document:
    """A copy of ``original`` (same id, metadata deep-copied) with ``score`` set: the relevance
    when scored, the retrieval score when passed through after a failed call, ``None`` when
    unusable; and the item's metadata (``rerank_error``, ``truncated``, ``window``) added."""
    score = original.score if item.status == "passed_through" else item.score
    meta = {**copy.deepcopy(original.meta), **item.metadata}
    return dataclasses.replace(original, score=score, meta=meta)


def _is_image_type(mime_type: object) -> bool:
    return isinstance(mime_type, str) and mime_type.lower().startswith("image/")


def _checked_top_k(top_k: int | None) -> int | None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidInput(f"top_k must be a positive int or None, got {top_k!r}")
    return top_k


def _checked_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidInput(f"query must be a str, got {type(query).__name__}")
    return query
