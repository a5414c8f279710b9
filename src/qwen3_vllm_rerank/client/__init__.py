"""The scoring client: :class:`RerankClient` and :class:`AsyncRerankClient` over vLLM's score API.

A call validates its inputs, learns the server (family, template, token budget) once, applies
the family's prompt with user text neutralised, fits documents to the token budget, and sends
batches to ``/v1/score`` with retries; scores come back mapped by index.
"""

from ._budget import LongDocuments
from ._clients import API_KEY_ENV, BASE_URL_ENV, DEFAULT_TIMEOUT, AsyncRerankClient, RerankClient
from ._discovery import FamilyOption, Template
from ._options import DEFAULT_BASE_URL
from ._results import RerankResult, UsableRanking
from ._retry import RetryPolicy
from ._score_cache import CacheInfo

__all__ = [
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
]
