"""One scoring call, as a flow: cache, neutralisation, token budget, batches, windows.

Input is already validated (``_inputs.py``) and the server already known
(:class:`~qwen3_vllm_rerank.client._discovery.ServerProfile`); the result holds one
:class:`Scored` per document, in input order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .. import _protocol as proto
from ..errors import InvalidInput
from ..prompt import PROMPT_FAMILIES, raw_param
from ._budget import LongDocuments, PreparedDocument, fit_documents
from ._cache import ScoreCache
from ._discovery import ServerProfile
from ._flow import Flow
from ._inputs import Item, ScoreRequest

__all__ = ["Scored", "ScoringOptions", "max_tokens", "refuse_images", "score_flow"]

logger = logging.getLogger("qwen3_vllm_rerank")


@dataclass(frozen=True, slots=True)
class Scored:
    """A document's score; ``truncated`` / ``window`` say what was scored when it did not fit."""

    score: float
    truncated: bool = False
    window: int | None = None


@dataclass(frozen=True, slots=True)
class ScoringOptions:
    """The client options a scoring call depends on."""

    batch_size: int
    max_length: int | None
    long_documents: LongDocuments


def max_tokens(profile: ServerProfile | None, max_length: int | None) -> int | None:
    """The prompt budget: the server's ``max_model_len``, capped by ``max_length``."""
    limits = [n for n in (profile.max_model_len if profile else None, max_length) if n is not None]
    return min(limits) if limits else None


def score_flow(
    profile: ServerProfile,
    query: Item,
    documents: Sequence[Item],
    instruction: str,
    options: ScoringOptions,
    cache: ScoreCache[Scored] | None,
) -> Flow[list[Scored]]:
    """Scores for ``documents`` in input order, from the cache where it has them (images
    already refused by :func:`refuse_images` when the server scores text only)."""
    keys = [(profile.model, instruction, query.key, d.key) for d in documents]
    known: dict[int, Scored] = {}
    if cache is not None:
        known = {i: hit for i, key in enumerate(keys) if (hit := cache.get(key)) is not None}
    missing = [i for i in range(len(documents)) if i not in known]
    if missing:
        clean = profile.neutralise
        todo = [Item(clean(documents[i].text), documents[i].images) for i in missing]
        fresh = yield from _score_missing(
            profile, Item(clean(query.text), query.images), clean(instruction), todo, options
        )
        for i, result in zip(missing, fresh, strict=True):
            known[i] = result
            if cache is not None:
                cache.put(keys[i], result)
    # Indexed, not filtered: a missing score is a KeyError, never a shifted list.
    return [known[i] for i in range(len(documents))]


def refuse_images(profile: ServerProfile, request: ScoreRequest) -> None:
    """Raise :class:`InvalidInput` when a text-only server is asked to score images.

    Called with the server known and before any image is fetched or decoded: a URL in a
    document for a text server is never requested, a file never read."""
    if profile.family != "text":
        return
    labelled = request.image_labels()
    if labelled:
        raise InvalidInput(
            f"{labelled[0][0]} has images, but {profile.model!r} is a text-only Qwen3-Reranker: score "
            "images with a Qwen3-VL-Reranker server (qwen3-vllm-rerank serve Qwen/Qwen3-VL-Reranker-2B)"
        )


def _score_missing(
    profile: ServerProfile, query: Item, instruction: str, documents: list[Item], options: ScoringOptions
) -> Flow[list[Scored]]:
    family = PROMPT_FAMILIES[profile.family]
    prepared = yield from fit_documents(
        family.query_text(query.text, instruction),
        [d.text for d in documents],
        max_tokens=max_tokens(profile, options.max_length),
        policy=options.long_documents,
        tokens=profile.tokens.get,
        format_document=family.document_text,
        fixed_tokens=[query.image_tokens + d.image_tokens for d in documents],
    )
    pieces = [(doc, piece) for doc, p in zip(documents, prepared, strict=True) for piece in p.pieces]
    if profile.server_templates:
        batches = proto.plan_batches(
            raw_param(query.text, query.urls),
            [raw_param(piece, doc.urls) for doc, piece in pieces],
            options.batch_size,
            raw=True,
            instruction=instruction,
        )
    else:
        batches = proto.plan_batches(
            family.query_param(query.text, query.urls, instruction),
            [family.document_param(piece, doc.urls) for doc, piece in pieces],
            options.batch_size,
        )
    responses = yield [proto.score_call(profile.model, batch) for batch in batches]
    flat: list[float] = []
    for batch, response in zip(batches, responses, strict=True):
        flat.extend(proto.parse_scores(response, len(batch.documents)))
    logger.debug("scored %d pieces of %d documents in %d requests", len(flat), len(documents), len(batches))
    return _best_windows(prepared, flat)


def _best_windows(prepared: list[PreparedDocument], flat: list[float]) -> list[Scored]:
    """One :class:`Scored` per document from the scores of its pieces (the best window counts)."""
    results = []
    position = 0
    for p in prepared:
        window_scores = flat[position : position + len(p.pieces)]
        position += len(p.pieces)
        best = max(range(len(window_scores)), key=window_scores.__getitem__)
        results.append(Scored(window_scores[best], p.truncated, best if len(p.pieces) > 1 else None))
    return results
