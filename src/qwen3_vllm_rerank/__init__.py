"""Rerank with Qwen3-Reranker served by vLLM, with the exact prompt template applied.

>>> from qwen3_vllm_rerank import RerankClient
>>> with RerankClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
...     results = client.rerank("what is a closure?", ["...", "..."], top_n=3)
"""

from .client._cache import CacheInfo
from .client._clients import API_KEY_ENV, BASE_URL_ENV, AsyncRerankClient, RerankClient
from .client._results import RerankResult
from .client._retry import RetryPolicy
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
)
from .images._fetching import UrlFetcher
from .images._sources import Content, Image
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
    "UrlFetcher",
    "VLLMServer",
    "VerificationResult",
    "convert_checkpoint",
    "format_pair",
    "verify_conversion",
]

__version__ = "0.1.0"
