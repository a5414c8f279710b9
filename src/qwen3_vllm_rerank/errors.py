"""One exception root for everything a user of this library can see fail.

Transport and HTTP failures are translated once, at the client boundary, with
``raise ... from`` so the original exception stays attached as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

__all__ = [
    "ConversionError",
    "FamilyMismatchError",
    "InvalidInput",
    "MalformedResponseError",
    "Qwen3RerankError",
    "RerankConnectionError",
    "RerankHTTPError",
    "RerankTimeoutError",
    "ServerStartError",
    "TemplateMismatchError",
    "UnusableDocuments",
]


class Qwen3RerankError(Exception):
    """Root of every error raised by qwen3-vllm-rerank."""


class RerankConnectionError(Qwen3RerankError, ConnectionError):
    """The vLLM server could not be reached."""

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = url
        message = (
            f"cannot connect to the vLLM server at {url}"
            + (f" ({detail})" if detail else "")
            + ". Is it running? Start one with `qwen3-vllm-rerank serve MODEL` or check base_url."
        )
        super().__init__(message)


class RerankTimeoutError(Qwen3RerankError, TimeoutError):
    """The vLLM server took the request but did not answer in time (not retried), or no
    pooled connection became free in time (``kind="pool"``)."""

    def __init__(self, url: str, timeout: float | None, kind: Literal["read", "pool"] = "read") -> None:
        self.url = url
        self.timeout = timeout
        self.kind = kind
        if kind == "pool":
            advice = (
                f"no connection to {url} became free within {timeout} s: more requests are waiting than "
                "max_concurrency allows; raise max_concurrency or timeout, or send fewer calls at once"
            )
        else:
            advice = (
                f"the vLLM server at {url} did not answer within {timeout} s. It is probably still "
                "computing: the request was not sent again (that would double its load). Raise `timeout`, "
                "lower `batch_size`, or give the server more capacity"
            )
        super().__init__(advice)


class RerankHTTPError(Qwen3RerankError):
    """The vLLM server answered with an error status; ``retry_after`` is the seconds its
    ``Retry-After`` header asked for (``None``: none, or not a number of seconds)."""

    def __init__(
        self, url: str, status_code: int, server_message: str, retry_after: float | None = None
    ) -> None:
        self.url = url
        self.status_code = status_code
        self.server_message = server_message
        self.retry_after = retry_after
        hint = {
            401: " (wrong or missing api_key)",
            404: " (wrong base_url, or the server does not serve this model with --runner pooling)",
        }.get(status_code, "")
        super().__init__(f"the vLLM server at {url} answered HTTP {status_code}{hint}: {server_message}")


class MalformedResponseError(Qwen3RerankError):
    """The server answered 200 with a body this client cannot use."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        super().__init__(
            f"unexpected response from {url}: {problem}. "
            "Is base_url a vLLM server serving a reranker with --runner pooling?"
        )


class InvalidInput(Qwen3RerankError, ValueError):
    """The caller passed something that cannot be scored."""


class UnusableDocuments(InvalidInput):
    """Retrieved data that cannot be scored: documents whose image cannot be read, is refused or
    cannot be fetched. Not a programmer error (a document of the wrong type is plain
    :class:`InvalidInput`): the adapters' ``on_error="passthrough"`` returns these documents
    last, unscored, with the reason, and scores the others.

    ``reasons`` maps each such document's index (in the call's documents) to what is wrong
    with it, in words that are safe to show (no fetched URL's query string, no file contents).
    """

    def __init__(self, reasons: Mapping[int, str]) -> None:
        self.reasons: dict[int, str] = dict(sorted(reasons.items()))
        listed = "; ".join(f"documents[{index}]: {reason}" for index, reason in self.reasons.items())
        super().__init__(f"{len(self.reasons)} document(s) cannot be scored: {listed}")


class TemplateMismatchError(Qwen3RerankError):
    """The server's prompt template and the client's would not give Qwen3-Reranker's prompt."""


class FamilyMismatchError(TemplateMismatchError):
    """The client was told one model family (text or VL reranker) and the server serves the other:
    the other family's prompt would give wrong scores."""


class ServerStartError(Qwen3RerankError):
    """A local vLLM server could not be started or did not become healthy."""


class ConversionError(Qwen3RerankError):
    """A checkpoint could not be converted, or the converted one did not verify."""
