"""Rerank with Qwen3-Reranker served by vLLM, with the exact prompt template applied.

>>> from qwen3_vllm_rerank import RerankClient
>>> with RerankClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
...     results = client.rerank("what is a closure?", ["...", "..."], top_n=3)
"""

from .client import AsyncRerankClient, RerankClient
from .errors import (
    InvalidInput,
    MalformedResponseError,
    Qwen3RerankError,
    RerankConnectionError,
    RerankHTTPError,
    RerankTimeoutError,
    ServerStartError,
)
from .prompt import DEFAULT_INSTRUCTION, format_pair
from .server import VLLMServer
from .types import RerankResult

__all__ = [
    "DEFAULT_INSTRUCTION",
    "AsyncRerankClient",
    "InvalidInput",
    "MalformedResponseError",
    "Qwen3RerankError",
    "RerankClient",
    "RerankConnectionError",
    "RerankHTTPError",
    "RerankResult",
    "RerankTimeoutError",
    "ServerStartError",
    "VLLMServer",
    "format_pair",
]

__version__ = "0.1.0"
