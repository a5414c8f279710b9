"""Scores from the client against a real vLLM server equal Qwen's reference scores.

The reference is the model card's transformers implementation (CausalLM, last-token
logits, softmax over [no, yes]) in float32; each serving path in ``serving.py`` is
checked, through ``score`` and ``rerank``, sync and async.
"""

from __future__ import annotations

import pytest

from qwen3_vllm_rerank import AsyncRerankClient, RerankClient
from tests.support.fixtures import Served
from tests.support.pairs import FIDELITY_CASES, N_PAIRS, Case
from tests.support.reference import reference_scores

TOLERANCE = 1e-4


def _check(case: Case, served: Served, scores: list[float]) -> None:
    expected = reference_scores(served.original, case.query, case.documents, case.instruction)
    assert len(scores) == len(expected)
    diffs = [abs(a - b) for a, b in zip(scores, expected, strict=True)]
    assert max(diffs) <= TOLERANCE, f"{served.name}: {scores} vs reference {expected}"


def test_cases_cover_at_least_twenty_pairs() -> None:
    assert N_PAIRS >= 20


def test_scores_are_spread_so_fidelity_means_something(serving_path: Served) -> None:
    case = FIDELITY_CASES[0]
    scores = reference_scores(serving_path.original, case.query, case.documents)
    assert max(scores) - min(scores) > 0.05


@pytest.mark.parametrize("case", FIDELITY_CASES, ids=lambda c: c.query[:20])
def test_sync_score_and_rerank_match_reference(serving_path: Served, case: Case) -> None:
    with RerankClient(serving_path.base_url, batch_size=4) as client:
        scores = client.score(case.query, case.documents, instruction=case.instruction)
        _check(case, serving_path, scores)
        results = client.rerank(case.query, case.documents, instruction=case.instruction)
    by_index = [0.0] * len(case.documents)
    for result in results:
        by_index[result.index] = result.score
        assert result.document == case.documents[result.index]
    _check(case, serving_path, by_index)
    assert [r.score for r in results] == sorted(by_index, reverse=True)


@pytest.mark.parametrize("case", FIDELITY_CASES, ids=lambda c: c.query[:20])
async def test_async_score_and_rerank_match_reference(serving_path: Served, case: Case) -> None:
    async with AsyncRerankClient(serving_path.base_url, batch_size=2, max_concurrency=3) as client:
        scores = await client.score(case.query, case.documents, instruction=case.instruction)
        _check(case, serving_path, scores)
        results = await client.rerank(case.query, case.documents, instruction=case.instruction)
    by_index = [0.0] * len(case.documents)
    for result in results:
        by_index[result.index] = result.score
    _check(case, serving_path, by_index)
