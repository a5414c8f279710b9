"""API keys: only guarded endpoints, refused without the key, and nothing secret logged."""

from __future__ import annotations

import logging

import httpx
import pytest

from qwen3_vllm_rerank import RerankClient, RerankHTTPError
from tests.support.fixtures import ServerPool
from tests.support.reference import reference_scores
from tests.support.serving import TEST_API_KEY

QUERY = "a secret query about payroll"
DOCS = ["confidential salary table", "public holiday calendar"]


def test_client_with_the_key_uses_only_guarded_paths(server_pool: ServerPool) -> None:
    served = server_pool.get("api-key")
    paths: list[str] = []
    with httpx.Client(
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        event_hooks={"request": [lambda r: paths.append(r.url.path)]},
        timeout=60,
    ) as http:
        client = RerankClient(served.base_url, api_key=TEST_API_KEY, http_client=http)
        scores = client.score(QUERY, DOCS)
    assert scores == pytest.approx(reference_scores(served.original, QUERY, DOCS), abs=1e-4)
    assert paths
    assert all(p.startswith("/v1/") for p in paths), paths
    # ... and every one of those paths refuses a request without the key.
    for path in sorted(set(paths)):
        method = "GET" if path == "/v1/models" else "POST"
        body = None if method == "GET" else {"model": served.model, "text_1": "a", "text_2": ["b"]}
        response = httpx.request(method, served.base_url + path, json=body, timeout=60)
        assert response.status_code == 401, path


def test_the_key_comes_from_the_environment(server_pool: ServerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    served = server_pool.get("api-key")
    monkeypatch.setenv("QWEN3_VLLM_RERANK_API_KEY", TEST_API_KEY)
    with RerankClient(served.base_url) as client:
        assert len(client.score(QUERY, DOCS)) == 2


def test_a_wrong_key_is_a_clear_401(server_pool: ServerPool) -> None:
    served = server_pool.get("api-key")
    with RerankClient(served.base_url, api_key="wrong") as client, pytest.raises(RerankHTTPError) as info:
        client.score(QUERY, DOCS)
    assert info.value.status_code == 401
    assert "api_key" in str(info.value)


def test_no_text_or_key_is_logged(server_pool: ServerPool, caplog: pytest.LogCaptureFixture) -> None:
    served = server_pool.get("api-key")
    with caplog.at_level(logging.DEBUG, logger="qwen3_vllm_rerank"):
        with RerankClient(served.base_url, api_key=TEST_API_KEY) as client:
            client.rerank(QUERY, DOCS)
        with RerankClient(served.base_url, api_key="wrong") as client, pytest.raises(RerankHTTPError):
            client.rerank(QUERY, DOCS)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (QUERY, *DOCS, TEST_API_KEY, "wrong"):
        assert secret not in logged
