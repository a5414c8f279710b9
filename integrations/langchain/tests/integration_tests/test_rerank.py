"""The LangChain adapter against a real vLLM server, alone and inside real LangChain pipelines."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable
from typing import Literal

import httpx
import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from pydantic import PrivateAttr, SecretStr, ValidationError
from rank_bm25 import BM25Okapi

import langchain_qwen3_vllm_rerank
from langchain_qwen3_vllm_rerank import Qwen3VLLMCrossEncoder, Qwen3VLLMReranker
from qwen3_vllm_rerank import (
    API_KEY_ENV,
    BASE_URL_ENV,
    InvalidInput,
    Qwen3RerankError,
    RerankClient,
    RerankConnectionError,
    RetryPolicy,
    UnusableDocuments,
)
from qwen3_vllm_rerank.adapters import async_client_of, client_of
from tests.support.corpus import pydoc_paragraphs
from tests.support.fixtures import Served
from tests.support.recording import RequestLog, closed_port_url

QUERY = "How does the with statement call __enter__ and __exit__ on a context manager?"


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class BM25Retriever(BaseRetriever):
    """A real lexical retriever (rank_bm25's Okapi BM25) over a fixed list of documents."""

    documents: list[Document]
    k: int = 8
    _index: BM25Okapi = PrivateAttr()

    def model_post_init(self, context: object, /) -> None:
        self._index = BM25Okapi([_tokens(d.page_content) for d in self.documents])

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        scores = self._index.get_scores(_tokens(query))
        best = sorted(range(len(self.documents)), key=lambda i: -scores[i])[: self.k]
        return [self.documents[i] for i in best]


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    return [
        Document(p.text, id=p.id, metadata={"topic": p.topic, "source": {"module": "pydoc_data.topics"}})
        for p in pydoc_paragraphs()
    ]


@pytest.fixture(scope="module")
def bm25(corpus: list[Document]) -> BM25Retriever:
    return BM25Retriever(documents=corpus, k=8)


@pytest.fixture(scope="module")
def core(served: Served) -> RerankClient:
    return RerankClient(served.base_url, model=served.model)


def core_scores(core: RerankClient, query: str, documents: list[Document]) -> dict[str | None, float]:
    return dict(
        zip([d.id for d in documents], core.score(query, [d.page_content for d in documents]), strict=True)
    )


def assert_reranked(
    returned: list[Document], candidates: list[Document], expected: dict[str | None, float], top_n: int | None
) -> None:
    """``returned`` is ``candidates`` sorted by the core client's scores and cut to ``top_n``."""
    best = sorted(candidates, key=lambda d: -expected[d.id])[:top_n]
    assert [d.id for d in returned] == [d.id for d in best]
    for doc in returned:
        assert doc.metadata["relevance_score"] == pytest.approx(expected[doc.id], abs=1e-5)
    scores = [d.metadata["relevance_score"] for d in returned]
    assert scores == sorted(scores, reverse=True)


def test_public_api() -> None:
    assert langchain_qwen3_vllm_rerank.__all__ == ["Qwen3VLLMCrossEncoder", "Qwen3VLLMReranker"]
    assert issubclass(Qwen3VLLMReranker, BaseDocumentCompressor)
    assert issubclass(Qwen3VLLMCrossEncoder, BaseCrossEncoder)


# -- real pipelines ------------------------------------------------------------------------


async def test_contextual_compression_retriever_invoke_and_ainvoke(
    served: Served, bm25: BM25Retriever, core: RerankClient
) -> None:
    candidates = bm25.invoke(QUERY)
    expected = core_scores(core, QUERY, candidates)
    retriever = ContextualCompressionRetriever(
        base_compressor=Qwen3VLLMReranker(base_url=served.base_url, top_n=3), base_retriever=bm25
    )

    returned = retriever.invoke(QUERY)
    assert_reranked(returned, candidates, expected, top_n=3)

    returned_async = await retriever.ainvoke(QUERY)
    assert_reranked(returned_async, candidates, expected, top_n=3)


async def test_inside_an_lcel_chain(served: Served, bm25: BM25Retriever, core: RerankClient) -> None:
    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(f"[{d.metadata['relevance_score']:.4f}] {d.page_content}" for d in docs)

    retriever = ContextualCompressionRetriever(
        base_compressor=Qwen3VLLMReranker(base_url=served.base_url, top_n=2), base_retriever=bm25
    )
    chain = retriever | RunnableLambda(format_docs)
    candidates = bm25.invoke(QUERY)
    expected = core_scores(core, QUERY, candidates)
    best = sorted(candidates, key=lambda d: -expected[d.id])[:2]
    wanted = "\n\n".join(f"[{expected[d.id]:.4f}] {d.page_content}" for d in best)

    assert chain.invoke(QUERY) == wanted
    assert await chain.ainvoke(QUERY) == wanted
    assert chain.batch([QUERY, QUERY]) == [wanted, wanted]


async def test_cross_encoder_in_langchains_cross_encoder_reranker(
    served: Served, bm25: BM25Retriever, core: RerankClient
) -> None:
    candidates = bm25.invoke(QUERY)
    expected = core_scores(core, QUERY, candidates)
    encoder = Qwen3VLLMCrossEncoder(base_url=served.base_url)
    retriever = ContextualCompressionRetriever(
        base_compressor=CrossEncoderReranker(model=encoder, top_n=3), base_retriever=bm25
    )
    best = sorted(candidates, key=lambda d: -expected[d.id])[:3]
    assert [d.id for d in retriever.invoke(QUERY)] == [d.id for d in best]
    assert [d.id for d in await retriever.ainvoke(QUERY)] == [d.id for d in best]


def test_cross_encoder_scores_pairs_of_several_queries_in_order(served: Served, core: RerankClient) -> None:
    docs = [p.text for p in pydoc_paragraphs()[:4]]
    other = "What does the global statement do?"
    pairs = [(QUERY, docs[0]), (other, docs[1]), (QUERY, docs[2]), (other, docs[3]), (QUERY, docs[3])]
    log = RequestLog()
    with log.client() as http:
        encoder = Qwen3VLLMCrossEncoder(base_url=served.base_url, model=served.model, http_client=http)
        encoder.score(pairs[:1])  # sets the client up
        log.paths.clear()
        scores = encoder.score(pairs)
    first = core.score(QUERY, [docs[0], docs[2], docs[3]])
    second = core.score(other, [docs[1], docs[3]])
    assert scores == pytest.approx([first[0], second[0], first[1], second[1], first[2]], abs=1e-5)
    assert log.paths == ["/v1/score", "/v1/score"], "one request per distinct query"


def test_cross_encoder_edge_cases() -> None:
    encoder = Qwen3VLLMCrossEncoder(base_url=closed_port_url(), model="m")
    assert encoder.score([]) == []
    with pytest.raises(InvalidInput, match=r"text_pairs\[1\]"):
        encoder.score([("q", "d"), ("q", "d", "extra")])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match=r"text_pairs\[0\]"):
        encoder.score([("q", None)])  # type: ignore[list-item]


