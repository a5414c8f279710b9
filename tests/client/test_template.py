"""The template is applied on exactly one side, or the client refuses to score."""

from __future__ import annotations

import httpx
import pytest

from qwen3_vllm_rerank import RerankClient, TemplateMismatchError
from tests.support.fixtures import ServerPool
from tests.support.pairs import FIDELITY_CASES
from tests.support.reference import reference_scores

CASE = FIDELITY_CASES[0]


def test_doubling_the_template_is_what_the_guard_prevents(server_pool: ServerPool) -> None:
    """Measured trap: client-formatted text sent to a templating server is templated twice."""
    served = server_pool.get("server-template")
    from qwen3_vllm_rerank.prompt import format_pair

    text_1, text_2 = format_pair(CASE.query, CASE.documents[0])
    doubled = httpx.post(
        f"{served.base_url}/v1/score",
        json={"model": served.model, "text_1": text_1, "text_2": [text_2]},
        timeout=60,
    ).json()
    single = httpx.post(
        f"{served.base_url}/v1/score",
        json={"model": served.model, "queries": CASE.query, "documents": [CASE.documents[0]]},
        timeout=60,
    ).json()
    assert doubled["usage"]["prompt_tokens"] > 1.5 * single["usage"]["prompt_tokens"]


def test_auto_uses_a_matching_server_template_and_scores_right(server_pool: ServerPool) -> None:
    served = server_pool.get("server-template")
    expected = reference_scores(served.original, CASE.query, CASE.documents, CASE.instruction)
    for template in ("auto", "server"):
        with RerankClient(served.base_url, template=template) as client:  # type: ignore[arg-type]
            scores = client.score(CASE.query, CASE.documents)
        assert scores == pytest.approx(expected, abs=1e-4), template
    custom = "Given a code search query, retrieve documentation that explains the feature"
    with RerankClient(served.base_url, instruction=custom) as client:
        scores = client.score(CASE.query, CASE.documents)
    assert scores == pytest.approx(
        reference_scores(served.original, CASE.query, CASE.documents, custom), abs=1e-4
    )


def test_client_template_on_a_templating_server_is_an_error(server_pool: ServerPool) -> None:
    served = server_pool.get("server-template")
    with RerankClient(served.base_url, template="client") as client:
        with pytest.raises(TemplateMismatchError, match="double the template"):
            client.score(CASE.query, CASE.documents)


def test_a_server_template_that_lost_its_newline_is_refused(server_pool: ServerPool) -> None:
    served = server_pool.get("server-template-lost-newline")
    with RerankClient(served.base_url) as client:
        for _ in range(2):  # and it stays refused: a failed check is never cached as passed
            with pytest.raises(TemplateMismatchError, match="differs from Qwen3-Reranker's"):
                client.score(CASE.query, CASE.documents)


def test_server_template_on_a_plain_server_is_an_error(server_pool: ServerPool) -> None:
    served = server_pool.get("original")
    with RerankClient(served.base_url, template="server") as client:
        with pytest.raises(TemplateMismatchError, match="applies no score template"):
            client.score(CASE.query, CASE.documents)
    with RerankClient(served.base_url, template="client") as client:
        assert client.score(CASE.query, CASE.documents) == pytest.approx(
            reference_scores(served.original, CASE.query, CASE.documents), abs=1e-4
        )
