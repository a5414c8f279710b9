"""Result types returned to users."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..images import Content, Image

__all__ = ["RerankResult", "UsableRanking"]


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One document's relevance to a query.

    ``index`` is the document's position in the list passed to ``rerank``; ``score`` is
    p(yes) from Qwen3-Reranker, in [0, 1]; ``document`` is the document as passed (text,
    :class:`~qwen3_vllm_rerank.Image` or :class:`~qwen3_vllm_rerank.Content`). When the
    document did not fit the server's context, ``truncated`` says its head alone was
    scored (policy ``"truncate"``), or ``window`` names the best-scoring window (policy
    ``"chunk"``, counting from 0).
    """

    index: int
    score: float
    document: str | Image | Content
    truncated: bool = False
    window: int | None = None


@dataclass(frozen=True, slots=True)
class UsableRanking:
    """A ranking of the usable documents of a call (``results``, best first) and why each other
    document could not be scored (``unusable``: index -> reason, safe to show): what the
    adapters' ``on_error="passthrough"`` gets in one client call."""

    results: list[RerankResult]
    unusable: dict[int, str] = field(default_factory=dict)