# -- the compressor's contract ---------------------------------------------------------------


def _documents() -> list[Document]:
    return [
        Document(p.text, id=p.id, metadata={"topic": p.topic, "nested": {"rank": i}, "tags": ["pydoc"]})
        for i, p in enumerate(pydoc_paragraphs()[10:16])
    ]


async def test_returns_copies_keeps_id_and_metadata_and_never_mutates(
    served: Served, core: RerankClient
) -> None:
    documents = _documents()
    snapshot = copy.deepcopy(documents)
    reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None)
    expected = core_scores(core, QUERY, documents)

    for returned in (
        reranker.compress_documents(documents, QUERY),
        await reranker.acompress_documents(documents, QUERY),
    ):
        assert documents == snapshot, "the caller's documents are untouched"
        assert_reranked(returned, documents, expected, top_n=None)
        by_id = {d.id: d for d in documents}
        for doc in returned:
            original = by_id[doc.id]
            assert doc is not original
            assert doc.page_content == original.page_content
            assert doc.metadata == {**original.metadata, "relevance_score": doc.metadata["relevance_score"]}
            assert doc.metadata["nested"] is not original.metadata["nested"]
        returned[0].metadata["nested"]["rank"] = -1
        assert documents == snapshot, "changing a returned document does not reach the caller's"


