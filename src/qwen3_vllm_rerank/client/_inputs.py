"""What callers pass to ``score`` / ``rerank``: validated once per call, images prepared.

A query or document is text (``str``), an :class:`~qwen3_vllm_rerank.images.Image` (or a
bare path-like, bytes or PIL image), or :class:`~qwen3_vllm_rerank.images.Content` (text
and images). :func:`score_request` refuses what cannot be scored with
:class:`InvalidInput` before any request; :func:`prepare` / :func:`aprepare` then turn
every image into the official reranker's pixels (decoding, hostile-input checks), still
before any request, and give :class:`Item` s: text plus prepared images.

Two kinds of failure, told apart:

* a programmer error (a query or document of the wrong type, an empty query): plain
  :class:`InvalidInput`, raised at once by :func:`score_request`;
* bad retrieved data (a document's image that cannot be read, is refused or cannot be
  fetched): :class:`Prepared` names every such document of the call with its reason (by
  document index), so that the client can raise one
  :class:`~qwen3_vllm_rerank.errors.UnusableDocuments` naming them all, or score the others
  (the adapters' ``on_error="passthrough"``). An image in the *query* is the application's
  own: a bad one is plain :class:`InvalidInput`, raised before any document's image is touched.

Text that cannot be sent as UTF-8 (a lone surrogate, half of an emoji cut from a UTF-16
source): in a document, each one is replaced by U+FFFD and the document is scored; in the
query or the instruction (the application's own) it is :class:`InvalidInput`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInput, UnusableDocuments
from ..images import (
    IMAGE_CACHE_BYTES,
    Content,
    Image,
    PreparedImage,
    PreparedImageCache,
    UrlFetcher,
    shared_image_cache,
)
from ..images._calls import Outcome, aprepare_each, prepare_each
from ..images._failures import UnusableImage
from ..images._sources import source_kind
from ._sanitize import lone_surrogate, repair_surrogates

__all__ = [
    "Item",
    "Prepared",
    "ScoreRequest",
    "aprepare",
    "image_cache",
    "positive_int",
    "prepare",
    "score_request",
]

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

    @property
    def uuids(self) -> list[str]:
        """vLLM's per-image ``uuid`` for each image: the SHA-256 of the PNG bytes sent, so that
        the id names exactly those pixels (computed here, never taken from the input)."""
        return [i.sha256 for i in self.images]

    @property
    def route_key(self) -> str | None:
        """Which replica's caches it belongs to (``_routing.py``): its images' SHA-256s, or
        ``None`` for text, which any replica serves as cheaply."""
        return ",".join(self.uuids) if self.images else None


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

    def image_labels(self) -> list[tuple[str, Image]]:
        """Every image of the call with the input it belongs to, e.g. ``("documents[3]", image)``."""
        return [*self.query_images(), *((label, image) for _, label, image in self.document_images())]

    def query_images(self) -> list[tuple[str, Image]]:
        """The query's images, each with its label (``"query"``)."""
        return [("query", image) for image in self._query.images]

    def document_images(self) -> list[tuple[int, str, Image]]:
        """Every document image of the call with its document's index and label, e.g.
        ``(3, "documents[3]", image)``, in order."""
        return [
            (i, f"documents[{i}]", image) for i, parts in enumerate(self._documents) for image in parts.images
        ]

    def prepared(self, query: Sequence[PreparedImage], documents: Sequence[Outcome]) -> Prepared:
        """The call's :class:`Prepared` items, given the query's prepared images
        (:meth:`query_images`) and the outcome of every document image in order
        (:meth:`document_images`): a document with an image that could not be prepared is
        unusable, with every reason its images gave."""
        failed: dict[int, list[str]] = {}
        for (index, _, _), outcome in zip(self.document_images(), documents, strict=True):
            if isinstance(outcome, UnusableImage):
                failed.setdefault(index, []).append(outcome.reason)
        remaining = iter(documents)
        items: dict[int, Item] = {}
        for index, parts in enumerate(self._documents):
            images = tuple(next(remaining) for _ in parts.images)
            if index not in failed:
                items[index] = Item(parts.text, images)  # type: ignore[arg-type]
        unusable = {index: "; ".join(reasons) for index, reasons in failed.items()}
        return Prepared(Item(self._query.text, tuple(query)), items, unusable)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A call's inputs as scored: the query, the usable documents by their index in the call,
    and why each other document cannot be scored (by index; safe to show)."""

    query: Item
    documents: dict[int, Item]
    unusable: dict[int, str]

    def without(self, reasons: dict[int, str]) -> Prepared:
        """The same call with the documents ``reasons`` names moved to :attr:`unusable`."""
        kept = {i: item for i, item in self.documents.items() if i not in reasons}
        return Prepared(self.query, kept, {**self.unusable, **reasons})

    def refuse_unusable(self) -> None:
        """Raise :class:`UnusableDocuments` naming every unusable document, if any."""
        if self.unusable:
            raise UnusableDocuments(self.unusable)


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return value


def _checked_text(text: str, label: str) -> str:
    """The application's own text (query, instruction): refused when it cannot be sent."""
    position = lone_surrogate(text)
    if position is not None:
        raise InvalidInput(
            f"{label} has a lone surrogate (U+{ord(text[position]):04X}) at character {position}: it "
            "cannot be sent as UTF-8. It is usually half of an emoji cut from UTF-16 text; repair it, "
            "e.g. text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')"
        )
    return text


