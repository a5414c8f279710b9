"""Result types returned to users."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RerankResult"]


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One document's relevance to a query.

    ``index`` is the document's position in the list passed to ``rerank``;
    ``score`` is p(yes) from Qwen3-Reranker, in [0, 1].
    """

    index: int
    score: float
    document: str
