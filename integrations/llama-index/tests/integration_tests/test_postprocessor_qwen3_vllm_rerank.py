"""The LlamaIndex adapter against a real vLLM server, alone and inside real LlamaIndex query engines."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

import httpx
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.bridge.pydantic import Field, SecretStr, ValidationError
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.retrievers.bm25 import BM25Retriever
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.span_handlers import SimpleSpanHandler

import llama_index.postprocessor.qwen3_vllm_rerank as package
from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker
from qwen3_vllm_rerank import API_KEY_ENV, InvalidInput, RerankClient, RerankConnectionError, RetryPolicy
from qwen3_vllm_rerank.adapters import async_client_of, client_of
from tests.support.corpus import pydoc_paragraphs
from tests.support.fixtures import Served
from tests.support.recording import RequestLog, closed_port_url

QUERY = "How does the with statement call __enter__ and __exit__ on a context manager?"


class RerankEvents(BaseEventHandler):
    """Collects the rerank events that reach the root dispatcher."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "RerankEvents"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, ReRankStartEvent | ReRankEndEvent):
            self.events.append(event)


@pytest.fixture
def rerank_events() -> Iterator[RerankEvents]:
    handler = RerankEvents()
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


@pytest.fixture
def spans() -> Iterator[SimpleSpanHandler]:
    handler = SimpleSpanHandler()
    root = get_dispatcher()
    root.add_span_handler(handler)
    yield handler
    root.span_handlers.remove(handler)


@pytest.fixture(scope="module")
def nodes() -> list[TextNode]:
    return [
        TextNode(text=p.text, id_=p.id, metadata={"topic": p.topic}, excluded_llm_metadata_keys=["topic"])
        for p in pydoc_paragraphs()
    ]


@pytest.fixture(scope="module")
def bm25(nodes: list[TextNode]) -> BM25Retriever:
    return BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=8)


@pytest.fixture(scope="module")
def core(served: Served) -> RerankClient:
    return RerankClient(served.base_url, model=served.model)


def core_scores(core: RerankClient, query: str, candidates: list[NodeWithScore]) -> dict[str, float]:
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in candidates]
    return dict(zip([n.node.node_id for n in candidates], core.score(query, texts), strict=True))


def assert_reranked(
    returned: list[NodeWithScore],
    candidates: list[NodeWithScore],
    expected: dict[str, float],
    top_n: int | None,
) -> None:
    """``returned`` is ``candidates`` sorted by the core client's scores and cut to ``top_n``."""
    best = sorted(candidates, key=lambda n: -expected[n.node.node_id])[:top_n]
    assert [n.node.node_id for n in returned] == [n.node.node_id for n in best]
    for node in returned:
        assert node.score == pytest.approx(expected[node.node.node_id], abs=1e-5)


def test_public_api_and_namespace_package() -> None:
    assert package.__all__ == ["Qwen3VLLMReranker"]
    assert issubclass(Qwen3VLLMReranker, BaseNodePostprocessor)
    assert Qwen3VLLMReranker.class_name() == "Qwen3VLLMReranker"
    import llama_index
    import llama_index.postprocessor

    for namespace in (llama_index, llama_index.postprocessor):
        assert getattr(namespace, "__file__", None) is None, "PEP 420 namespace package: no __init__.py"


# -- real pipelines ------------------------------------------------------------------------


