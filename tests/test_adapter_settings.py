"""The adapters' shared contract: their settings are the core client's options (one table,
``client/_options.py``: same names, defaults, docs and compatible types on every side), and one
adapter call's outcome is returned in one order (scored, passed through, unusable)."""

from __future__ import annotations

import inspect
import logging
import types
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.cross_encoders import BaseCrossEncoder
from pydantic import BaseModel, SecretStr
from tokenizers import Tokenizer

from langchain_qwen3_vllm_rerank import Qwen3VLLMCrossEncoder
from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker as LangChainReranker
from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker as LlamaIndexReranker
from qwen3_vllm_rerank import (
    AsyncRerankClient,
    RerankClient,
    RerankConnectionError,
    RerankResult,
    RetryPolicy,
    UnusableDocuments,
    UrlFetcher,
)
from qwen3_vllm_rerank.adapters import (
    RERANK_ERROR_KEY,
    ClientSettings,
    Reranked,
    RerankSettings,
    Unusable,
    _RerankCall,
    items_to_return,
    rerank,
)
from qwen3_vllm_rerank.client._options import (
    API_KEY_ENV,
    BASE_URL_ENV,
    ClientOptions,
    option_default,
    option_doc,
    option_names,
)

INJECTED = {"http_client", "http_async_client"}
RESULT_SHAPING = {"top_n", "score_threshold", "on_error"}
CLIENTS = (RerankClient, AsyncRerankClient)
#: Every adapter component built on the shared settings.
ADAPTERS: tuple[type[BaseModel], ...] = (LangChainReranker, Qwen3VLLMCrossEncoder, LlamaIndexReranker)
#: Where the adapters' type differs from the table's on purpose: the key is a pydantic SecretStr.
ADAPTER_TYPES = {"api_key": SecretStr | None}
#: The frameworks' own packages: their base classes' fields are documented there.
FRAMEWORKS = {"langchain_core", "llama_index"}
LOGGER = logging.getLogger("test_adapter_settings")