async def test_top_n_none_and_threshold_before_the_cut(served: Served, core: RerankClient) -> None:
    documents = _documents()
    expected = core_scores(core, QUERY, documents)
    ranked = sorted(expected.values(), reverse=True)
    url = served.base_url

    def ids(reranker: Qwen3VLLMReranker) -> list[str | None]:
        return [d.id for d in reranker.compress_documents(documents, QUERY)]

    assert len(ids(Qwen3VLLMReranker(base_url=url))) == 3, "top_n defaults to 3"
    assert len(ids(Qwen3VLLMReranker(base_url=url, top_n=1))) == 1
    assert len(ids(Qwen3VLLMReranker(base_url=url, top_n=None))) == len(documents)
    assert len(ids(Qwen3VLLMReranker(base_url=url, top_n=100))) == len(documents)
    # The threshold keeps the two best; top_n=3 then has only two left to take.
    two = Qwen3VLLMReranker(base_url=url, top_n=3, score_threshold=ranked[1])
    assert ids(two) == [d for d, _ in sorted(expected.items(), key=lambda kv: -kv[1])[:2]]
    returned = await two.acompress_documents(documents, QUERY)
    assert all(d.metadata["relevance_score"] >= ranked[1] for d in returned)
    assert len(returned) == 2
    assert ids(Qwen3VLLMReranker(base_url=url, top_n=None, score_threshold=1.01)) == []


async def test_empty_input_sends_no_request() -> None:
    reranker = Qwen3VLLMReranker(base_url=closed_port_url(), model="m")
    assert reranker.compress_documents([], QUERY) == []
    assert await reranker.acompress_documents([], QUERY) == []
    # The same reranker does try to connect when there is something to rerank.
    with pytest.raises(RerankConnectionError):
        reranker.compress_documents([Document("text")], QUERY)
    with pytest.raises(RerankConnectionError):
        await reranker.acompress_documents([Document("text")], QUERY)


async def test_clients_are_created_once_and_reused(served: Served) -> None:
    documents = _documents()
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(base_url=served.base_url, http_client=http, http_async_client=ahttp)
            reranker.compress_documents(documents, QUERY)  # the first calls set the clients up
            await reranker.acompress_documents(documents, QUERY)
            log.paths.clear()
            alog.paths.clear()
            for _ in range(3):
                reranker.compress_documents(documents, QUERY)
                await reranker.acompress_documents(documents, QUERY)
            assert client_of(reranker) is client_of(reranker)
            assert async_client_of(reranker) is async_client_of(reranker)
            reranker.close()
            await reranker.aclose()
            assert not http.is_closed, "injected clients belong to the caller"
            assert not ahttp.is_closed
    # A reused client sends nothing but the scoring request (no model discovery, no setup).
    assert log.paths == ["/v1/score"] * 3
    assert alog.paths == ["/v1/score"] * 3


async def test_copies_after_use_build_their_own_clients(served: Served, core: RerankClient) -> None:
    # Regression: copy.deepcopy / model_copy(deep=True) after a first call reached the cached
    # clients (httpx clients hold locks) and failed.
    documents = _documents()
    expected = core_scores(core, QUERY, documents)
    with httpx.Client(timeout=120) as injected:
        reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None, http_client=injected)
        reranker.compress_documents(documents, QUERY)
        await reranker.acompress_documents(documents, QUERY)
        for copied in (copy.deepcopy(reranker), reranker.model_copy(deep=True), copy.copy(reranker)):
            assert copied.http_client is injected, "the caller's HTTP client is shared, never copied"
            assert_reranked(copied.compress_documents(documents, QUERY), documents, expected, top_n=None)
            assert_reranked(
                await copied.acompress_documents(documents, QUERY), documents, expected, top_n=None
            )
            assert client_of(copied) is not client_of(reranker)
            assert async_client_of(copied) is not async_client_of(reranker)
            await copied.aclose()
        await reranker.aclose()


