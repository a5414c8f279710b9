"""The Haystack ranker against a real vLLM server, inside a real Pipeline
(``InMemoryDocumentStore`` -> ``InMemoryBM25Retriever`` -> ``Qwen3VLLMRanker``), sync and async."""

from __future__ import annotations

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker
from qwen3_vllm_rerank import RerankClient
from tests.support.corpus import pydoc_paragraphs
from tests.support.fixtures import Served
from tests.support.reference import reference_scores

QUERY = "How does the with statement call __enter__ and __exit__ on a context manager?"
CANDIDATES = 8


@pytest.fixture(scope="module")
def store() -> InMemoryDocumentStore:
    store = InMemoryDocumentStore()
    store.write_documents(
        [Document(content=p.text, id=p.id, meta={"topic": p.topic}) for p in pydoc_paragraphs()]
    )
    return store


def _pipeline(store: InMemoryDocumentStore, ranker: Qwen3VLLMRanker) -> Pipeline:
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(store, top_k=CANDIDATES))
    pipeline.add_component("ranker", ranker)
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


INPUTS = {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}


async def test_a_bm25_pipeline_ranks_with_the_clients_scores_sync_and_async(
    served: Served, store: InMemoryDocumentStore
) -> None:
    pipeline = _pipeline(store, Qwen3VLLMRanker(base_url=served.base_url, top_k=3))
    outputs = [
        pipeline.run(INPUTS, include_outputs_from={"retriever"}),
        await pipeline.run_async(INPUTS, include_outputs_from={"retriever"}),
    ]
    for output in outputs:
        retrieved: list[Document] = output["retriever"]["documents"]
        assert len(retrieved) == CANDIDATES
        with RerankClient(served.base_url) as client:
            expected = dict(
                zip(
                    (d.id for d in retrieved),
                    client.score(QUERY, [d.content or "" for d in retrieved]),
                    strict=True,
                )
            )
        best = sorted(expected, key=lambda i: -expected[i])[:3]
        ranked: list[Document] = output["ranker"]["documents"]
        assert [d.id for d in ranked] == best
        assert [d.score for d in ranked] == pytest.approx([expected[i] for i in best], abs=1e-4)
        assert output["ranker"]["meta"] == {"model": served.model}
        by_id = {d.id: d for d in retrieved}
        for doc in ranked:
            assert doc.content == by_id[doc.id].content
            assert doc.meta == by_id[doc.id].meta
    pipeline.close()
    await pipeline.close_async()


def test_run_overrides_meta_fields_and_the_scores_match_the_reference(served: Served) -> None:
    documents = [
        Document(content=p.text, id=p.id, meta={"topic": p.topic})
        for p in pydoc_paragraphs()
        if p.topic in {"with", "while"}
    ][:4]
    ranker = Qwen3VLLMRanker(
        base_url=served.base_url,
        top_k=3,
        score_threshold=0.0,
        meta_fields_to_embed=["topic"],
        meta_data_separator=": ",
    )
    ranker.warm_up()
    assert ranker.settings.served_model == served.model, "warm_up learned the server"
    texts = [f"{d.meta['topic']}: {d.content}" for d in documents]
    with RerankClient(served.base_url) as client:
        expected = client.score(QUERY, texts)
    every = ranker.run(query=QUERY, documents=documents, top_k=len(documents))["documents"]
    assert {d.id: d.score for d in every} == pytest.approx(
        {d.id: s for d, s in zip(documents, expected, strict=True)}, abs=1e-4
    )
    # What the model card computes for the same text (the served checkpoint's original).
    (reference,) = reference_scores(served.original, QUERY, texts[:1])
    assert next(d.score for d in every if d.id == documents[0].id) == pytest.approx(reference, abs=1e-4)
    # A threshold between the second and third best keeps two, fewer than top_k=3.
    third, second = sorted(expected)[1:3]
    assert second - third > 1e-3, "a threshold between them is not at a score"
    kept = ranker.run(query=QUERY, documents=documents, score_threshold=(second + third) / 2)["documents"]
    assert [d.score for d in kept] == pytest.approx(sorted(expected, reverse=True)[:2], abs=1e-4)


def test_a_pipeline_loaded_from_yaml_ranks_the_same(served: Served, store: InMemoryDocumentStore) -> None:
    pipeline = _pipeline(store, Qwen3VLLMRanker(base_url=served.base_url, top_k=4, on_error="passthrough"))
    loaded = Pipeline.loads(pipeline.dumps())
    first, second = pipeline.run(INPUTS), loaded.run(INPUTS)
    assert [(d.id, d.score) for d in first["ranker"]["documents"]] == [
        (d.id, d.score) for d in second["ranker"]["documents"]
    ]
    assert all("rerank_error" not in d.meta for d in second["ranker"]["documents"])