async def test_retriever_query_engine_query_and_aquery(
    served: Served,
    bm25: BM25Retriever,
    core: RerankClient,
    rerank_events: RerankEvents,
    spans: SimpleSpanHandler,
) -> None:
    candidates = bm25.retrieve(QUERY)
    expected = core_scores(core, QUERY, candidates)
    debug = LlamaDebugHandler()
    reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=3)
    # The engine hands its callback manager to its postprocessors.
    engine = RetrieverQueryEngine.from_args(
        bm25, llm=MockLLM(), node_postprocessors=[reranker], callback_manager=CallbackManager([debug])
    )

    response = engine.query(QUERY)
    assert_reranked(response.source_nodes, candidates, expected, top_n=3)
    assert str(response), "MockLLM answered from the reranked context"

    aresponse = await engine.aquery(QUERY)
    assert_reranked(aresponse.source_nodes, candidates, expected, top_n=3)

    # Instrumentation: one start/end pair per call, carrying the query, the candidates and the result.
    kinds = [type(e) for e in rerank_events.events]
    assert kinds == [ReRankStartEvent, ReRankEndEvent, ReRankStartEvent, ReRankEndEvent]
    start, end = rerank_events.events[2], rerank_events.events[3]
    assert isinstance(start, ReRankStartEvent)
    assert isinstance(end, ReRankEndEvent)
    assert start.top_n == 3
    assert start.model_name == served.model
    assert isinstance(start.query, QueryBundle)
    assert start.query.query_str == QUERY
    assert [n.node.node_id for n in start.nodes] == [n.node.node_id for n in candidates]
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in aresponse.source_nodes]
    # The async path runs in its own span, inside the query engine's.
    rerank_spans = [s for s in spans.completed_spans if s.id_.startswith("Qwen3VLLMReranker.")]
    assert sorted(s.id_.split("-")[0] for s in rerank_spans) == [
        "Qwen3VLLMReranker._apostprocess_nodes",
        "Qwen3VLLMReranker._postprocess_nodes",
    ]
    assert all(s.parent_id for s in rerank_spans)
    # Callback manager: one RERANKING pair per call.
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 2
    for begin, finish in pairs:
        assert begin.payload is not None
        assert finish.payload is not None
        assert begin.payload[EventPayload.QUERY_STR] == QUERY
        assert len(finish.payload[EventPayload.NODES]) == 3


async def test_vector_store_index_as_query_engine(
    served: Served, nodes: list[TextNode], core: RerankClient
) -> None:
    index = VectorStoreIndex(nodes[:40], embed_model=MockEmbedding(embed_dim=8))
    engine = index.as_query_engine(
        llm=MockLLM(),
        similarity_top_k=6,
        node_postprocessors=[Qwen3VLLMReranker(base_url=served.base_url, top_n=2)],
    )
    candidates = index.as_retriever(similarity_top_k=6).retrieve(QUERY)
    expected = core_scores(core, QUERY, candidates)
    assert_reranked(engine.query(QUERY).source_nodes, candidates, expected, top_n=2)
    assert_reranked((await engine.aquery(QUERY)).source_nodes, candidates, expected, top_n=2)


# -- the postprocessor's contract ------------------------------------------------------------


def _inputs() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=p.text, id_=p.id, metadata={"topic": p.topic}), score=10.0 - i)
        for i, p in enumerate(pydoc_paragraphs()[20:26])
    ]


async def test_returns_new_nodes_and_never_mutates(served: Served, core: RerankClient) -> None:
    inputs = _inputs()
    snapshot = copy.deepcopy(inputs)
    expected = core_scores(core, QUERY, inputs)
    for keep in (False, True):
        reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None, keep_retrieval_score=keep)
        for returned in (
            reranker.postprocess_nodes(inputs, query_str=QUERY),
            await reranker.apostprocess_nodes(inputs, query_str=QUERY),
        ):
            assert inputs == snapshot, "the caller's nodes and scores are untouched"
            assert_reranked(returned, inputs, expected, top_n=None)
            originals = {n.node.node_id: n for n in inputs}
            for result in returned:
                original = originals[result.node.node_id]
                assert result is not original
                if keep:
                    assert result.node is not original.node
                    assert result.node.metadata == {
                        **original.node.metadata,
                        "retrieval_score": original.score,
                    }
                    assert "retrieval_score" in result.node.excluded_embed_metadata_keys
                    assert "retrieval_score" in result.node.excluded_llm_metadata_keys
                    for mode in (MetadataMode.EMBED, MetadataMode.LLM):
                        assert result.node.get_content(mode) == original.node.get_content(mode)
                else:
                    assert result.node.metadata == original.node.metadata


