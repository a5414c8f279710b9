"""What decoding one image costs, estimated from its file before a pixel is decoded, and the
budget of memory per call.

A small file can decode to a huge image: a flat-colour 8000 x 8000 RGBA PNG is 264 kB and
took 736 MB to prepare. Every image's peak cost is estimated from its header (size, mode,
format) before a pixel is decoded; one whose cost is over the budget is refused, and the
images of one call being decoded at the same time never cost more than the budget together.
A small file can also take minutes to decode: a progressive JPEG's time grows with its scans
(202 kB of 3,000 scans took 90 s), so they are counted first (:func:`jpeg_scans`). What the
estimates miss is bounded by the sandbox (``_sandbox.py``), which decodes in worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = [
    "DECODE_BUDGET_BYTES",
    "DECODE_WORKERS",
    "MAX_JPEG_SCANS",
    "DecodeBudget",
    "ThreadDecodeBudget",
    "decode_cost",
    "decode_pool",
    "jpeg_scans",
]

#: The most memory the images of one call may take while they are decoded, converted,
#: resized and encoded (512 MiB). One image over it is refused; under it, images are decoded
#: (in the sandbox's processes; PIL images in threads) only as far as their costs fit
#: together. At this budget a 50-megapixel RGB photo is decoded (about 290 MB), a
#: 64-megapixel RGBA one is refused.
DECODE_BUDGET_BYTES = 512 * 1024 * 1024

# Bytes per pixel Pillow stores a mode in (multi-band modes take 4 bytes a pixel).
_STORED = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Scratch a decoder holds beside the image, per pixel (progressive JPEG keeps its DCT
# coefficients, WebP and TIFF decode into a buffer first). Measured (RSS and address space of a
# fresh process, 6 and 16 megapixels): decoding a progressive JPEG peaks at 7.1 B/px, a baseline
# one at 4.2, WebP at 16.2 (lossy) to 17.5 (lossless) B/px, whatever its mode. An MPO (what
# Pillow calls a JPEG with a second image, as cameras write) decodes its first frame as a JPEG.
_SCRATCH = {"JPEG": 6, "MPO": 6, "WEBP": 14, "TIFF": 4}
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
    """Peak bytes preparing one image takes, at most: ``encoded`` bytes of its file twice (the
    caller's and the decoding worker's copy), the decoded
    ``width`` x ``height`` image in ``mode`` with the decoder's scratch, its RGB copy (none for
    RGB; the composite and alpha band for RGBA; a conversion and an intermediate otherwise),
    the resize's intermediate (``new_width`` x ``height``) and the prepared image encoded."""
    pixels = width * height
    decoded = pixels * (_STORED.get(mode, 4) + _SCRATCH.get(image_format or "", 0))
    conversion = {"RGB": 0, "RGBA": 5}.get(mode, 8) * pixels
    resize = new_width * height * 4
    return 2 * encoded + decoded + conversion + resize + new_width * new_height * _PER_PREPARED_PIXEL


#: The most scans a JPEG file may hold (its SOS markers, counted in the file's bytes before
#: decoding). A progressive JPEG's decoding time is its pixels times its scans: libjpeg's
#: progressive scripts write 10 scans for colour (6 for grey), optimisers (mozjpeg) a few more,
#: and an MPO holds each of its frames' scans. A hostile file repeats a scan thousands of times
#: (3,000 scans in 202 kB: 90 s to decode).
MAX_JPEG_SCANS = 100


def jpeg_scans(data: bytes) -> int:
    """An upper bound on the scans of the JPEG (or MPO) file ``data``: its SOS markers. In
    entropy-coded data a 0xFF byte is always followed by 0x00 or a marker, so every ``FF DA``
    of the file is a scan (of its image, an embedded thumbnail or another frame) or sits in a
    metadata segment (rare: counted all the same, it can only overcount)."""
    return data.count(b"\xff\xda")


#: Jobs decoding at once, for the whole process (every call of every client shares them): one
#: per core, at most 4. Image files are decoded in that many sandbox processes
#: (``_sandbox.py``); PIL images (already decoded by the application) are converted, resized
#: and encoded in that many threads, as Pillow releases the GIL while it works. More than cores
#: only hold more decoded images at once (measured in benchmarks/results/image_prep.md).
DECODE_WORKERS = max(1, min(4, os.cpu_count() or 1))

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def decode_pool() -> ThreadPoolExecutor:
    """The process's :data:`DECODE_WORKERS` threads that prepare PIL images."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=DECODE_WORKERS, thread_name_prefix="qwen3-image-decode")
        return _POOL


class DecodeBudget:
    """The decoding budget of one async call: :meth:`run` starts an image's work (in the
    sandbox or the thread pool) once its cost fits beside the costs of those already running.

    Args:
        limit: the budget in bytes (:data:`DECODE_BUDGET_BYTES` by default).
    """

    def __init__(self, limit: int = DECODE_BUDGET_BYTES) -> None:
        self.limit = limit
        self._used = 0
        self._changed = asyncio.Event()

    async def run(self, cost: int, start: Callable[[], Future[_T]]) -> _T:
        """``start()``'s result, once ``cost`` (at most :attr:`limit`) fits; ``start`` begins
        the work elsewhere and returns its future. The cost is given back when the work ends,
        even if the caller was cancelled."""
        cost = min(cost, self.limit)
        while self._used + cost > self.limit:
            self._changed.clear()
            await self._changed.wait()
        self._used += cost
        loop = asyncio.get_running_loop()
        try:
            future = start()
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
    worker's thread, so nothing can deadlock) until the image's cost fits beside the costs of
    those already running, then starts its work.

    Args:
        limit: the budget in bytes (:data:`DECODE_BUDGET_BYTES` by default).
    """

    def __init__(self, limit: int = DECODE_BUDGET_BYTES) -> None:
        self.limit = limit
        self._used = 0
        self._changed = threading.Condition()

    def submit(self, cost: int, start: Callable[[], Future[_T]]) -> Future[_T]:
        """``start()`` (which begins the work elsewhere and returns its future) once ``cost``
        (at most :attr:`limit`) fits; the cost is given back when the work ends."""
        cost = min(cost, self.limit)
        with self._changed:
            self._changed.wait_for(lambda: self._used + cost <= self.limit)
            self._used += cost
        try:
            future = start()
        except BaseException:
            self._release(cost)
            raise
        future.add_done_callback(lambda _: self._release(cost))
        return future

    def _release(self, cost: int) -> None:
        with self._changed:
            self._used -= cost
            self._changed.notify_all()
