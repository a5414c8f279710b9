"""Secrets never leave the LangChain adapter: not through ``repr``, pydantic or LangChain dumps,
copies, passthrough markers, warnings or errors (no server needed: nothing here is scored)."""

from __future__ import annotations

import copy
import logging

import pytest
from langchain_core.documents import Document
from langchain_core.load import dumpd, dumps
from pydantic import SecretStr

from langchain_qwen3_vllm_rerank import Qwen3VLLMCrossEncoder, Qwen3VLLMReranker
from qwen3_vllm_rerank import Qwen3RerankError, UrlFetcher
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


def _shown(component: Qwen3VLLMReranker | Qwen3VLLMCrossEncoder) -> list[str]:
    """Every way a component is commonly shown or serialised."""
    return [
        repr(component),
        str(component),
        repr(component.model_dump()),
        component.model_dump_json(),
        repr(dumpd(component)),
        dumps(component),
        repr(copy.deepcopy(component)),
        repr(component.model_copy()),
    ]


@pytest.mark.parametrize("component", [Qwen3VLLMReranker, Qwen3VLLMCrossEncoder])
def test_fetcher_headers_key_and_base_url_password_are_never_shown(
    component: type[Qwen3VLLMReranker] | type[Qwen3VLLMCrossEncoder],
) -> None:
    built = component(
        base_url=f"http://svc:{PASSWORD}@vllm.internal:8000",
        api_key=SecretStr(API_KEY),
        image_fetcher=_fetcher(),
    )
    for text in _shown(built):
        for secret in SECRETS:
            assert secret not in text, text
    dumped = built.model_dump()
    assert "api_key" not in dumped
    assert dumped["base_url"] == "http://***@vllm.internal:8000"
    assert dumped["image_fetcher"]["timeout"] == 4.0, "the fetcher's other settings are kept"
    assert dumped["image_fetcher"]["allowed_hosts"] == ("cdn.example.com",)
    assert "headers" not in dumped["image_fetcher"]


def test_copies_keep_the_secrets_they_need_to_work() -> None:
    reranker = Qwen3VLLMReranker(
        base_url=f"http://svc:{PASSWORD}@vllm.internal:8000", image_fetcher=_fetcher()
    )
    for copied in (copy.deepcopy(reranker), reranker.model_copy(deep=True), copy.copy(reranker)):
        assert copied.image_fetcher == _fetcher()
        assert copied.client_options()["base_url"] == f"http://svc:{PASSWORD}@vllm.internal:8000"


def test_a_dump_validates_back_without_the_fetcher_headers() -> None:
    reranker = Qwen3VLLMReranker(image_fetcher=_fetcher(), top_n=2)
    restored = Qwen3VLLMReranker.model_validate(reranker.model_dump())
    assert restored.image_fetcher == UrlFetcher(timeout=4.0, allowed_hosts=("cdn.example.com",))
    assert restored.top_n == 2


async def test_a_base_url_password_is_not_in_markers_warnings_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = closed_port_url().replace("http://", f"http://svc:{PASSWORD}@")
    documents = [Document("one", id="1"), Document("two", id="2")]
    passthrough = Qwen3VLLMReranker(base_url=url, model="m", on_error="passthrough", top_n=None)
    with caplog.at_level(logging.WARNING, logger="langchain_qwen3_vllm_rerank"):
        for returned in (
            passthrough.compress_documents(documents, "q"),
            await passthrough.acompress_documents(documents, "q"),
        ):
            markers = [d.metadata["rerank_error"] for d in returned]
            assert all(m.startswith("RerankConnectionError: ") for m in markers)
            assert all(PASSWORD not in m for m in markers)
            assert all("127.0.0.1" in m for m in markers), "where it failed is still said"
    assert caplog.records
    assert PASSWORD not in caplog.text
    raising = passthrough.model_copy(update={"on_error": "raise"})
    with pytest.raises(Qwen3RerankError) as raised:
        raising.compress_documents(documents, "q")
    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in repr(getattr(raised.value, "url", ""))
