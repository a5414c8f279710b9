"""One scoring call, as a flow: cache, neutralisation, token budget, batches, windows.

Input is already validated (``_inputs.py``) and the server already known
(:class:`~qwen3_vllm_rerank.client._discovery.ServerProfile`); the result, a :class:`Scoring`,
holds one :class:`Scored` per usable document and why each other one cannot be scored.

Every check of a document's content (its images, the images per prompt the server allows, its
length against the token budget) is made before the first score batch is sent; a strict call
(``RerankClient.score`` / ``rerank``) then raises one
:class:`~qwen3_vllm_rerank.errors.UnusableDocuments` naming every such document, and a lenient
one (the adapters' ``on_error="passthrough"``) scores the others in the same call: no batch is
sent twice, no image prepared twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from .. import _protocol as proto
from ..errors import InvalidInput, RerankHTTPError
from ..prompt import PROMPT_FAMILIES, raw_param
from ._budget import LongDocuments, PreparedDocument, Unfit, fit_documents
from ._discovery import ServerProfile
from ._flow import Flow
from ._inputs import Item, Prepared, ScoreRequest
from ._routing import route_groups
from ._score_cache import ScoreCache

__all__ = [
    "Scored",
    "Scoring",
    "ScoringOptions",
    "image_limit_of",
    "max_tokens",
    "refuse_images",
    "score_flow",
]

logger = logging.getLogger("qwen3_vllm_rerank")

#: How vLLM (0.32, ``multimodal/processing/context.py``) refuses a prompt with more images than
#: its ``--limit-mm-per-prompt``, before computing anything (HTTP 400).
_IMAGE_LIMIT = re.compile(r"At most (\d+) image\(s\) may be provided in one prompt")


def image_limit_of(error: RerankHTTPError) -> int | None:
    """The server's most images per prompt, when ``error`` is its refusal of a prompt with more."""
    match = _IMAGE_LIMIT.search(error.server_message) if error.status_code == 400 else None
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Scored:
    """A document's score; ``truncated`` / ``window`` say what was scored when it did not fit."""

    score: float
    truncated: bool = False
    window: int | None = None


@dataclass(frozen=True, slots=True)
class Scoring:
    """What a scoring call gave: ``scored`` by document index, and ``unusable``: index -> why
    that document could not be scored (empty for a strict call, which raises instead)."""

    scored: dict[int, Scored]
    unusable: dict[int, str]
    #: The most images one pair carried in a batch the server answered (0 when none).
    images_accepted: int = 0


@dataclass(frozen=True, slots=True)
class ScoringOptions:
    """The client options a scoring call depends on."""

    batch_size: int
    max_length: int | None
    long_documents: LongDocuments
    #: The replicas image documents are routed over (``_routing.py``); fewer than two: no routing.
    replicas: tuple[str, ...] = ()


def max_tokens(profile: ServerProfile | None, max_length: int | None) -> int | None:
    """The prompt budget: the server's ``max_model_len``, capped by ``max_length``."""
    limits = [n for n in (profile.max_model_len if profile else None, max_length) if n is not None]
    return min(limits) if limits else None


