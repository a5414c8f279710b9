"""Secrets never leave the LlamaIndex postprocessor: not through ``repr``, ``to_dict`` / ``to_json``,
pydantic dumps, copies, passthrough markers, warnings or errors (no server needed)."""

from __future__ import annotations

import copy
import json
import logging

import pytest
from llama_index.core.schema import NodeWithScore, TextNode
from pydantic import SecretStr

from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker
from qwen3_vllm_rerank import API_KEY_ENV, Qwen3RerankError, UrlFetcher
from tests.support.recording import closed_port_url

CDN_TOKEN = "Bearer cdn-token-4f1e"  # noqa: S105 - a test secret, looked for in the output
API_KEY = "sk-api-key-9b2c"
PASSWORD = "pw-base-url-7d3a"  # noqa: S105 - a test secret, looked for in the output
SECRETS = (CDN_TOKEN, "cdn-token-4f1e", API_KEY, PASSWORD)


def _fetcher() -> UrlFetcher:
    return UrlFetcher(
        timeout=4.0,
        allowed_hosts=("cdn.example.com",),
        headers={"https://cdn.example.com": {"Authorization": CDN_TOKEN}},
    )


def _reranker() -> Qwen3VLLMReranker:
    return Qwen3VLLMReranker(
        base_url=f"http://svc:{PASSWORD}@vllm.internal:8000",
        api_key=SecretStr(API_KEY),
        image_fetcher=_fetcher(),
        top_n=2,
    )


def test_fetcher_headers_key_and_base_url_password_are_never_shown_or_serialised() -> None:
    reranker = _reranker()
    shown = [
        repr(reranker),
        str(reranker),
        json.dumps(reranker.to_dict(), default=str),
        reranker.to_json(),
        repr(reranker.model_dump()),
        reranker.model_dump_json(),
        repr(copy.deepcopy(reranker)),
        repr(reranker.model_copy()),
    ]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text, text
    data = reranker.to_dict()
    assert "api_key" not in data
    assert data["base_url"] == "http://***@vllm.internal:8000"
    assert data["image_fetcher"]["allowed_hosts"] == ("cdn.example.com",)
    assert "headers" not in data["image_fetcher"]


def test_from_dict_restores_the_settings_but_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    reranker = _reranker()
    for restored in (
        Qwen3VLLMReranker.from_dict(reranker.to_dict()),
        Qwen3VLLMReranker.from_json(reranker.to_json()),
    ):
        assert restored.image_fetcher == UrlFetcher(timeout=4.0, allowed_hosts=("cdn.example.com",))
        assert restored.api_key is None
        assert restored.top_n == 2
        assert restored.to_dict() == reranker.to_dict()


def test_copies_keep_the_secrets_they_need_to_work() -> None:
    reranker = _reranker()
    for copied in (copy.deepcopy(reranker), reranker.model_copy(deep=True), copy.copy(reranker)):
        assert copied.image_fetcher == _fetcher()
        assert copied.api_key is not None
        assert copied.api_key.get_secret_value() == API_KEY
        assert copied.client_options()["base_url"] == f"http://svc:{PASSWORD}@vllm.internal:8000"


async def test_a_base_url_password_is_not_in_markers_warnings_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = closed_port_url().replace("http://", f"http://svc:{PASSWORD}@")
    nodes = [NodeWithScore(node=TextNode(text=t, id_=t), score=1.0) for t in ("one", "two")]
    passthrough = Qwen3VLLMReranker(base_url=url, model="m", on_error="passthrough", top_n=None)
    with caplog.at_level(logging.WARNING, logger="llama_index.postprocessor.qwen3_vllm_rerank"):
        for returned in (
            passthrough.postprocess_nodes(nodes, query_str="q"),
            await passthrough.apostprocess_nodes(nodes, query_str="q"),
        ):
            markers = [n.node.metadata["rerank_error"] for n in returned]
            assert all(m.startswith("RerankConnectionError: ") for m in markers)
            assert all(PASSWORD not in m for m in markers)
            assert all("127.0.0.1" in m for m in markers), "where it failed is still said"
    assert caplog.records
    assert PASSWORD not in caplog.text
    raising = passthrough.model_copy(update={"on_error": "raise"})
    with pytest.raises(Qwen3RerankError) as raised:
        raising.postprocess_nodes(nodes, query_str="q")
    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in repr(getattr(raised.value, "url", ""))
