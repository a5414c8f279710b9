"""Many concurrent queries: every score lands on its document, memory stays bounded."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from qwen3_vllm_rerank import AsyncRerankClient, InvalidInput, RerankClient
from tests.support.fixtures import Served


def _documents(query_index: int) -> list[str]:
    return [f"Document {d} for question {query_index}: value {query_index * 7 + d}." for d in range(4)]


async def test_two_hundred_concurrent_queries_land_on_the_right_documents(served: Served) -> None:
    queries = [f"Which document mentions value {i * 7 + 2}?" for i in range(200)]
    tracemalloc.start()
    try:
        async with AsyncRerankClient(served.base_url, max_concurrency=16, batch_size=4) as client:
            results = await asyncio.gather(*(client.score(q, _documents(i)) for i, q in enumerate(queries)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with RerankClient(served.base_url, batch_size=64) as client:
        sequential = [client.score(q, _documents(i)) for i, q in enumerate(queries)]
    assert len(results) == 200
    for concurrent, expected in zip(results, sequential, strict=True):
        assert concurrent == pytest.approx(expected, abs=1e-5)
    assert len({tuple(r) for r in results}) == 200  # distinct documents, distinct scores
    assert peak < 64 * 1024 * 1024


def test_ten_thousand_documents_in_batches_with_bounded_memory(served: Served) -> None:
    documents = [f"passage {i}" for i in range(10_000)]
    tracemalloc.start()
    try:
        with RerankClient(served.base_url, batch_size=500) as client:
            results = client.rerank("passage 4242", documents, top_n=20_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(r.index for r in results) == list(range(10_000))
    assert peak < 128 * 1024 * 1024


def test_edge_inputs(served: Served) -> None:
    with RerankClient(served.base_url) as client:
        scores = client.score("query", ["", "non-empty", ""])
        assert len(scores) == 3  # empty documents are scored, not dropped
        assert scores[0] == pytest.approx(scores[2], abs=1e-6)
        assert len(client.rerank("query", ["a", "b"], top_n=10)) == 2
        for bad in ("", "   "):
            with pytest.raises(InvalidInput, match="query is empty"):
                client.score(bad, ["a"])
        with pytest.raises(InvalidInput, match="top_n"):
            client.rerank("query", ["a"], top_n=-1)
    with pytest.raises(InvalidInput, match="batch_size"):
        RerankClient(batch_size=-3)
