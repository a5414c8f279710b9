"""Fit every pair into the server's context without ever cutting the template.

vLLM's own ``truncate_prompt_tokens`` keeps the *first* tokens of a pooling prompt,
so it cuts the assistant suffix and returns a wrong score with HTTP 200; an over-long
pair without it fails the whole request with 400. Here the client measures each
pair and shortens only the document body, so system prompt, instruction, query and
suffix always survive. Policies for a document that does not fit:

* ``"truncate"``: keep the longest head of the document that fits;
* ``"chunk"``: split it into windows that each fit; each is scored, the best counts;
* ``"error"``: raise :class:`~qwen3_vllm_rerank.errors.InvalidInput`.
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

__all__ = ["LongDocuments", "PreparedDocument", "fit_documents"]

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
) -> Flow[list[PreparedDocument]]:
    """Decide what to send for each document so every pair fits in ``max_tokens``.

    ``format_document`` is the prompt family's document template; ``fixed_tokens[i]``
    counts the tokens of pair ``i`` that are not text (images, on both sides), which
    cannot be cut. ``tokens`` is called only when some document may not fit (loading a
    tokenizer costs half a second; most calls never need one).
    """
    prepared = [PreparedDocument([d]) for d in documents]
    if max_tokens is None:
        return prepared
    fixed = list(fixed_tokens) if fixed_tokens is not None else [0] * len(documents)
    suspects = [
        i
        for i, d in enumerate(documents)
        if not _surely_fits(text_1 + format_document(d), max_tokens - fixed[i])
    ]
    if not suspects:
        return prepared
    source = tokens()
    if source is None:
        raise InvalidInput(
            f"{len(suspects)} document(s) may exceed the server's {max_tokens}-token context and no "
            "tokenizer is available to measure them: pass tokenizer= (the checkpoint directory or hub id)"
        )
    text_head, empty = yield from source.count([text_1, format_document("")])
    lengths = yield from source.count([format_document(documents[i]) for i in suspects])
    for i, length in zip(suspects, lengths, strict=True):
        head = text_head + fixed[i]
        if head + length <= max_tokens:
            continue
        room = max_tokens - head - empty
        if room < 1:
            raise InvalidInput(
                f"the query and instruction take {head} tokens (images included, for documents[{i}]) and "
                f"the template {empty} more, which leaves no room for a document in the server's "
                f"{max_tokens}-token context; shorten the query or use smaller images"
            )
        if policy == "error":
            raise InvalidInput(
                f"documents[{i}] needs {head + length} tokens with the query and template, over the "
                f"server's {max_tokens}; shorten it, or use long_documents='truncate' or 'chunk'"
            )
        pieces = yield from _fit_pieces(
            source, documents[i], room, head, max_tokens, policy == "chunk", format_document
        )
        prepared[i] = PreparedDocument(pieces, truncated=policy == "truncate")
    return prepared


def _fit_pieces(
    tokens: TokenSource,
    document: str,
    room: int,
    head: int,
    max_tokens: int,
    chunk: bool,
    format_document: Callable[[str], str],
) -> Flow[list[str]]:
    """Windows (or, to truncate, only the head) of ``document`` that each fit, verified by counting."""
    size = max(1, room - _SEAM_SLACK)
    for _ in range(_MAX_REFITS):
        if chunk:
            pieces = yield from tokens.windows(document, size)
        else:
            pieces = [(yield from tokens.head(document, size))]
        lengths = yield from tokens.count([format_document(p) for p in pieces])
        excess = max(head + n for n in lengths) - max_tokens
        if excess <= 0:
            return pieces
        size = max(1, size - 2 * excess)
    raise InvalidInput(
        f"could not cut a document to fit the server's {max_tokens}-token context after "
        f"{_MAX_REFITS} tries; use long_documents='error' and shorten it yourself"
    )
