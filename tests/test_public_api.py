"""The public API is what users import; changing it must be a decision, not an accident.

Each product's ``__init__`` is its public face: its ``__all__`` is pinned here, and every name in
it is re-exported from the product's own modules (nothing is defined in an ``__init__``).
"""

from __future__ import annotations

import importlib
import inspect

import pytest

import qwen3_vllm_rerank
from qwen3_vllm_rerank import errors

EXPECTED = {
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_INSTRUCTION",
    "AsyncRerankClient",
    "CacheInfo",
    "Content",
    "ConversionError",
    "FamilyMismatchError",
    "Image",
    "InvalidInput",
    "MalformedResponseError",
    "Qwen3RerankError",
    "RerankClient",
    "RerankConnectionError",
    "RerankHTTPError",
    "RerankResult",
    "RerankTimeoutError",
    "RetryPolicy",
    "ServerStartError",
    "TemplateMismatchError",
    "UnusableDocuments",
    "UrlFetcher",
    "VLLMServer",
    "VerificationResult",
    "convert_checkpoint",
    "format_pair",
    "verify_conversion",
}

#: product -> the names its __init__ exports.
PRODUCTS = {
    "qwen3_vllm_rerank.client": {
        "API_KEY_ENV",
        "BASE_URL_ENV",
        "DEFAULT_BASE_URL",
        "DEFAULT_TIMEOUT",
        "AsyncRerankClient",
        "CacheInfo",
        "FamilyOption",
        "LongDocuments",
        "RerankClient",
        "RerankResult",
        "RetryPolicy",
        "Template",
        "UsableRanking",
    },
    "qwen3_vllm_rerank.images": {
        "IMAGE_CACHE_BYTES",
        "Content",
        "Image",
        "ImageCacheInfo",
        "ImageSource",
        "PreparedImage",
        "PreparedImageCache",
        "UrlFetcher",
        "aprepare_image",
        "prepare_image",
        "shared_image_cache",
    },
    "qwen3_vllm_rerank.serve": {
        "SERVER_PYTHON_ENV",
        "VLLM_API_KEY_ENV",
        "CpuInfo",
        "LaunchPlan",
        "VLLMServer",
        "plan_launch",
        "read_checkpoint_config",
        "read_cpu_info",
    },
    "qwen3_vllm_rerank.convert": {"VerificationResult", "convert_checkpoint", "verify_conversion"},
    "qwen3_vllm_rerank.batch": {"ERROR", "KEY", "SCORE", "rerank_dataset"},
    "qwen3_vllm_rerank.testing": {
        "QWEN3_0_6B_SHAPE",
        "QWEN3_VL_2B_SHAPE",
        "QWEN3_VL_CHAT_TEMPLATE",
        "TINY_SHAPE",
        "TINY_VL_SHAPE",
        "FixtureShape",
        "VLFixtureShape",
        "local_reranker",
        "make_fixture_checkpoint",
        "make_vl_fixture_checkpoint",
        "write_qwen3_tokenizer",
    },
}


def test_all_is_pinned() -> None:
    assert set(qwen3_vllm_rerank.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(qwen3_vllm_rerank, name)


@pytest.mark.parametrize("product", sorted(PRODUCTS))
def test_each_product_all_is_pinned(product: str) -> None:
    module = importlib.import_module(product)
    assert set(module.__all__) <= set(dir(module))
    assert PRODUCTS[product] <= set(module.__all__), f"{product} lost public names"
    extra = set(module.__all__) - PRODUCTS[product]
    assert not extra, f"{product} exports new names {sorted(extra)}: add them here if that is a decision"


def test_top_level_names_come_from_the_products() -> None:
    """One place a public name comes from: the top level re-exports the products' own objects."""
    for product in PRODUCTS:
        module = importlib.import_module(product)
        for name in set(module.__all__) & EXPECTED:
            assert getattr(qwen3_vllm_rerank, name) is getattr(module, name)


def test_every_error_shares_one_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.Qwen3RerankError)
    assert issubclass(errors.InvalidInput, ValueError)
    assert issubclass(errors.UnusableDocuments, errors.InvalidInput)
    assert issubclass(errors.RerankTimeoutError, TimeoutError)
    assert issubclass(errors.RerankConnectionError, ConnectionError)


#: The contract the adapter distributions build on (``qwen3_vllm_rerank.adapters``): the only names of
#: the core they use besides the package's, the client's and images' faces (tests/test_layers.py).
ADAPTER_CONTRACT = {
    "RERANK_ERROR_KEY",
    "TRUNCATED_KEY",
    "WINDOW_KEY",
    "AdapterInput",
    "ClientOptions",
    "ClientSettings",
    "OnError",
    "RerankSettings",
    "Reranked",
    "ReturnedItem",
    "Unusable",
    "arerank",
    "async_client_of",
    "awarm_up",
    "client_of",
    "items_to_return",
    "option_names",
    "options_doc",
    "rerank",
    "warm_up",
}


def test_the_adapter_contract_is_pinned_and_documented() -> None:
    from qwen3_vllm_rerank import adapters

    assert set(adapters.__all__) == ADAPTER_CONTRACT
    for name in adapters.__all__:
        value = getattr(adapters, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert value.__doc__, f"adapters.{name} has no docstring"
    # No underscore method is part of it: the adapters call functions and public methods only.
    for model in (adapters.ClientSettings, adapters.RerankSettings):
        assert not {"_rerank", "_arerank", "_get_client", "_get_async_client"} & set(dir(model))


#: Each adapter distribution's package -> the names it exports (its classes; nothing else).
ADAPTER_PACKAGES = {
    "langchain_qwen3_vllm_rerank": {"Qwen3VLLMCrossEncoder", "Qwen3VLLMReranker"},
    "llama_index.postprocessor.qwen3_vllm_rerank": {"Qwen3VLLMReranker"},
    "haystack_integrations.components.rankers.qwen3_vllm_rerank": {"Qwen3VLLMRanker"},
}


@pytest.mark.parametrize("package", sorted(ADAPTER_PACKAGES))
def test_each_adapter_package_all_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == ADAPTER_PACKAGES[package]
    for name in module.__all__:
        assert getattr(module, name).__module__.startswith(f"{package}."), "defined in its own module"
