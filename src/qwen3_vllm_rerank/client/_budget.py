"""Fit every pair into the server's context without ever cutting the template.

vLLM's own ``truncate_prompt_tokens`` keeps the *first* tokens of a pooling prompt,
so it cuts the assistant suffix and returns a wrong score with HTTP 200; an over-long
pair without it fails the whole request with 400. Here the client measures each
pair and shortens only the document body, so system prompt, instruction, query and
suffix always survive. Policies for a document that does not fit:

* ``"truncate"``: keep the longest head of the document that fits;
* ``"chunk"``: split it into windows that each fit; each is scored, the best counts;
* ``"error"``: that document is not scored (:class:`Unfit`, which the client turns into
  :class:`~qwen3_vllm_rerank.errors.UnusableDocuments`).

A document's length can fail only that document: one that cannot be shown to fit (no
tokenizer to measure it with, images that leave no room, a cut that does not converge) is
:class:`Unfit`, with a reason that says what to do; only a query that leaves no room for any
document is the caller's :class:`~qwen3_vllm_rerank.errors.InvalidInput`. Without a tokenizer,
a document whose UTF-8 bytes fit is still proven to fit (a byte-level BPE token, as Qwen3's,
covers at least one byte) and scored.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import InvalidInput
from ..prompt import format_document
from ._flow import Flow
from ._tokens import TokenSource

__all__ = ["LongDocuments", "PreparedDocument", "Unfit", "fit_documents"]

LongDocuments = Literal["truncate", "chunk", "error"]
LONG_DOCUMENT_POLICIES: tuple[str, ...] = ("truncate", "chunk", "error")

# Tokens kept free when cutting: re-tokenising a cut piece after "<Document>: " can
# differ from the piece's own tokens by a couple at the seams.
_SEAM_SLACK = 4
_MAX_REFITS = 6


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    """What is actually scored for one input document.

    ``pieces`` holds the text sent for it: the document itself, its kept head
    (``truncated``), or its windows (``len(pieces) > 1``, policy ``"chunk"``).
    """

    pieces: list[str]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Unfit:
    """A document that cannot be made to fit: ``reason`` says why and what to do (safe to show:
    numbers only, never the text)."""

    reason: str


def _surely_fits(text: str, max_tokens: int) -> bool:
    """True without tokenising: a byte-level BPE token covers at least one byte."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return len(text.encode("utf-8")) <= max_tokens


def fit_documents(
    text_1: str,
    documents: Sequence[str],
    *,
    max_tokens: int | None,
    policy: LongDocuments,
    tokens: Callable[[], TokenSource | None],
    format_document: Callable[[str], str] = format_document,
    fixed_tokens: Sequence[int] | None = None,
    query_tokens: int = 0,
) -> Flow[list[PreparedDocument | Unfit]]:
    """Decide what to send for each document so every pair fits in ``max_tokens``, or why it
    cannot be scored (:class:`Unfit`; see the module docstring).

    ``format_document`` is the prompt family's document template; ``fixed_tokens[i]``
    counts the tokens of document ``i`` that are not text (its images) and ``query_tokens``
    those of the query (its images), which cannot be cut. ``tokens`` is called only when
    some document may not fit (loading a tokenizer costs half a second; most calls never
    need one). Raises :class:`InvalidInput` only when the query leaves no room for any document.
    """
    prepared: list[PreparedDocument | Unfit] = [PreparedDocument([d]) for d in documents]
    if max_tokens is None:
        return prepared
    fixed = list(fixed_tokens) if fixed_tokens is not None else [0] * len(documents)
    suspects = [
        i
        for i, d in enumerate(documents)
        if not _surely_fits(text_1 + format_document(d), max_tokens - query_tokens - fixed[i])
    ]
    if not suspects:
        return prepared
    source = tokens()
    if source is None:
        for i in suspects:
            prepared[i] = Unfit(
                f"it may exceed the server's {max_tokens}-token context (its text is "
                f"{len(documents[i].encode('utf-8', 'replace'))} bytes) and no tokenizer is available "
                "to measure it: pass tokenizer= (the checkpoint directory or hub id)"
            )
        return prepared
    text_head, empty = yield from source.count([text_1, format_document("")])
    if text_head + query_tokens + empty >= max_tokens:
        raise InvalidInput(
            f"the query and instruction take {text_head + query_tokens} tokens (images included) and "
            f"the template {empty} more, which leaves no room for a document in the server's "
            f"{max_tokens}-token context; shorten the query or use a smaller query image"
        )
    lengths = yield from source.count([format_document(documents[i]) for i in suspects])
    for i, length in zip(suspects, lengths, strict=True):
        head = text_head + query_tokens + fixed[i]
        if head + length <= max_tokens:
            continue
        room = max_tokens - head - empty
        if room < 1:
            prepared[i] = Unfit(
                f"its images take {fixed[i]} tokens and the query, instruction and template "
                f"{text_head + query_tokens + empty}, which leaves no room for its text in the server's "
                f"{max_tokens}-token context; use fewer or smaller images for it"
            )
        elif policy == "error":
            prepared[i] = Unfit(
                f"it needs {head + length} tokens with the query and template, over the server's "
                f"{max_tokens}; shorten it, or use long_documents='truncate' or 'chunk'"
            )
        else:
            prepared[i] = yield from _fit_pieces(
                source, documents[i], room, head, max_tokens, policy, format_document
            )
    return prepared


def _fit_pieces(
    tokens: TokenSource,
    document: str,
    room: int,
    head: int,
    max_tokens: int,
    policy: LongDocuments,
    format_document: Callable[[str], str],
) -> Flow[PreparedDocument | Unfit]:
    """Windows (or, to truncate, only the head) of ``document`` that each fit, verified by counting."""
    size = max(1, room - _SEAM_SLACK)
    for _ in range(_MAX_REFITS):
        if policy == "chunk":
            pieces = yield from tokens.windows(document, size)
        else:
            pieces = [(yield from tokens.head(document, size))]
        lengths = yield from tokens.count([format_document(p) for p in pieces])
        excess = max(head + n for n in lengths) - max_tokens
        if excess <= 0:
            return PreparedDocument(pieces, truncated=policy == "truncate")
        size = max(1, size - 2 * excess)
    return Unfit(
        f"it could not be cut to fit the server's {max_tokens}-token context after {_MAX_REFITS} "
        "tries; shorten it yourself"
    )