async def test_top_n_none_and_threshold_before_the_cut(served: Served, core: RerankClient) -> None:
    inputs = _inputs()
    expected = core_scores(core, QUERY, inputs)
    ranked = sorted(expected.values(), reverse=True)
    url = served.base_url

    def count(reranker: Qwen3VLLMReranker) -> int:
        return len(reranker.postprocess_nodes(inputs, query_str=QUERY))

    assert count(Qwen3VLLMReranker(base_url=url)) == 3, "top_n defaults to 3"
    assert count(Qwen3VLLMReranker(base_url=url, top_n=None)) == len(inputs)
    assert count(Qwen3VLLMReranker(base_url=url, top_n=1)) == 1
    two = Qwen3VLLMReranker(base_url=url, top_n=3, score_threshold=ranked[1])
    assert count(two) == 2
    returned = await two.apostprocess_nodes(inputs, query_str=QUERY)
    assert [n.score for n in returned] == pytest.approx(ranked[:2], abs=1e-5)
    assert count(Qwen3VLLMReranker(base_url=url, top_n=None, score_threshold=1.01)) == 0


def test_metadata_mode_chooses_the_text_scored(served: Served, core: RerankClient) -> None:
    inputs = _inputs()
    bare = core.score(QUERY, [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in inputs])
    with_metadata = core.score(QUERY, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in inputs])
    assert bare != pytest.approx(with_metadata, abs=1e-6), "the topic line changes the scores"
    reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None, metadata_mode=MetadataMode.NONE)
    returned = reranker.postprocess_nodes(inputs, query_str=QUERY)
    expected = dict(zip([n.node.node_id for n in inputs], bare, strict=True))
    assert_reranked(returned, inputs, expected, top_n=None)


async def test_empty_input_sends_no_request_and_still_pairs_its_events(rerank_events: RerankEvents) -> None:
    debug = LlamaDebugHandler()
    reranker = Qwen3VLLMReranker(
        base_url=closed_port_url(), model="m", callback_manager=CallbackManager([debug])
    )
    assert reranker.postprocess_nodes([], query_str=QUERY) == []
    assert await reranker.apostprocess_nodes([], query_str=QUERY) == []
    assert [type(e) for e in rerank_events.events] == [ReRankStartEvent, ReRankEndEvent] * 2
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 2
    # The same reranker does try to connect when there is something to rerank.
    with pytest.raises(RerankConnectionError):
        reranker.postprocess_nodes(_inputs(), query_str=QUERY)
    with pytest.raises(RerankConnectionError):
        await reranker.apostprocess_nodes(_inputs(), query_str=QUERY)


async def test_a_query_is_required() -> None:
    reranker = Qwen3VLLMReranker(base_url=closed_port_url(), model="m")
    with pytest.raises(InvalidInput, match="query"):
        reranker.postprocess_nodes(_inputs())
    with pytest.raises(InvalidInput, match="query"):
        await reranker.apostprocess_nodes(_inputs())


async def test_clients_are_created_once_and_reused(served: Served) -> None:
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(base_url=served.base_url, http_client=http, http_async_client=ahttp)
            reranker.postprocess_nodes(_inputs(), query_str=QUERY)  # the first calls set the clients up
            await reranker.apostprocess_nodes(_inputs(), query_str=QUERY)
            log.paths.clear()
            alog.paths.clear()
            for _ in range(3):
                reranker.postprocess_nodes(_inputs(), query_str=QUERY)
                await reranker.apostprocess_nodes(_inputs(), query_str=QUERY)
            assert client_of(reranker) is client_of(reranker)
            assert async_client_of(reranker) is async_client_of(reranker)
            reranker.close()
            await reranker.aclose()
            assert not http.is_closed
            assert not ahttp.is_closed
    # A reused client sends nothing but the scoring request (no model discovery, no setup).
    assert log.paths == ["/v1/score"] * 3
    assert alog.paths == ["/v1/score"] * 3


async def test_copies_after_use_build_their_own_clients(served: Served, core: RerankClient) -> None:
    # Regression: copy.deepcopy / model_copy(deep=True) after a first call reached the cached
    # clients (httpx clients hold locks) and failed.
    inputs = _inputs()
    expected = core_scores(core, QUERY, inputs)
    with httpx.Client(timeout=120) as injected:
        reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None, http_client=injected)
        reranker.postprocess_nodes(inputs, query_str=QUERY)
        await reranker.apostprocess_nodes(inputs, query_str=QUERY)
        for copied in (copy.deepcopy(reranker), reranker.model_copy(deep=True), copy.copy(reranker)):
            assert copied.http_client is injected, "the caller's HTTP client is shared, never copied"
            assert_reranked(copied.postprocess_nodes(inputs, query_str=QUERY), inputs, expected, top_n=None)
            returned = await copied.apostprocess_nodes(inputs, query_str=QUERY)
            assert_reranked(returned, inputs, expected, top_n=None)
            assert client_of(copied) is not client_of(reranker)
            assert async_client_of(copied) is not async_client_of(reranker)
            await copied.aclose()
        await reranker.aclose()


