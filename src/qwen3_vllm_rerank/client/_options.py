"""Every keyword option the clients and the adapters share, declared once: name, type, default, doc.

:class:`ClientOptions` is the table. The clients' signatures read their defaults from its
class attributes (``batch_size: int = ClientOptions.batch_size``) and their class
docstrings list its docs (:func:`options_doc`); the adapters' pydantic fields read default
and description from it (:func:`option_default`, :func:`option_doc`). A new option is one
entry here, and a test proves both sides carry the same names, defaults and docs.

Options only one side has stay out: ``http_client`` (the clients; the adapters have one per
path), ``top_n`` / ``score_threshold`` / ``on_error`` (the adapters).

Types are the serialisable form both sides accept (the adapters are pydantic models that
must dump and load). The clients accept three live objects more, documented here: an
``httpx.Timeout`` for ``timeout``, a loaded ``tokenizers.Tokenizer`` for ``tokenizer`` and a
``PreparedImageCache`` for ``image_cache``.
"""

# ruff: noqa: RUF009 - option() is dataclasses.field(default=..., metadata=...), evaluated once

from __future__ import annotations

import dataclasses
import inspect
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..images import IMAGE_CACHE_BYTES, UrlFetcher
from ._budget import LongDocuments
from ._discovery import FamilyOption, Template
from ._retry import RetryPolicy

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "ClientOptions",
    "option",
    "option_default",
    "option_doc",
    "option_names",
    "options_doc",
]

T = TypeVar("T")

BASE_URL_ENV = "QWEN3_VLLM_RERANK_BASE_URL"
API_KEY_ENV = "QWEN3_VLLM_RERANK_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
#: Seconds for the server to answer one request. Generous: a CPU server can take a minute
#: for a batch of long documents, and a request that times out is not sent again.
DEFAULT_TIMEOUT = 300.0
#: Seconds to establish a connection; an endpoint that does not answer is unreachable.
CONNECT_TIMEOUT = 10.0


def option(default: T, doc: str) -> T:
    """One option's declaration: its default and its documentation (one paragraph, plain text)."""
    result: T = field(default=default, metadata={"doc": doc})
    return result


