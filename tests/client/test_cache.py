"""The optional score cache: repeated candidates skip the server, results unchanged."""

from __future__ import annotations

import httpx
import pytest

from qwen3_vllm_rerank import AsyncRerankClient, CacheInfo, RerankClient
from qwen3_vllm_rerank.client._score_cache import ScoreCache
from tests.support.fixtures import Served

QUERY = "how do generators work?"
DOCS = ["Generators yield values lazily.", "Tea is brewed with hot water.", "yield suspends a function."]


def test_cache_is_off_by_default(served: Served) -> None:
    with RerankClient(served.base_url) as client:
        assert client.cache_info() is None


def test_repeated_candidates_are_served_from_the_cache(served: Served) -> None:
    paths: list[str] = []
    with httpx.Client(event_hooks={"request": [lambda r: paths.append(r.url.path)]}, timeout=60) as http:
        client = RerankClient(served.base_url, cache_size=100, http_client=http)
        first = client.rerank(QUERY, DOCS)
        scored = paths.count("/v1/score")
        again = client.rerank(QUERY, DOCS)
        assert paths.count("/v1/score") == scored, "a full hit sends nothing"
        assert again == first
        assert client.cache_info() == CacheInfo(hits=3, misses=3, size=3, maxsize=100)
        # Only the new document goes to the server; another instruction is another key.
        mixed = client.score(QUERY, [*DOCS, "A new candidate."])
        assert paths.count("/v1/score") == scored + 1
        assert mixed[:3] == pytest.approx([r.score for r in sorted(first, key=lambda r: r.index)])
        client.score(QUERY, DOCS[:1], instruction="Find recipes")
        assert client.cache_info() == CacheInfo(hits=6, misses=5, size=5, maxsize=100)
        client.cache_clear()
        assert client.cache_info() == CacheInfo(hits=0, misses=0, size=0, maxsize=100)


async def test_async_client_uses_the_same_cache_logic(served: Served) -> None:
    async with AsyncRerankClient(served.base_url, cache_size=2) as client:
        first = await client.score(QUERY, DOCS)
        again = await client.score(QUERY, DOCS[1:])
    assert again == first[1:]
    assert client.cache_info() == CacheInfo(hits=2, misses=3, size=2, maxsize=2)


def test_lru_evicts_the_least_recently_used() -> None:
    cache: ScoreCache[float] = ScoreCache(2)
    cache.put("a", 1.0)
    cache.put("b", 2.0)
    assert cache.get("a") == 1.0
    cache.put("c", 3.0)
    assert cache.get("b") is None
    assert cache.get("a") == 1.0
    assert cache.get("c") == 3.0