def test_a_new_event_loop_gets_working_connections(served: Served, core: RerankClient) -> None:
    inputs = _inputs()
    expected = core_scores(core, QUERY, inputs)
    reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None)
    for _ in range(2):  # like two asyncio.run() calls in a script
        loop = asyncio.new_event_loop()
        try:
            returned = loop.run_until_complete(reranker.apostprocess_nodes(inputs, query_str=QUERY))
        finally:
            loop.close()
        assert_reranked(returned, inputs, expected, top_n=None)


def test_serialisation_never_leaks_the_api_key(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "sk-very-secret")
    log = RequestLog()
    http = log.client()
    reranker = Qwen3VLLMReranker(
        base_url=[served.base_url],
        top_n=4,
        score_threshold=0.0,
        keep_retrieval_score=True,
        on_error="passthrough",
        long_documents="chunk",
        max_length=1024,
        template="client",
        retry=RetryPolicy(max_attempts=2, deadline=30.0),
        cache_size=16,
        http_client=http,
    )
    assert isinstance(reranker.api_key, SecretStr)
    assert reranker.api_key.get_secret_value() == "sk-very-secret"
    data = reranker.to_dict()
    for text in (repr(reranker), str(reranker), json.dumps(data, default=str), reranker.to_json()):
        assert "sk-very-secret" not in text
    assert "api_key" not in data
    assert data["class_name"] == "Qwen3VLLMReranker"
    assert "http_client" not in data
    assert data["base_url"] == [served.base_url]
    assert data["top_n"] == 4
    expected_options = {
        "on_error": "passthrough",
        "long_documents": "chunk",
        "max_length": 1024,
        "template": "client",
        "retry": {"max_attempts": 2, "deadline": 30.0, "backoff": 0.2, "max_backoff": 5.0, "cooldown": 10.0},
        "cache_size": 16,
        "tokenizer": None,
    }
    assert {k: data[k] for k in expected_options} == expected_options
    restored = Qwen3VLLMReranker.from_dict(data)
    assert restored.to_dict() == data
    assert restored.api_key is not None
    assert restored.api_key.get_secret_value() == "sk-very-secret", "read from the environment again"
    assert Qwen3VLLMReranker.from_json(reranker.to_json()).to_dict() == data
    # Every request, on an injected HTTP client too, carries the key as a bearer token.
    with http:
        returned = reranker.postprocess_nodes(_inputs(), query_str=QUERY)
    assert len(returned) == 4
    assert all("rerank_error" not in n.node.metadata for n in returned)
    assert log.headers
    assert all(h["authorization"] == "Bearer sk-very-secret" for h in log.headers)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Qwen3VLLMReranker(top_n=0),
        lambda: Qwen3VLLMReranker(batch_size=0),
        lambda: Qwen3VLLMReranker(timeout=-1),
        lambda: Qwen3VLLMReranker(max_concurrency=0),
        lambda: Qwen3VLLMReranker(max_length=0),
        lambda: Qwen3VLLMReranker(long_documents="cut"),  # type: ignore[arg-type]
        lambda: Qwen3VLLMReranker(template="jinja"),  # type: ignore[arg-type]
        lambda: Qwen3VLLMReranker(retry={"max_attempts": 0}),
        lambda: Qwen3VLLMReranker(retry={"deadline": -1}),
        lambda: Qwen3VLLMReranker(max_attempts=2),  # type: ignore[call-arg]  # now retry=RetryPolicy(...)
        lambda: Qwen3VLLMReranker(cache_size=-1),
        lambda: Qwen3VLLMReranker(on_error="ignore"),  # type: ignore[arg-type]
    ],
)
def test_invalid_configuration_is_rejected(build: Callable[[], object]) -> None:
    with pytest.raises(ValidationError):
        build()


