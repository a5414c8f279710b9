"""The ranker through Haystack's serialisation: ``to_dict`` / ``from_dict`` round-trip every setting,
a Pipeline holding it dumps and loads under Haystack's default deserialisation allow-list, and no
secret is ever serialised or shown (no server needed)."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import yaml
from haystack import Document, Pipeline
from haystack.utils import Secret

from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker
from qwen3_vllm_rerank import API_KEY_ENV, InvalidInput, Qwen3RerankError, RetryPolicy, UrlFetcher
from qwen3_vllm_rerank.adapters import client_of
from tests.support.recording import closed_port_url

CDN_TOKEN = "Bearer cdn-token-4f1e"  # noqa: S105 - a test secret, looked for in the output
API_KEY = "sk-api-key-9b2c"
PASSWORD = "pw-base-url-7d3a"  # noqa: S105 - a test secret, looked for in the output
SECRETS = (CDN_TOKEN, "cdn-token-4f1e", API_KEY, PASSWORD)
ENV_VAR = "VLLM_API_KEY"


def _fetcher() -> UrlFetcher:
    return UrlFetcher(
        timeout=4.0,
        allowed_hosts=("cdn.example.com",),
        headers={"https://cdn.example.com": {"Authorization": CDN_TOKEN}},
    )


def _ranker(**overrides: object) -> Qwen3VLLMRanker:
    options: dict[str, object] = {
        "base_url": f"http://svc:{PASSWORD}@vllm.internal:8000",
        "model": "qwen3-reranker",
        "instruction": "Find the passage",
        "retry": RetryPolicy(max_attempts=2, deadline=30.0),
        "image_fetcher": _fetcher(),
        "batch_size": 16,
        "long_documents": "chunk",
        "top_k": 4,
        "score_threshold": 0.2,
        "on_error": "passthrough",
        "meta_fields_to_embed": ["title"],
        "meta_data_separator": " | ",
        "root_path": "/srv/images",
    }
    options.update(overrides)
    return Qwen3VLLMRanker(**options)  # type: ignore[arg-type]


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, API_KEY)
    monkeypatch.delenv(API_KEY_ENV, raising=False)


@pytest.mark.usefixtures("env_key")
def test_to_dict_from_dict_round_trips_every_setting() -> None:
    ranker = _ranker()
    data = ranker.to_dict()
    assert data["type"] == "haystack_integrations.components.rankers.qwen3_vllm_rerank.ranker.Qwen3VLLMRanker"
    init = data["init_parameters"]
    assert init["api_key"] == {"type": "env_var", "env_vars": [ENV_VAR], "strict": False}
    assert init["retry"] == {
        "max_attempts": 2,
        "deadline": 30.0,
        "backoff": 0.2,
        "max_backoff": 5.0,
        "cooldown": 10.0,
    }
    assert init["top_k"] == 4
    assert init["meta_fields_to_embed"] == ["title"]
    json.dumps(data)  # plain data: what a pipeline YAML holds
    restored = Qwen3VLLMRanker.from_dict(copy.deepcopy(data))
    assert restored.to_dict() == data
    assert restored.settings.retry == RetryPolicy(max_attempts=2, deadline=30.0)
    assert restored.settings.image_fetcher == UrlFetcher(timeout=4.0, allowed_hosts=("cdn.example.com",))
    assert restored.settings.long_documents == "chunk"
    assert restored.settings.on_error == "passthrough"
    assert restored.top_k == 4
    # The key is read from its environment variable again, never from the dict.
    key = restored.settings.api_key
    assert key is not None
    assert key.get_secret_value() == API_KEY


@pytest.mark.usefixtures("env_key")
def test_a_pipeline_with_the_ranker_dumps_and_loads_under_the_default_allow_list() -> None:
    pipeline = Pipeline()
    pipeline.add_component("ranker", _ranker())
    text = pipeline.dumps()
    for secret in SECRETS:
        assert secret not in text
    loaded = Pipeline.loads(text)  # no allowed_modules, no unsafe=True
    ranker = loaded.get_component("ranker")
    assert isinstance(ranker, Qwen3VLLMRanker)
    assert ranker.to_dict() == pipeline.get_component("ranker").to_dict()
    assert yaml.safe_load(text)["components"]["ranker"]["init_parameters"]["base_url"] == (
        "http://***@vllm.internal:8000"
    )


@pytest.mark.usefixtures("env_key")
def test_no_secret_is_serialised_or_shown() -> None:
    ranker = _ranker()
    data = ranker.to_dict()
    shown = [json.dumps(data), repr(ranker), str(ranker), repr(ranker.settings), repr(copy.deepcopy(ranker))]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text, text
    assert data["init_parameters"]["base_url"] == "http://***@vllm.internal:8000"
    assert "headers" not in data["init_parameters"]["image_fetcher"]
    # The ranker itself still has what it needs to work.
    assert ranker.settings.client_options()["api_key"] == API_KEY
    assert ranker.settings.client_options()["base_url"] == f"http://svc:{PASSWORD}@vllm.internal:8000"


def test_a_key_given_as_a_token_is_used_but_never_serialised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    ranker = _ranker(api_key=Secret.from_token(API_KEY))
    assert ranker.settings.client_options()["api_key"] == API_KEY
    with pytest.raises(ValueError, match="Cannot serialize token-based secret"):
        ranker.to_dict()
    with pytest.raises(InvalidInput, match=r"api_key must be a haystack\.utils\.Secret"):
        _ranker(api_key=API_KEY)


def test_without_vllm_api_key_the_core_clients_variable_still_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    ranker = _ranker(base_url="http://vllm.internal:8000")
    assert ranker.settings.api_key is None, "nothing resolved from the Haystack Secret"
    client = client_of(ranker.settings)
    assert client._api_key == API_KEY, "the core client reads its own variable"
    ranker.close()
    for secret in SECRETS:
        assert secret not in json.dumps(ranker.to_dict())


async def test_a_base_url_password_is_not_in_markers_warnings_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = closed_port_url().replace("http://", f"http://svc:{PASSWORD}@")
    documents = [Document(content=t, id=t) for t in ("one", "two")]
    ranker = Qwen3VLLMRanker(
        base_url=url, model="m", on_error="passthrough", retry=RetryPolicy(max_attempts=1), api_key=None
    )
    with caplog.at_level(
        logging.WARNING, logger="haystack_integrations.components.rankers.qwen3_vllm_rerank"
    ):
        ranker.warm_up()
        await ranker.warm_up_async()
        for output in (
            ranker.run(query="q", documents=documents),
            await ranker.run_async(query="q", documents=documents),
        ):
            markers = [d.meta["rerank_error"] for d in output["documents"]]
            assert all(m.startswith("RerankConnectionError: ") for m in markers)
            assert all(PASSWORD not in m for m in markers)
            assert all("127.0.0.1" in m for m in markers), "where it failed is still said"
    assert caplog.records
    assert PASSWORD not in caplog.text
    raising = Qwen3VLLMRanker(base_url=url, model="m", retry=RetryPolicy(max_attempts=1), api_key=None)
    for call in (raising.warm_up, lambda: raising.run(query="q", documents=documents)):
        with pytest.raises(Qwen3RerankError) as raised:
            call()
        assert PASSWORD not in str(raised.value)


def test_the_default_key_variable_is_the_one_the_launcher_hands_vllm() -> None:
    from haystack_integrations.components.rankers.qwen3_vllm_rerank import ranker
    from qwen3_vllm_rerank.serve import VLLM_API_KEY_ENV

    assert ranker.API_KEY_ENV_VAR == VLLM_API_KEY_ENV == ENV_VAR
