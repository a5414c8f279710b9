"""Memory per call: what decoding one image costs, estimated from its header, and the budget.

A small file can decode to a huge image: a flat-colour 8000 x 8000 RGBA PNG is 264 kB and
took 736 MB to prepare. Every image's peak cost is estimated from its header (size, mode,
format) before a pixel is decoded; one whose cost is over the budget is refused, and the
images of one call being decoded at the same time never cost more than the budget together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["DECODE_BUDGET_BYTES", "DECODE_WORKERS", "DecodeBudget", "ThreadDecodeBudget", "decode_cost"]

#: The most memory the images of one call may take while they are decoded, converted,
#: resized and encoded (512 MiB). One image over it is refused; under it, images are decoded
#: (in a pool, on the async path) only as far as their costs fit together. At this budget a
#: 50-megapixel RGB photo is decoded (about 290 MB), a 64-megapixel RGBA one is refused.
DECODE_BUDGET_BYTES = 512 * 1024 * 1024

# Bytes per pixel Pillow stores a mode in (multi-band modes take 4 bytes a pixel).
_STORED = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Scratch a decoder holds beside the image, per pixel (progressive JPEG keeps its DCT
# coefficients, WebP and TIFF decode into a buffer first).
_SCRATCH = {"JPEG": 6, "WEBP": 4, "TIFF": 4}
# Per prepared pixel: the RGB image (4), its PNG (< 4.1), the base64 bytes and text of the
# data URL and its concatenation (3 x 5.5): 28 with room to spare.
_PER_PREPARED_PIXEL = 28

_T = TypeVar("_T")


def decode_cost(
    width: int,
    height: int,
    mode: str,
    image_format: str | None,
    new_width: int,
    new_height: int,
    encoded: int,
) -> int:
    """Peak bytes preparing one image takes, at most: ``encoded`` bytes of its file, the decoded
    ``width`` x ``height`` image in ``mode`` with the decoder's scratch, its RGB copy (none for
    RGB; the composite and alpha band for RGBA; a conversion and an intermediate otherwise),
    the resize's intermediate (``new_width`` x ``height``) and the prepared image encoded."""
    pixels = width * height
    decoded = pixels * (_STORED.get(mode, 4) + _SCRATCH.get(image_format or "", 0))
    conversion = {"RGB": 0, "RGBA": 5}.get(mode, 8) * pixels
    resize = new_width * height * 4
    return encoded + decoded + conversion + resize + new_width * new_height * _PER_PREPARED_PIXEL


#: Threads that decode, resize and encode images, for the whole process (every call of every
#: client shares them): one per core, at most 4. Pillow releases the GIL while it decodes,
#: resizes and encodes, so they run in parallel; more threads than cores only hold more
#: decoded images at once (measured in benchmarks/results/image_prep.md).
DECODE_WORKERS = max(1, min(4, os.cpu_count() or 1))

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=DECODE_WORKERS, thread_name_prefix="qwen3-image-decode")
        return _POOL


class DecodeBudget:
    """The decoding budget of one async call: :meth:`run` decodes in a bounded thread pool once
    the image's cost fits beside the costs of those already being decoded.

    Args:
        limit: the budget in bytes (:data:`DECODE_BUDGET_BYTES` by default).
    """

    def __init__(self, limit: int = DECODE_BUDGET_BYTES) -> None:
        self.limit = limit
        self._used = 0
        self._changed = asyncio.Event()

    async def run(self, cost: int, work: Callable[..., _T], *args: Any) -> _T:
        """``work(*args)`` in the pool, once ``cost`` (at most :attr:`limit`) fits. The cost is
        given back when the work ends in its thread, even if the caller was cancelled."""
        cost = min(cost, self.limit)
        while self._used + cost > self.limit:
            self._changed.clear()
            await self._changed.wait()
        self._used += cost
        loop = asyncio.get_running_loop()
        try:
            future: Future[_T] = _pool().submit(work, *args)
        except BaseException:
            self._release(cost)
            raise

        def ended(_: Future[_T]) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(self._release, cost)

        future.add_done_callback(ended)
        return await asyncio.wrap_future(future)

    def _release(self, cost: int) -> None:
        self._used -= cost
        self._changed.set()


class ThreadDecodeBudget:
    """The decoding budget of one sync call: :meth:`submit` blocks the calling thread (never a
    pool thread, so the pool cannot deadlock) until the image's cost fits beside the costs of
    those already being decoded, then starts the work in the pool.

    Args:
        limit: the budget in bytes (:data:`DECODE_BUDGET_BYTES` by default).
    """

    def __init__(self, limit: int = DECODE_BUDGET_BYTES) -> None:
        self.limit = limit
        self._used = 0
        self._changed = threading.Condition()

    def submit(self, cost: int, work: Callable[..., _T], *args: Any) -> Future[_T]:
        """``work(*args)`` started in the pool once ``cost`` (at most :attr:`limit`) fits; the
        cost is given back when the work ends."""
        cost = min(cost, self.limit)
        with self._changed:
            self._changed.wait_for(lambda: self._used + cost <= self.limit)
            self._used += cost
        try:
            future: Future[_T] = _pool().submit(work, *args)
        except BaseException:
            self._release(cost)
            raise
        future.add_done_callback(lambda _: self._release(cost))
        return future

    def _release(self, cost: int) -> None:
        with self._changed:
            self._used -= cost
            self._changed.notify_all()
