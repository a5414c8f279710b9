"""The public API is what users import; changing it must be a decision, not an accident."""

from __future__ import annotations

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
    "UrlFetcher",
    "VLLMServer",
    "VerificationResult",
    "convert_checkpoint",
    "format_pair",
    "verify_conversion",
}


def test_all_is_pinned() -> None:
    assert set(qwen3_vllm_rerank.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(qwen3_vllm_rerank, name)


def test_every_error_shares_one_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.Qwen3RerankError)
    assert issubclass(errors.InvalidInput, ValueError)
    assert issubclass(errors.RerankTimeoutError, TimeoutError)
    assert issubclass(errors.RerankConnectionError, ConnectionError)