def test_a_new_event_loop_gets_working_connections(served: Served, core: RerankClient) -> None:
    documents = _documents()
    expected = core_scores(core, QUERY, documents)
    reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None)
    for _ in range(2):  # like two asyncio.run() calls in a script
        loop = asyncio.new_event_loop()
        try:
            returned = loop.run_until_complete(reranker.acompress_documents(documents, QUERY))
        finally:
            loop.close()
        assert_reranked(returned, documents, expected, top_n=None)


def test_api_key_from_environment_is_secret_and_sent(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "sk-very-secret")
    log = RequestLog()
    with log.client() as http:
        reranker = Qwen3VLLMReranker(base_url=served.base_url, http_client=http, cache_size=8, max_length=512)
        assert isinstance(reranker.api_key, SecretStr)
        assert reranker.api_key.get_secret_value() == "sk-very-secret"
        dumped = reranker.model_dump()
        for text in (repr(reranker), str(reranker), reranker.model_dump_json(), repr(dumped)):
            assert "sk-very-secret" not in text
        assert dumped["cache_size"] == 8
        assert dumped["max_length"] == 512
        assert len(reranker.compress_documents(_documents(), QUERY)) == 3
    # Every request, on an injected HTTP client too, carried the key as a bearer token.
    assert log.headers
    assert all(h["authorization"] == "Bearer sk-very-secret" for h in log.headers)
    explicit = Qwen3VLLMReranker(api_key="sk-other")  # type: ignore[arg-type]
    assert explicit.api_key is not None
    assert explicit.api_key.get_secret_value() == "sk-other"


def test_base_url_from_environment(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, served.base_url)
    reranker = Qwen3VLLMReranker()
    assert reranker.base_url == served.base_url
    assert len(reranker.compress_documents(_documents(), QUERY)) == 3


def test_connection_errors_are_typed_through_a_pipeline(bm25: BM25Retriever) -> None:
    url = closed_port_url()
    retriever = ContextualCompressionRetriever(
        base_compressor=Qwen3VLLMReranker(base_url=url, model="m"), base_retriever=bm25
    )
    with pytest.raises(Qwen3RerankError, match=re.escape(url)):
        retriever.invoke(QUERY)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Qwen3VLLMReranker(top_n=0),
        lambda: Qwen3VLLMReranker(batch_size=0),
        lambda: Qwen3VLLMReranker(max_concurrency=0),
        lambda: Qwen3VLLMReranker(timeout=0),
        lambda: Qwen3VLLMReranker(top_k=3),  # type: ignore[call-arg]  # a typo is an error
        lambda: Qwen3VLLMCrossEncoder(batch_size=-1),
        lambda: Qwen3VLLMReranker(max_length=0),
        lambda: Qwen3VLLMReranker(long_documents="cut"),  # type: ignore[arg-type]
        lambda: Qwen3VLLMReranker(template="jinja"),  # type: ignore[arg-type]
        lambda: Qwen3VLLMReranker(retry={"max_attempts": 0}),
        lambda: Qwen3VLLMReranker(retry={"deadline": 0}),
        lambda: Qwen3VLLMReranker(max_attempts=2),  # type: ignore[call-arg]  # now retry=RetryPolicy(...)
        lambda: Qwen3VLLMReranker(cache_size=-1),
        lambda: Qwen3VLLMReranker(on_error="ignore"),  # type: ignore[arg-type]
        lambda: Qwen3VLLMCrossEncoder(on_error="passthrough"),  # type: ignore[call-arg]  # no way to mark
    ],
)
def test_invalid_configuration_is_rejected(build: Callable[[], object]) -> None:
    with pytest.raises(ValidationError):
        build()


def test_settings_are_fixed_once_built_and_copies_build_their_own_client(served: Served) -> None:
    reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=2)
    reranker.compress_documents(_documents(), QUERY)
    with pytest.raises(ValidationError):
        reranker.base_url = closed_port_url()
    reranker.top_n = 1  # result shaping may change at any time
    assert len(reranker.compress_documents(_documents(), QUERY)) == 1
    moved = reranker.model_copy(update={"base_url": closed_port_url()})
    assert moved._clients.sync is None
    with pytest.raises(RerankConnectionError):
        moved.compress_documents(_documents(), QUERY)
    assert len(reranker.compress_documents(_documents(), QUERY)) == 1