def score_flow(
    profile: ServerProfile,
    prepared: Prepared,
    instruction: str,
    options: ScoringOptions,
    cache: ScoreCache[Scored] | None,
    *,
    strict: bool,
    image_limit: int | None = None,
    images_accepted: int = 1,
) -> Flow[Scoring]:
    """Scores for the usable documents of ``prepared``, from the cache where it has them (images
    already refused by :func:`refuse_images` when the server scores text only).

    ``image_limit`` is the server's most images per prompt, when known: a document whose pair
    would carry more is unusable. ``images_accepted`` is the most the server is known to take:
    when a pair carries more, the batch with the most images per pair is sent alone first, so
    that a refusal (learnt by the client, :func:`image_limit_of`) comes before any other batch is
    sent. ``strict``: raise :class:`UnusableDocuments` naming every
    unusable document before any score batch is sent, instead of scoring the others."""
    query = prepared.query
    if image_limit is not None and len(query.images) > image_limit:
        raise InvalidInput(
            f"the query has {len(query.images)} images, over the server's limit of {image_limit} per "
            "prompt (vLLM --limit-mm-per-prompt): use fewer query images"
        )
    if image_limit is not None:
        prepared = prepared.without(
            {
                i: f"it has {len(d.images)} image(s), and with the query's {len(query.images)} that is over "
                f"the server's limit of {image_limit} per prompt (vLLM --limit-mm-per-prompt); use fewer "
                "images for it"
                for i, d in prepared.documents.items()
                if len(query.images) + len(d.images) > image_limit
            }
        )
    documents = prepared.documents
    keys = {i: (profile.model, instruction, query.key, d.key) for i, d in documents.items()}
    known: dict[int, Scored] = {}
    if cache is not None:
        known = {i: hit for i, key in keys.items() if (hit := cache.get(key)) is not None}
    missing = [i for i in documents if i not in known]
    clean = profile.neutralise
    query = Item(clean(query.text), query.images)
    todo = [Item(clean(documents[i].text), documents[i].images) for i in missing]
    fitted = yield from _fit(profile, query, clean(instruction), todo, options)
    prepared = prepared.without(
        {i: fit.reason for i, fit in zip(missing, fitted, strict=True) if isinstance(fit, Unfit)}
    )
    if strict:
        prepared.refuse_unusable()  # before any score batch is sent
    sendable: list[tuple[int, Item, PreparedDocument]] = [
        (i, d, fit)
        for i, d, fit in zip(missing, todo, fitted, strict=True)
        if isinstance(fit, PreparedDocument)
    ]
    # The most images per pair first (stable): the first batch is the one a limit would refuse.
    sendable.sort(key=lambda entry: -len(entry[1].images))
    most = max((len(query.images) + len(d.images) for _, d, _ in sendable), default=0)
    if sendable:
        fresh = yield from _score_fitted(
            profile,
            query,
            clean(instruction),
            [(d, fit) for _, d, fit in sendable],
            options,
            probe_first=most > images_accepted,
        )
        for (i, _, _), result in zip(sendable, fresh, strict=True):
            known[i] = result
            if cache is not None:
                cache.put(keys[i], result)
    # Indexed, not filtered: a missing score is a KeyError, never a shifted list.
    return Scoring({i: known[i] for i in sorted(prepared.documents)}, prepared.unusable, most)


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


def _fit(
    profile: ServerProfile, query: Item, instruction: str, documents: list[Item], options: ScoringOptions
) -> Flow[list[PreparedDocument | Unfit]]:
    family = PROMPT_FAMILIES[profile.family]
    return (
        yield from fit_documents(
            family.query_text(query.text, instruction),
            [d.text for d in documents],
            max_tokens=max_tokens(profile, options.max_length),
            policy=options.long_documents,
            tokens=profile.tokens.get,
            format_document=family.document_text,
            fixed_tokens=[d.image_tokens for d in documents],
            query_tokens=query.image_tokens,
        )
    )


def _score_fitted(
    profile: ServerProfile,
    query: Item,
    instruction: str,
    documents: list[tuple[Item, PreparedDocument]],
    options: ScoringOptions,
    *,
    probe_first: bool,
) -> Flow[list[Scored]]:
    """Scores of the fitted documents, in their order. Their pieces are grouped by replica
    (:func:`route_groups`: image documents by their pages' hash, text round-robin), each group
    batched on its own, and every score put back at its piece's position; each image part
    carries its ``uuid`` (:func:`~qwen3_vllm_rerank._protocol.with_image_uuids`)."""
    family = PROMPT_FAMILIES[profile.family]
    prepared = [fit for _, fit in documents]
    pieces = [(doc, piece) for doc, fit in documents for piece in fit.pieces]
    if profile.server_templates:
        query_param = raw_param(query.text, query.urls)
        params = [raw_param(piece, doc.urls) for doc, piece in pieces]
    else:
        query_param = family.query_param(query.text, query.urls, instruction)
        params = [family.document_param(piece, doc.urls) for doc, piece in pieces]
    query_param = proto.with_image_uuids(query_param, query.uuids)
    params = [proto.with_image_uuids(p, doc.uuids) for (doc, _), p in zip(pieces, params, strict=True)]
    planned: list[tuple[tuple[int, ...], proto.ScoreBatch]] = []
    for group in route_groups([doc.route_key for doc, _ in pieces], options.replicas):
        for batch in proto.plan_batches(
            query_param,
            [params[k] for k in group.members],
            options.batch_size,
            raw=profile.server_templates,
            instruction=instruction if profile.server_templates else None,
            route=group.route,
        ):
            planned.append((group.members[batch.start : batch.start + len(batch.documents)], batch))
    calls = [proto.score_call(profile.model, batch) for _, batch in planned]
    if probe_first and len(calls) > 1:
        responses = (yield calls[:1]) + (yield calls[1:])
    else:
        responses = yield calls
    flat: dict[int, float] = {}
    for (positions, batch), response in zip(planned, responses, strict=True):
        flat.update(zip(positions, proto.parse_scores(response, len(batch.documents)), strict=True))
    logger.debug("scored %d pieces of %d documents in %d requests", len(flat), len(documents), len(planned))
    # Indexed, not filtered: a missing score is a KeyError, never a shifted list.
    return _best_windows(prepared, [flat[k] for k in range(len(pieces))])


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
