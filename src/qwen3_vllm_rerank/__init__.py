"""Rerank with Qwen3-Reranker served by vLLM, with the exact prompt template applied.

>>> from qwen3_vllm_rerank import RerankClient
>>> with RerankClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
...     results = client.rerank("what is a closure?", ["...", "..."], top_n=3)
"""

from .client import (
    API_KEY_ENV,
    BASE_URL_ENV,
    AsyncRerankClient,
    CacheInfo,
    RerankClient,
    RerankResult,
    RetryPolicy,
)
from .convert import VerificationResult, convert_checkpoint, verify_conversion
from .errors import (
    ConversionError,
    FamilyMismatchError,
    InvalidInput,
    MalformedResponseError,
    Qwen3RerankError,
    RerankConnectionError,
    RerankHTTPError,
    RerankTimeoutError,
    ServerStartError,
    TemplateMismatchError,
    UnusableDocuments,
)
from .images import Content, Image, UrlFetcher
from .prompt import DEFAULT_INSTRUCTION, format_pair
from .serve import VLLMServer

__all__ = [
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
]

__version__ = "0.1.0"