# -- options passed to the core client --------------------------------------------------------


def _long_document() -> Document:
    paragraph = pydoc_paragraphs(1500, 3000)[0]
    return Document(paragraph.text, id=paragraph.id, metadata={"topic": paragraph.topic})


@pytest.mark.parametrize(
    ("policy", "key"), [("chunk", "window"), ("truncate", "truncated")], ids=["chunk", "truncate"]
)
async def test_long_documents_reach_the_client_and_are_marked(
    served: Served, policy: Literal["chunk", "truncate"], key: str
) -> None:
    short, long = _documents()[0], _long_document()
    documents = [short, long]
    snapshot = copy.deepcopy(documents)
    options = {"long_documents": policy, "max_length": 256}
    with RerankClient(served.base_url, model=served.model, **options) as core:  # type: ignore[arg-type]
        (reference,) = [r for r in core.rerank(QUERY, [d.page_content for d in documents]) if r.index == 1]
    assert reference.window is not None if policy == "chunk" else reference.truncated
    reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None, **options)  # type: ignore[arg-type]
    for returned in (
        reranker.compress_documents(documents, QUERY),
        await reranker.acompress_documents(documents, QUERY),
    ):
        by_id = {d.id: d for d in returned}
        marked = by_id[long.id].metadata
        assert marked[key] == (reference.window if policy == "chunk" else True)
        assert marked["relevance_score"] == pytest.approx(reference.score, abs=1e-5)
        assert {"window", "truncated"}.isdisjoint(by_id[short.id].metadata), "only where it applies"
    assert documents == snapshot
    # The cross encoder builds its client from the same fields.
    encoder = Qwen3VLLMCrossEncoder(base_url=served.base_url, **options)  # type: ignore[arg-type]
    assert encoder.score([(QUERY, long.page_content)]) == pytest.approx([reference.score], abs=1e-5)


async def test_cache_size_reaches_the_client(served: Served) -> None:
    documents = _documents()
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(
                base_url=served.base_url, cache_size=64, http_client=http, http_async_client=ahttp
            )
            first = reranker.compress_documents(documents, QUERY)
            afirst = await reranker.acompress_documents(documents, QUERY)
            log.paths.clear()
            alog.paths.clear()
            assert reranker.compress_documents(documents, QUERY) == first
            assert await reranker.acompress_documents(documents, QUERY) == afirst
    assert "/v1/score" not in log.paths + alog.paths, "answered from the cache"
    assert first == afirst


def test_a_list_of_replicas_and_a_path_tokenizer_reach_the_client(served: Served, core: RerankClient) -> None:
    documents = _documents()
    expected = core_scores(core, QUERY, documents)
    # The first replica is down: the client moves on to the next one.
    replicas = [closed_port_url(), served.base_url]
    reranker = Qwen3VLLMReranker(base_url=replicas, tokenizer=str(served.served_checkpoint), top_n=None)
    assert reranker.model_dump()["base_url"] == replicas
    assert reranker.model_dump()["tokenizer"] == str(served.served_checkpoint)
    assert_reranked(reranker.compress_documents(documents, QUERY), documents, expected, top_n=None)
    joined = Qwen3VLLMReranker(base_url=",".join(replicas), top_n=None)
    assert_reranked(joined.compress_documents(documents, QUERY), documents, expected, top_n=None)


def test_retry_policy_reaches_the_client() -> None:
    log = RequestLog()
    with log.client() as http:
        retry = RetryPolicy(max_attempts=2)
        reranker = Qwen3VLLMReranker(base_url=closed_port_url(), model="m", retry=retry, http_client=http)
        with pytest.raises(RerankConnectionError):
            reranker.compress_documents(_documents(), QUERY)
    assert len(log.paths) == 2, "one try and one retry"


# -- on_error ---------------------------------------------------------------------------------


