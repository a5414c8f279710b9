"""All the images of one call, prepared within the call's memory budget, in parallel.

Both paths read (or fetch) each image, look it up in the cache and check its header first,
then decode, resize and encode it (:func:`~._preparing.start`: an image file in the sandbox's
worker processes, bounded in time and memory; a PIL image in the process's thread pool; both
:data:`DECODE_WORKERS` at once, so a call's images are prepared on every core) as far as their
estimated costs fit in the call's budget together. The call's budget is also who the sandbox
serves: calls take turns there, so one call's slow images never hold up another's. The sync
path reads the images in the calling thread, one ahead of the workers at most once the budget
is full; the async path
fetches and reads up to :data:`IMAGES_IN_FLIGHT` at once without blocking the loop. Each
image's outcome is returned (its :class:`PreparedImage` or the :class:`UnusableImage` saying
why not), so that the caller can tell every unusable document of the call at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from functools import partial

from ._decode_budget import DECODE_WORKERS, DecodeBudget, ThreadDecodeBudget
from ._failures import UnusableImage
from ._fetching import UrlFetcher
from ._image_cache import PreparedImageCache
from ._preparing import PreparedImage, Settings, aprepare_in_call, decoding, load, start
from ._sources import Image

__all__ = ["DECODE_WORKERS", "IMAGES_IN_FLIGHT", "Outcome", "aprepare_each", "prepare_each"]

#: Images of one async call being fetched, read or decoded at the same time: with each
#: fetched body capped (``UrlFetcher.max_bytes``), this bounds the encoded bytes a call holds
#: while it waits for the decoding budget.
IMAGES_IN_FLIGHT = 8

Outcome = PreparedImage | UnusableImage


def _outcome(image: Image, future: Future[PreparedImage]) -> Outcome:
    try:
        with decoding(image):
            return future.result()
    except UnusableImage as error:
        return error


def prepare_each(
    labelled: Sequence[tuple[str, Image]],
    fetcher: UrlFetcher | None,
    settings: Settings | None = None,
    cache: PreparedImageCache | None = None,
) -> list[Outcome]:
    """Each image prepared (in the sandbox or the pool, within the call's budget), or why it
    could not be.

    Args:
        labelled: the images, each with the label that names it in errors.
        fetcher: the opt-in for URLs (see :class:`UrlFetcher`).
        settings: the caps and the call's decoding budget (the defaults when ``None``).
        cache: where prepared images are looked up and stored (``None``: nowhere).
    """
    chosen = settings or Settings()
    budget = ThreadDecodeBudget(chosen.decode_budget)
    outcomes: list[Outcome | Future[PreparedImage]] = []
    for label, image in labelled:
        try:
            step = load(image, label, fetcher, chosen, cache)
        except UnusableImage as error:
            outcomes.append(error)
            continue
        outcomes.append(
            step
            if isinstance(step, PreparedImage)
            else budget.submit(step.cost, partial(start, step, cache, budget))
        )
    return [
        _outcome(image, outcome) if isinstance(outcome, Future) else outcome
        for (_, image), outcome in zip(labelled, outcomes, strict=True)
    ]


async def aprepare_each(
    labelled: Sequence[tuple[str, Image]],
    fetcher: UrlFetcher | None,
    settings: Settings | None = None,
    cache: PreparedImageCache | None = None,
) -> list[Outcome]:
    """:func:`prepare_each` for asyncio, concurrently within the call's budget."""
    chosen = settings or Settings()
    budget = DecodeBudget(chosen.decode_budget)
    slots = asyncio.Semaphore(IMAGES_IN_FLIGHT)

    async def one(label: str, image: Image) -> Outcome:
        async with slots:
            try:
                return await aprepare_in_call(image, label, fetcher, chosen, budget, cache)
            except UnusableImage as error:
                return error

    return list(await asyncio.gather(*(one(label, image) for label, image in labelled)))
