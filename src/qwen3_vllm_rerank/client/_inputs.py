"""What callers pass to ``score`` / ``rerank``: validated once per call, images prepared.

A query or document is text (``str``), an :class:`~qwen3_vllm_rerank.images.Image` (or a
bare path-like, bytes or PIL image), or :class:`~qwen3_vllm_rerank.images.Content` (text
and images). :func:`score_request` refuses what cannot be scored with
:class:`InvalidInput` before any request; :func:`prepare` / :func:`aprepare` then turn
every image into the official reranker's pixels (decoding, hostile-input checks), still
before any request, and give :class:`Item` s: text plus prepared images.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInput
from ..images._fetching import UrlFetcher
from ..images._preparing import PreparedImage, aprepare_image, prepare_image
from ..images._sources import Content, Image

__all__ = ["Item", "ScoreRequest", "aprepare", "positive_int", "prepare", "score_request"]

#: What a query or document may be (see the module docstring).
Input = str | Image | Content


@dataclass(frozen=True, slots=True)
class Item:
    """A query or document as scored: its text and its prepared images, in order."""

    text: str
    images: tuple[PreparedImage, ...] = ()

    @property
    def key(self) -> str | tuple[str, tuple[str, ...]]:
        """What identifies it in the score cache (images by their prepared pixels)."""
        return self.text if not self.images else (self.text, tuple(i.sha256 for i in self.images))

    @property
    def image_tokens(self) -> int:
        """Prompt tokens its images take (each image's tokens plus its two markers)."""
        return sum(i.prompt_tokens for i in self.images)

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.images]


@dataclass(frozen=True, slots=True)
class _Parts:
    text: str
    images: tuple[Image, ...]


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """A validated call: the caller's query and documents (not copied), their text and
    image parts, the instruction (``None`` = the client's) and ``top_n`` (``None`` = all)."""

    query: Input
    documents: Sequence[Input]
    instruction: str | None
    top_n: int | None
    _query: _Parts
    _documents: list[_Parts]

    @property
    def has_images(self) -> bool:
        return bool(self._query.images) or any(d.images for d in self._documents)

    def image_labels(self) -> list[tuple[str, Image]]:
        """Every image of the call with the input it belongs to, e.g. ``("documents[3]", image)``."""
        labelled = [("query", image) for image in self._query.images]
        for i, parts in enumerate(self._documents):
            labelled += [(f"documents[{i}]", image) for image in parts.images]
        return labelled

    def items(self, prepared: Sequence[PreparedImage]) -> tuple[Item, list[Item]]:
        """The query and document :class:`Item` s, given every image prepared in
        :meth:`image_labels` order."""
        remaining = iter(prepared)

        def item(parts: _Parts) -> Item:
            return Item(parts.text, tuple(next(remaining) for _ in parts.images))

        return item(self._query), [item(parts) for parts in self._documents]


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return value


def _parts(value: object, label: str) -> _Parts:
    if isinstance(value, str):
        return _Parts(value, ())
    if isinstance(value, Content):
        return _Parts(value.text, tuple(i if isinstance(i, Image) else Image(i) for i in value.images))
    if isinstance(value, Image):
        return _Parts("", (value,))
    if isinstance(value, bytes | bytearray | memoryview | os.PathLike) or type(value).__module__.startswith(
        "PIL."
    ):
        return _Parts("", (Image(value),))  # type: ignore[arg-type]
    raise InvalidInput(
        f"{label} must be a str, an Image or a Content (text and images), got {type(value).__name__}"
    )


def score_request(
    query: object, documents: object, instruction: object, top_n: object = None
) -> ScoreRequest:
    """Check a call's arguments; raise :class:`InvalidInput` naming the first bad one."""
    if top_n is not None:
        positive_int("top_n", top_n)
    if instruction is not None and not isinstance(instruction, str):
        raise InvalidInput(f"instruction must be a str, got {type(instruction).__name__}")
    query_parts = _parts(query, "query")
    if not query_parts.text.strip() and not query_parts.images:
        raise InvalidInput("query is empty: there is nothing to rank documents against")
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InvalidInput(
            f"documents must be a list of str, Image or Content, got {type(documents).__name__}"
        )
    document_parts = [_parts(doc, f"documents[{i}]") for i, doc in enumerate(documents)]
    return ScoreRequest(query, documents, instruction, top_n, query_parts, document_parts)  # type: ignore[arg-type]


def prepare(request: ScoreRequest, fetcher: UrlFetcher | None) -> tuple[Item, list[Item]]:
    """The call's items, its images prepared here (decoded, checked, resized, encoded)."""
    prepared = [prepare_image(image, label=label, fetcher=fetcher) for label, image in request.image_labels()]
    return request.items(prepared)


async def aprepare(request: ScoreRequest, fetcher: UrlFetcher | None) -> tuple[Item, list[Item]]:
    """:func:`prepare` for asyncio: URLs fetched concurrently, decoding in worker threads."""
    prepared = await asyncio.gather(
        *(aprepare_image(image, label=label, fetcher=fetcher) for label, image in request.image_labels())
    )
    return request.items(prepared)