def test_connection_settings_are_fixed_once_built(served: Served) -> None:
    reranker = Qwen3VLLMReranker(base_url=served.base_url)
    reranker.postprocess_nodes(_inputs(), query_str=QUERY)
    with pytest.raises(ValidationError):
        reranker.base_url = closed_port_url()
    moved = reranker.model_copy(update={"base_url": closed_port_url()})
    with pytest.raises(RerankConnectionError):
        moved.postprocess_nodes(_inputs(), query_str=QUERY)
    assert len(reranker.postprocess_nodes(_inputs(), query_str=QUERY)) == 3


# -- options passed to the core client --------------------------------------------------------


def _long_input() -> NodeWithScore:
    paragraph = pydoc_paragraphs(1500, 3000)[0]
    return NodeWithScore(
        node=TextNode(text=paragraph.text, id_=paragraph.id, metadata={"topic": paragraph.topic}), score=0.5
    )


@pytest.mark.parametrize(
    ("policy", "key"), [("chunk", "window"), ("truncate", "truncated")], ids=["chunk", "truncate"]
)
async def test_long_documents_reach_the_client_and_are_marked(
    served: Served, policy: Literal["chunk", "truncate"], key: str
) -> None:
    short, long = _inputs()[0], _long_input()
    inputs = [short, long]
    snapshot = copy.deepcopy(inputs)
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in inputs]
    with RerankClient(served.base_url, model=served.model, long_documents=policy, max_length=256) as core:
        (reference,) = [r for r in core.rerank(QUERY, texts) if r.index == 1]
    assert reference.window is not None if policy == "chunk" else reference.truncated
    reranker = Qwen3VLLMReranker(base_url=served.base_url, top_n=None, long_documents=policy, max_length=256)
    for returned in (
        reranker.postprocess_nodes(inputs, query_str=QUERY),
        await reranker.apostprocess_nodes(inputs, query_str=QUERY),
    ):
        by_id = {n.node.node_id: n for n in returned}
        marked = by_id[long.node.node_id]
        assert marked.score == pytest.approx(reference.score, abs=1e-5)
        assert marked.node.metadata[key] == (reference.window if policy == "chunk" else True)
        assert key in marked.node.excluded_llm_metadata_keys
        assert key in marked.node.excluded_embed_metadata_keys
        assert marked.node.get_content(MetadataMode.EMBED) == long.node.get_content(MetadataMode.EMBED)
        assert by_id[short.node.node_id].node is short.node, "only copied where metadata is added"
    assert inputs == snapshot


async def test_cache_size_reaches_the_client(served: Served) -> None:
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(
                base_url=served.base_url, cache_size=64, http_client=http, http_async_client=ahttp
            )
            first = reranker.postprocess_nodes(_inputs(), query_str=QUERY)
            afirst = await reranker.apostprocess_nodes(_inputs(), query_str=QUERY)
            log.paths.clear()
            alog.paths.clear()
            assert reranker.postprocess_nodes(_inputs(), query_str=QUERY) == first
            assert await reranker.apostprocess_nodes(_inputs(), query_str=QUERY) == afirst
    assert "/v1/score" not in log.paths + alog.paths, "answered from the cache"


def test_replicas_and_the_retry_policy_reach_the_client(served: Served, core: RerankClient) -> None:
    inputs = _inputs()
    expected = core_scores(core, QUERY, inputs)
    down = closed_port_url()
    reranker = Qwen3VLLMReranker(base_url=f"{down},{served.base_url}", top_n=None)
    assert_reranked(reranker.postprocess_nodes(inputs, query_str=QUERY), inputs, expected, top_n=None)
    log = RequestLog()
    with log.client() as http:
        retry = RetryPolicy(max_attempts=2)
        failing = Qwen3VLLMReranker(base_url=down, model="m", retry=retry, http_client=http)
        with pytest.raises(RerankConnectionError):
            failing.postprocess_nodes(inputs, query_str=QUERY)
    assert len(log.paths) == 2, "one try and one retry"


# -- on_error ---------------------------------------------------------------------------------