def _members(annotation: object) -> set[object]:
    """The members of a union type (``X | Y``, ``Optional[X]``), or the type itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation))
    return {annotation}


def _client_hints(client: type) -> dict[str, Any]:
    return typing.get_type_hints(client.__init__, localns={"Tokenizer": Tokenizer})


def _squeezed(text: str | None) -> str:
    """``text`` without whitespace (docs are re-wrapped where they are shown)."""
    return "".join((text or "").split())


def test_the_adapter_settings_are_exactly_the_client_options() -> None:
    names = set(option_names())
    for client in CLIENTS:
        assert set(inspect.signature(client.__init__).parameters) - {"self", "http_client"} == names
    assert set(ClientSettings.model_fields) - INJECTED == names
    assert set(RerankSettings.model_fields) - set(ClientSettings.model_fields) == RESULT_SHAPING
    for adapter in ADAPTERS:
        assert names <= set(adapter.model_fields), adapter


def test_every_option_has_one_name_default_doc_and_type_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    # base_url and api_key default to the environment on both sides; without it, to the table's None.
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    table = typing.get_type_hints(ClientOptions)
    for name in option_names():
        default, doc, annotation = option_default(name), option_doc(name), table[name]
        assert getattr(ClientOptions, name) == default, name
        for client in CLIENTS:
            parameter = inspect.signature(client.__init__).parameters[name]
            assert parameter.default == default, (client, name)
            assert _members(annotation) <= _members(_client_hints(client)[name]), (client, name)
            assert _squeezed(doc) in _squeezed(client.__doc__) + _squeezed(client.__init__.__doc__), (
                client,
                name,
            )
        for adapter in ADAPTERS:
            field = adapter.model_fields[name]
            assert field.get_default(call_default_factory=True) == default, (adapter, name)
            assert field.description == doc, (adapter, name)
            assert field.annotation == ADAPTER_TYPES.get(name, annotation), (adapter, name)
            assert field.frozen, (adapter, name)


def test_every_adapter_setting_is_documented_in_place() -> None:
    for adapter in ADAPTERS:
        framework = {
            name
            for base in adapter.__mro__[1:]
            if base.__module__.split(".")[0] in FRAMEWORKS
            for name in getattr(base, "model_fields", {})
        }
        for name, field in adapter.model_fields.items():
            assert field.description or name in framework, (adapter, name)


def test_the_cross_encoder_has_the_client_settings_only() -> None:
    assert issubclass(Qwen3VLLMCrossEncoder, BaseCrossEncoder)
    assert RESULT_SHAPING.isdisjoint(Qwen3VLLMCrossEncoder.model_fields)


def test_client_options_build_a_client_with_the_same_settings() -> None:
    settings = RerankSettings(
        base_url="http://a:1,http://b:2",
        api_key=SecretStr("sk-x"),
        retry=RetryPolicy(max_attempts=2),
        image_fetcher=UrlFetcher(timeout=3.0),
        top_n=2,
    )
    options = settings.client_options()
    assert set(options) == set(option_names())
    assert options["api_key"] == "sk-x"
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


# -- what one adapter call returns ---------------------------------------------------------------


def _result(index: int, score: float) -> RerankResult:
    return RerankResult(index, score, f"doc {index}")


def test_scored_then_unusable_last_cut_to_top_n_and_the_threshold_only_on_scores() -> None:
    outcome = Reranked(
        scored=[_result(3, 0.9), _result(0, 0.5), _result(2, 0.1)],
        unusable={4: "UnusableDocuments: b", 1: "UnusableDocuments: a"},
    )
    every = items_to_return(outcome, RerankSettings(top_n=None, score_threshold=0.3))
    assert [(i.index, i.score, i.status) for i in every] == [
        (3, 0.9, "scored"),
        (0, 0.5, "scored"),
        (1, None, "unusable"),
        (4, None, "unusable"),
    ]
    assert every[2].metadata == {RERANK_ERROR_KEY: "UnusableDocuments: a"}
    assert [i.index for i in items_to_return(outcome, RerankSettings(top_n=3))] == [3, 0, 2]


def test_a_failed_call_passes_its_documents_through_in_retrieval_order_before_the_unusable() -> None:
    outcome = Reranked(passed_through=[0, 2, 3], failure="RerankConnectionError: down", unusable={1: "x"})
    returned = items_to_return(outcome, RerankSettings(top_n=None, score_threshold=0.99))
    assert [(i.index, i.status) for i in returned] == [
        (0, "passed_through"),
        (2, "passed_through"),
        (3, "passed_through"),
        (1, "unusable"),
    ]
    assert returned[0].metadata == {RERANK_ERROR_KEY: "RerankConnectionError: down"}


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=12),
    flagged=st.sets(st.integers(min_value=0, max_value=11)),
    reported=st.sets(st.integers(min_value=0, max_value=11)),
    connection_fails=st.booleans(),
)
def test_passthrough_returns_every_document_once_after_at_most_one_send(
    count: int, flagged: set[int], reported: set[int], connection_fails: bool
) -> None:
    """With passthrough, each document comes back exactly once, unusable ones last, after one send
    at most: the client names the unusable documents in the same call that scores the others."""
    flagged = {i for i in flagged if i < count}  # found by the adapter
    documents: list[str | Unusable] = [Unusable("bad") if i in flagged else f"doc {i}" for i in range(count)]
    call = _RerankCall(documents, "passthrough", LOGGER)
    assert call.lenient
    sent = call.to_send
    assert not any(isinstance(d, Unusable) for d in sent), "never sent"
    assert len(sent) == count - len(flagged)
    if sent and connection_fails:
        call.failed(RerankConnectionError("http://127.0.0.1:9"))
    elif sent:  # the client names unusable documents among those sent and scores the others
        named = {i for i in reported if i < len(sent)}
        results = [_result(i, 1 - i / 100) for i in range(len(sent)) if i not in named]
        call.scored(results, dict.fromkeys(named, "cannot be read"))
    assert call.to_send == [], "one client call"
    returned = items_to_return(call.outcome(), RerankSettings(top_n=None))
    assert sorted(i.index for i in returned) == list(range(count))
    statuses = [i.status for i in returned]
    assert statuses == sorted(statuses, key=["scored", "passed_through", "unusable"].index)
    assert {i.index for i in returned if i.status == "unusable"} >= flagged
    for item in returned:
        assert (item.score is None) == (item.status != "scored")
        assert (RERANK_ERROR_KEY in item.metadata) == (item.status != "scored")


def test_raise_mode_raises_the_documents_found_unusable_before_any_send() -> None:
    with pytest.raises(UnusableDocuments) as raised:
        rerank(RerankSettings(), "query", ["fine", Unusable("its image is not valid base64"), "fine"], LOGGER)
    assert raised.value.reasons == {1: "its image is not valid base64"}


# -- the Haystack ranker: a Haystack component (its own metaclass), so keyword arguments, not fields ---


def test_the_haystack_rankers_keywords_are_the_client_options_with_the_tables_defaults_docs_and_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from haystack.utils import Secret

    from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker

    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    parameters = inspect.signature(Qwen3VLLMRanker.__init__).parameters
    haystack_own = {
        "top_k",
        "score_threshold",
        "on_error",
        "meta_fields_to_embed",
        "meta_data_separator",
        "file_path_meta_field",
        "root_path",
    }
    assert set(parameters) - {"self"} == set(option_names()) | INJECTED | haystack_own
    hints = typing.get_type_hints(Qwen3VLLMRanker.__init__)
    table = typing.get_type_hints(ClientOptions)
    doc = _squeezed(Qwen3VLLMRanker.__doc__)
    for name in set(option_names()) - {"api_key"}:
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameters[name].default == option_default(name), name
        assert hints[name] == table[name], name
        assert _squeezed(option_doc(name)) in doc, name
    # The key is a Haystack Secret read from $VLLM_API_KEY (Haystack's vLLM convention); unset, the
    # core client reads its own variable.
    assert parameters["api_key"].default == Secret.from_env_var("VLLM_API_KEY", strict=False)
    assert hints["api_key"] == Secret | None
    for name in haystack_own | INJECTED | {"api_key"}:
        assert f"{name}:" in (Qwen3VLLMRanker.__doc__ or ""), name
    # The result shaping and on_error behave as the shared settings say.
    ranker = Qwen3VLLMRanker(on_error="passthrough", top_k=2, score_threshold=0.5)
    assert ranker.settings.on_error == "passthrough"
    assert (ranker.top_k, ranker.score_threshold) == (2, 0.5)
    assert {name: getattr(ranker.settings, name) for name in set(option_names()) - {"api_key"}} == {
        name: option_default(name) for name in set(option_names()) - {"api_key"}
    }