async def test_passthrough_returns_retrieval_order_marked(caplog: pytest.LogCaptureFixture) -> None:
    documents = _documents()
    snapshot = copy.deepcopy(documents)
    url = closed_port_url()
    key = SecretStr("sk-log-secret")
    reranker = Qwen3VLLMReranker(
        base_url=url, model="m", api_key=key, on_error="passthrough", top_n=4, score_threshold=0.9
    )
    with caplog.at_level("WARNING", logger="langchain_qwen3_vllm_rerank"):
        for returned in (
            reranker.compress_documents(documents, QUERY),
            await reranker.acompress_documents(documents, QUERY),
        ):
            assert [d.id for d in returned] == [d.id for d in documents[:4]], "retrieval order, no threshold"
            for doc, original in zip(returned, documents, strict=False):
                assert doc is not original
                marker = doc.metadata.pop("rerank_error")
                assert marker.startswith("RerankConnectionError: cannot connect")
                assert url in marker
                assert doc.metadata == original.metadata, "no relevance_score"
                assert doc.page_content == original.page_content
            assert documents == snapshot
    warnings = [r for r in caplog.records if r.name == "langchain_qwen3_vllm_rerank"]
    assert len(warnings) == 2
    assert all(r.levelname == "WARNING" for r in warnings)
    logged = caplog.text
    assert "RerankConnectionError" in logged
    for secret in (QUERY, "sk-log-secret", *(d.page_content[:40] for d in documents)):
        assert secret not in logged
    # top_n=None passes every document through.
    everything = reranker.model_copy(update={"top_n": None}).compress_documents(documents, QUERY)
    assert [d.id for d in everything] == [d.id for d in documents]


async def test_raise_mode_raises_the_connection_error() -> None:
    reranker = Qwen3VLLMReranker(base_url=closed_port_url(), model="m")
    assert reranker.on_error == "raise"
    with pytest.raises(RerankConnectionError):
        reranker.compress_documents(_documents(), QUERY)
    with pytest.raises(RerankConnectionError):
        await reranker.acompress_documents(_documents(), QUERY)


async def test_invalid_input_raises_before_any_request_even_in_passthrough() -> None:
    log, alog = RequestLog(), RequestLog()
    documents = [*_documents()[:2], Document.model_construct(page_content=None, metadata={})]
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(
                base_url=closed_port_url(),
                model="m",
                on_error="passthrough",
                http_client=http,
                http_async_client=ahttp,
            )
            with pytest.raises(InvalidInput, match=r"documents\[2\]\.page_content"):
                reranker.compress_documents(documents, QUERY)
            with pytest.raises(InvalidInput, match=r"documents\[2\]\.page_content"):
                await reranker.acompress_documents(documents, QUERY)
            with pytest.raises(InvalidInput, match="query"):
                reranker.compress_documents(documents[:2], "   ")
            with pytest.raises(InvalidInput, match="query"):
                await reranker.acompress_documents(documents[:2], "   ")
    assert log.paths == alog.paths == [], "rejected before any request"


async def test_a_document_too_long_for_long_documents_error_fails_only_itself(served: Served) -> None:
    """long_documents="error" on a document that does not fit: with passthrough it comes back last,
    unscored, marked; the others are scored. With "raise" it is UnusableDocuments naming it."""
    documents = [*_documents()[:2], _long_document()]
    lenient = Qwen3VLLMReranker(
        base_url=served.base_url, long_documents="error", max_length=256, on_error="passthrough", top_n=None
    )
    for returned in (
        lenient.compress_documents(documents, QUERY),
        await lenient.acompress_documents(documents, QUERY),
    ):
        assert len(returned) == 3
        assert all("relevance_score" in d.metadata for d in returned[:2])
        assert "relevance_score" not in returned[2].metadata
        assert returned[2].metadata["rerank_error"].startswith("UnusableDocuments: ")
    strict = Qwen3VLLMReranker(base_url=served.base_url, long_documents="error", max_length=256)
    with pytest.raises(UnusableDocuments, match=r"documents\[2\]"):
        strict.compress_documents(documents, QUERY)
    with pytest.raises(UnusableDocuments, match=r"documents\[2\]"):
        await strict.acompress_documents(documents, QUERY)