def _parts(value: object, label: str) -> _Parts:
    parts = _raw_parts(value, label)
    if label == "query":
        return _Parts(_checked_text(parts.text, label), parts.images)
    text = repair_surrogates(parts.text)  # retrieved text: a cut emoji must not fail the document
    return parts if text is parts.text else _Parts(text, parts.images)


def _raw_parts(value: object, label: str) -> _Parts:
    if isinstance(value, str):
        return _Parts(value, ())
    if isinstance(value, Content):
        return _Parts(value.text, tuple(i if isinstance(i, Image) else Image(i) for i in value.images))
    if isinstance(value, Image):
        return _Parts("", (value,))
    if source_kind(value) is not None:  # a bare image source (a str is text, above)
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
    if instruction is not None:
        _checked_text(instruction, "instruction")
    query_parts = _parts(query, "query")
    if not query_parts.text.strip() and not query_parts.images:
        raise InvalidInput("query is empty: there is nothing to rank documents against")
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InvalidInput(
            f"documents must be a list of str, Image or Content, got {type(documents).__name__}"
        )
    document_parts = [_parts(doc, f"documents[{i}]") for i, doc in enumerate(documents)]
    return ScoreRequest(query, documents, instruction, top_n, query_parts, document_parts)  # type: ignore[arg-type]


def image_cache(option: object) -> PreparedImageCache | None:
    """The prepared-image cache a client's ``image_cache`` option names: a
    :class:`~qwen3_vllm_rerank.images.PreparedImageCache` as given (shared with whoever else
    holds it); :data:`~qwen3_vllm_rerank.images.IMAGE_CACHE_BYTES` (the default) the
    process-wide :func:`~qwen3_vllm_rerank.images.shared_image_cache`, which every client left
    at the default shares; 0 none; any other number of bytes a cache of that size for this
    client alone. Anything else is :class:`InvalidInput`."""
    if isinstance(option, PreparedImageCache):
        return option
    if isinstance(option, bool) or not isinstance(option, int) or option < 0:
        raise InvalidInput(
            f"image_cache must be a number of bytes >= 0 or a PreparedImageCache, got {option!r}"
        )
    if option == 0:
        return None
    return shared_image_cache() if option == IMAGE_CACHE_BYTES else PreparedImageCache(option)


def _query_prepared(outcomes: list[Outcome]) -> list[PreparedImage]:
    for outcome in outcomes:
        if isinstance(outcome, UnusableImage):
            raise outcome  # the application's own query: plain InvalidInput
    return outcomes  # type: ignore[return-value]


def _located(request: ScoreRequest) -> list[tuple[str, Image]]:
    return [(label, image) for _, label, image in request.document_images()]


def prepare(
    request: ScoreRequest, fetcher: UrlFetcher | None, cache: PreparedImageCache | None = None
) -> Prepared:
    """The call's items, its images prepared (read here, decoded, checked, resized and encoded in
    the bounded pool within the call's memory budget): the query's first, then every
    document's, each once (see the module docstring for errors).

    Args:
        request: the validated call.
        fetcher: the opt-in for image URLs (``None``: refused).
        cache: the prepared-image cache to look images up in and store them into (``None``: none).
    """
    query = _query_prepared(prepare_each(request.query_images(), fetcher, cache=cache))
    return request.prepared(query, prepare_each(_located(request), fetcher, cache=cache))


async def aprepare(
    request: ScoreRequest, fetcher: UrlFetcher | None, cache: PreparedImageCache | None = None
) -> Prepared:
    """:func:`prepare` for asyncio: URLs fetched concurrently, decoding in the bounded pool
    within the call's memory budget, the loop never blocked."""
    query = _query_prepared(await aprepare_each(request.query_images(), fetcher, cache=cache))
    return request.prepared(query, await aprepare_each(_located(request), fetcher, cache=cache))