async def test_passthrough_keeps_retrieval_order_and_scores_and_marks_copies(
    rerank_events: RerankEvents, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = _inputs()
    snapshot = copy.deepcopy(inputs)
    debug = LlamaDebugHandler()
    url = closed_port_url()
    reranker = Qwen3VLLMReranker(
        base_url=url,
        model="m",
        api_key=SecretStr("sk-log-secret"),
        on_error="passthrough",
        top_n=4,
        score_threshold=0.99,
        callback_manager=CallbackManager([debug]),
    )
    with caplog.at_level("WARNING", logger="llama_index.postprocessor.qwen3_vllm_rerank"):
        for returned in (
            reranker.postprocess_nodes(inputs, query_str=QUERY),
            await reranker.apostprocess_nodes(inputs, query_str=QUERY),
        ):
            assert inputs == snapshot, "the caller's nodes and scores are untouched"
            assert [n.node.node_id for n in returned] == [n.node.node_id for n in inputs[:4]]
            for result, original in zip(returned, inputs, strict=False):
                assert result.score == original.score, "the retrieval score, no threshold"
                assert result.node is not original.node
                marker = result.node.metadata["rerank_error"]
                assert marker.startswith("RerankConnectionError: cannot connect")
                assert result.node.metadata == {**original.node.metadata, "rerank_error": marker}
                assert "rerank_error" in result.node.excluded_llm_metadata_keys
                assert "rerank_error" in result.node.excluded_embed_metadata_keys
                assert result.node.get_content(MetadataMode.LLM) == original.node.get_content(
                    MetadataMode.LLM
                )
    # The end events are emitted in passthrough too, carrying the nodes returned.
    kinds = [type(e) for e in rerank_events.events]
    assert kinds == [ReRankStartEvent, ReRankEndEvent] * 2
    end = rerank_events.events[-1]
    assert isinstance(end, ReRankEndEvent)
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in inputs[:4]]
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 2
    # One warning per call, without the query, the texts or the key.
    warnings = [r for r in caplog.records if r.name == "llama_index.postprocessor.qwen3_vllm_rerank.base"]
    assert [r.levelname for r in warnings] == ["WARNING", "WARNING"]
    assert "RerankConnectionError" in caplog.text
    for secret in (QUERY, "sk-log-secret", *(n.node.get_content()[:40] for n in inputs)):
        assert secret not in caplog.text
    # keep_retrieval_score and top_n=None apply in passthrough too.
    everything = reranker.model_copy(update={"top_n": None, "keep_retrieval_score": True})
    returned = everything.postprocess_nodes(inputs, query_str=QUERY)
    assert [n.score for n in returned] == [n.score for n in inputs]
    assert [n.node.metadata["retrieval_score"] for n in returned] == [n.score for n in inputs]


async def test_raise_mode_raises_and_emits_no_end_event(rerank_events: RerankEvents) -> None:
    reranker = Qwen3VLLMReranker(base_url=closed_port_url(), model="m")
    assert reranker.on_error == "raise"
    with pytest.raises(RerankConnectionError):
        reranker.postprocess_nodes(_inputs(), query_str=QUERY)
    with pytest.raises(RerankConnectionError):
        await reranker.apostprocess_nodes(_inputs(), query_str=QUERY)
    assert [type(e) for e in rerank_events.events] == [ReRankStartEvent] * 2


async def test_invalid_input_raises_before_any_request_even_in_passthrough(
    rerank_events: RerankEvents,
) -> None:
    without_text = NodeWithScore(node=TextNode.model_construct(text=None, metadata={"topic": "x"}), score=1.0)
    inputs = [*_inputs()[:2], without_text]
    log, alog = RequestLog(), RequestLog()
    with log.client() as http:
        async with alog.async_client() as ahttp:
            reranker = Qwen3VLLMReranker(
                base_url=closed_port_url(),
                model="m",
                on_error="passthrough",
                http_client=http,
                http_async_client=ahttp,
            )
            with pytest.raises(InvalidInput, match=r"nodes\[2\]"):
                reranker.postprocess_nodes(inputs, query_str=QUERY)
            with pytest.raises(InvalidInput, match=r"nodes\[2\]"):
                await reranker.apostprocess_nodes(inputs, query_str=QUERY)
            with pytest.raises(InvalidInput, match="query"):
                reranker.postprocess_nodes(inputs[:2], query_str="  ")
            with pytest.raises(InvalidInput, match="query"):
                await reranker.apostprocess_nodes(inputs[:2], query_str="  ")
    assert log.paths == alog.paths == [], "rejected before any request"
    assert [type(e) for e in rerank_events.events] == [ReRankStartEvent] * 2, "only the empty queries"
