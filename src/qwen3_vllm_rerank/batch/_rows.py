"""Scoring one batch of rows, by query: the rows of each query go to a scorer together, each row gets a
score or the reason it has none, and a row that is not text fails alone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._columns import text_or_reason

__all__ = ["Outcome", "by_query", "documents_of", "text_rows"]

#: A row's result: ``(score, None)`` or ``(None, why it was not scored)``.
Outcome = tuple[float | None, str | None]


def text_rows(
    queries: Sequence[Any], documents: Sequence[Any], *, query_column: str, document_column: str
) -> tuple[list[tuple[str, str] | None], list[Outcome]]:
    """The ``(query, document)`` text of each row, or ``None`` where a cell is not text; and the outcome
    so far of each row (its reason when it is not text)."""
    pairs: list[tuple[str, str] | None] = []
    outcomes: list[Outcome] = []
    for query, document in zip(queries, documents, strict=True):
        query_text, query_reason = text_or_reason(query, query_column)
        document_text, document_reason = text_or_reason(document, document_column)
        reason = query_reason or document_reason
        if query_text is None or document_text is None:
            pairs.append(None)
            outcomes.append((None, reason))
        else:
            pairs.append((query_text, document_text))
            outcomes.append((None, None))
    return pairs, outcomes


def by_query(pairs: Iterable[tuple[str, str] | None]) -> dict[str, list[int]]:
    """Row positions grouped by query text, in order (rows that are not text left out)."""
    groups: dict[str, list[int]] = {}
    for position, pair in enumerate(pairs):
        if pair is not None:
            groups.setdefault(pair[0], []).append(position)
    return groups


def documents_of(pairs: Sequence[tuple[str, str] | None], positions: Iterable[int]) -> list[str]:
    """The document texts at ``positions``."""
    chosen: list[str] = []
    for position in positions:
        pair = pairs[position]
        if pair is not None:
            chosen.append(pair[1])
    return chosen
