"""What the LangChain and LlamaIndex adapters must do identically, free of either framework.

The adapters ship behind different extras and never import each other, so the rules
they share live here: the metadata keys they add to returned documents, the option
types they pass to the core client, and which failures ``on_error="passthrough"``
absorbs and how such a failure is reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import httpx

from .budget import LongDocuments
from .client import Template
from .errors import InvalidInput, Qwen3RerankError, RerankHTTPError
from .types import RerankResult

__all__ = [
    "RERANK_ERROR_KEY",
    "TRUNCATED_KEY",
    "WINDOW_KEY",
    "LongDocuments",
    "OnError",
    "Passthrough",
    "Template",
    "passthrough_or_raise",
    "result_metadata",
]

OnError = Literal["raise", "passthrough"]

#: Metadata keys the adapters add to a returned document (only when they apply).
TRUNCATED_KEY = "truncated"
WINDOW_KEY = "window"
RERANK_ERROR_KEY = "rerank_error"

_MARKER_CHARS = 200


def result_metadata(result: RerankResult) -> dict[str, object]:
    """``{"truncated": True}`` / ``{"window": i}`` when they apply to ``result``, else ``{}``."""
    extra: dict[str, object] = {}
    if result.truncated:
        extra[TRUNCATED_KEY] = True
    if result.window is not None:
        extra[WINDOW_KEY] = result.window
    return extra


@dataclass(frozen=True, slots=True)
class Passthrough:
    """A failed rerank call answered with the documents in retrieval order.

    ``marker`` is ``"<ExceptionClassName>: <short message>"``, stored under
    :data:`RERANK_ERROR_KEY` on every document returned.
    """

    marker: str


def passthrough_or_raise(
    error: Qwen3RerankError, on_error: OnError, *, count: int, logger: logging.Logger
) -> Passthrough:
    """Re-raise ``error`` unless ``on_error="passthrough"`` absorbs it; then log a warning.

    ``InvalidInput`` is the caller's bug and always raised. The warning names the
    error class, the endpoint (without credentials) and the HTTP status, never the
    message itself: a server's error body may quote the query or a document.
    """
    if on_error != "passthrough" or isinstance(error, InvalidInput):
        raise error
    url = getattr(error, "url", None)
    where = f" at {_redacted(url)}" if isinstance(url, str) else ""
    status = f" (HTTP {error.status_code})" if isinstance(error, RerankHTTPError) else ""
    logger.warning(
        "reranking %d documents failed with %s%s%s; returning them in retrieval order "
        "(on_error='passthrough')",
        count,
        type(error).__name__,
        where,
        status,
    )
    return Passthrough(f"{type(error).__name__}: {_short_message(error, url)}")


def _short_message(error: Qwen3RerankError, url: object) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(url, str):
        text = text.replace(url, _redacted(url))
    return text if len(text) <= _MARKER_CHARS else text[: _MARKER_CHARS - 3] + "..."


def _redacted(url: str) -> str:
    """``url`` without ``user:password@``."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    return str(parsed.copy_with(userinfo=b"")) if parsed.userinfo else url
