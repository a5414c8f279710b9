"""The adapters' settings are the core client's options, declared once for both frameworks."""

from __future__ import annotations

import inspect

from pydantic import SecretStr

from qwen3_vllm_rerank import AsyncRerankClient, RerankClient, RetryPolicy, UrlFetcher
from qwen3_vllm_rerank.adapters import ClientSettings, RerankSettings

INJECTED = {"http_client", "http_async_client"}


def test_the_adapter_settings_are_exactly_the_client_options() -> None:
    for client in (RerankClient, AsyncRerankClient):
        options = set(inspect.signature(client.__init__).parameters) - {"self", "http_client"}
        assert set(ClientSettings.model_fields) - INJECTED == options
    assert set(RerankSettings.model_fields) - set(ClientSettings.model_fields) == {
        "top_n",
        "score_threshold",
        "on_error",
    }


def test_every_setting_is_documented_in_place() -> None:
    for name, field in RerankSettings.model_fields.items():
        assert field.description, name
    assert "Args:" in (RerankClient.__init__.__doc__ or "")
    for name in set(inspect.signature(RerankClient.__init__).parameters) - {"self"}:
        assert f"{name}:" in (RerankClient.__init__.__doc__ or ""), name


def test_client_options_build_a_client_with_the_same_settings() -> None:
    settings = RerankSettings(
        base_url="http://a:1,http://b:2",
        api_key=SecretStr("sk-x"),
        retry=RetryPolicy(max_attempts=2),
        image_fetcher=UrlFetcher(timeout=3.0),
        top_n=2,
    )
    options = settings.client_options()
    assert options["api_key"] == "sk-x"
    assert "top_n" not in options
    client = RerankClient(**options)
    assert client.base_urls == ["http://a:1", "http://b:2"]
    assert client.retry == RetryPolicy(max_attempts=2)
    assert client.image_fetcher == UrlFetcher(timeout=3.0)
    client.close()


def test_policies_validate_from_plain_data() -> None:
    # LlamaIndex's from_dict / LangChain configs hand the settings over as plain data.
    settings = RerankSettings.model_validate(
        {"retry": {"max_attempts": 5}, "image_fetcher": {"max_bytes": 10}}
    )
    assert settings.retry == RetryPolicy(max_attempts=5)
    assert settings.image_fetcher == UrlFetcher(max_bytes=10)