@dataclass(frozen=True, kw_only=True)  # not slots: the class attributes must stay the defaults
class ClientOptions:
    """The options of :class:`~qwen3_vllm_rerank.RerankClient`, :class:`~qwen3_vllm_rerank.AsyncRerankClient`
    and both adapters (see the module docstring). Read as a table; never instantiated by the library."""

    base_url: str | Sequence[str] | None = option(
        None,
        f"The vLLM server, e.g. {DEFAULT_BASE_URL}, or several replicas (a list, or one comma-separated "
        "string) that requests are spread over and retried on: text documents round-robin, image "
        "documents each to one replica chosen by its pages' hash (rendezvous hashing), so that a page "
        "that comes back finds its encoder output cached there, and to the next replica while that "
        "one is cooling down; "
        f"${BASE_URL_ENV} when not given, else {DEFAULT_BASE_URL}. No user:password@ together "
        "with api_key (httpx would send Basic auth instead of the key): use one of them.",
    )
    model: str | None = option(
        None, "The served model name; discovered from the server's /v1/models when not given."
    )
    model_family: FamilyOption = option(
        "auto",
        "'auto' reads from the server whether it serves Qwen3-Reranker ('text') or Qwen3-VL-Reranker "
        "('vl'), whose prompts differ; naming one raises FamilyMismatchError when the server serves "
        "the other.",
    )
    instruction: str | None = option(
        None, "The task instruction in the prompt; the model family's default when not given."
    )
    api_key: str | None = option(
        None,
        f"Sent as 'Authorization: Bearer'; ${API_KEY_ENV} when not given. With a key, only the /v1/... "
        "endpoints (the ones vLLM's --api-key guards) are used. Never shown in a repr or serialised.",
    )
    timeout: float = option(
        DEFAULT_TIMEOUT,
        "Seconds one attempt of one request may take in all: connecting (at most "
        f"{CONNECT_TIMEOUT:g} s of it), sending, and every read of the answer, however slowly it "
        "trickles. The clients also take an httpx.Timeout: its read value is then that overall bound "
        "and its connect, write and pool values bound those steps. Waiting for a free pooled "
        "connection is bounded apart, by the same number. The bound holds on the connections the "
        "client opens itself; an http_client you pass keeps httpx's per-step timeouts. A request that "
        "timed out is not sent again: the server is probably still computing it.",
    )
    batch_size: int = option(128, "Documents per request; a larger call is split into several requests.")
    max_concurrency: int = option(
        8, "Most requests in flight at once per client (async), and connections kept per endpoint."
    )
    max_length: int | None = option(
        None,
        "Most prompt tokens per pair (template + query + document), below the server's max_model_len; "
        "the server's limit alone when not given.",
    )
    long_documents: LongDocuments = option(
        "truncate",
        "A document too long for the budget: 'truncate' scores its head (result truncated=True), "
        "'chunk' scores every window and keeps the best (result window=its index, from 0), 'error' "
        "raises InvalidInput. The prompt template and the query are never cut.",
    )
    tokenizer: str | Path | None = option(
        None,
        "Where tokens are counted when a document may not fit: a checkpoint directory, a tokenizer.json "
        "path, a hub id, or 'server' (vLLM's /tokenize, never used with an API key: it is outside "
        "--api-key's guard); the clients also take a loaded tokenizers.Tokenizer. By default the served "
        "model's directory when it is local, else the server. Loaded on first need only. Its added "
        "tokens are neutralised in user text on top of Qwen3's own, never instead of them.",
    )
    template: Template = option(
        "auto",
        "Who applies the prompt template: 'auto' detects a server started with --chat-template and "
        "formats on exactly one side; 'client' / 'server' insist and raise TemplateMismatchError if the "
        "server disagrees.",
    )
    retry: RetryPolicy = option(
        RetryPolicy(),
        "A RetryPolicy for requests that did not reach the model (connection errors, HTTP "
        "429/500/502/503): tries, deadline, backoff, and the cool-down of a failed replica.",
    )
    cache_size: int = option(
        0,
        "Entries of an LRU cache of scores keyed by (model, instruction, query, document); 0 turns it "
        "off. Each client keeps its own.",
    )
    image_cache: int = option(
        IMAGE_CACHE_BYTES,
        "Bytes of prepared images (their PNG data: URLs) kept so that pages that come back are not "
        "decoded, resized or encoded again; keyed by the SHA-256 of the source bytes (file contents, "
        "fetched bodies, PIL pixels) and the preparation settings, least recently used first out. The "
        "default (256 MiB) is one process-wide cache shared by every client left at it (sync, async, "
        "both adapters); another number gives this client its own; 0 turns it off. The clients also "
        "take a PreparedImageCache, used as given. URLs are still fetched and files still read on "
        "every call.",
    )
    image_fetcher: UrlFetcher | None = option(
        None,
        "The opt-in to http(s):// image URLs in queries and documents: a UrlFetcher (timeout, size cap) "
        "with which the client fetches them, once the server is known to score images. Without one such "
        "a URL raises InvalidInput; the server is never asked to fetch anything (retrieved content is "
        "attacker-controlled, and a server fetching its URLs is an SSRF hole).",
    )


def _fields() -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(ClientOptions)}


def option_names() -> tuple[str, ...]:
    """The shared options' names, in declaration order."""
    return tuple(_fields())


def option_doc(name: str) -> str:
    """The documentation of option ``name`` (a ``KeyError`` for a name that is not one)."""
    doc: str = _fields()[name].metadata["doc"]
    return doc


def option_default(name: str) -> Any:
    """The default of option ``name``."""
    return _fields()[name].default


def options_doc(summary: str, *, extra: Mapping[str, str] | None = None) -> str:
    """A class docstring: ``summary``, then an ``Args:`` section with every shared option's doc and
    the ``extra`` ones (name -> doc) after them."""
    docs = {name: option_doc(name) for name in option_names()} | dict(extra or {})
    lines = [inspect.cleandoc(summary), "", "Args:"]
    for name, doc in docs.items():
        lines += textwrap.wrap(
            f"{name}: {doc}",
            width=96,
            initial_indent=" " * 4,
            subsequent_indent=" " * 8,
            break_on_hyphens=False,  # keep --chat-template and its kin whole
        )
    return "\n".join(lines) + "\n"
