"""The prepared-image cache: pages that come back are not decoded, resized or encoded again.

RAG over PDFs and slides reranks the same page images for query after query. Preparing one
(decode, RGB, bicubic resize, PNG encode) takes tens to hundreds of milliseconds; a hit takes
a SHA-256 of the source bytes (about a millisecond for a page file).

What a key is made of, by kind of source:

* bytes, ``data:`` URLs, paths and ``file:`` URLs: the SHA-256 of the image file's bytes,
  read every time (a file can change between calls; its bytes decide, never its name);
* ``http(s)`` URLs: the SHA-256 of the fetched body. The fetch still happens on every call,
  with all its checks: a URL's content can change, and a URL says nothing about its bytes;
* PIL images (no file bytes): the SHA-256 of the pixels once made RGB (what the resize reads),
  with their size. Hashing them reads the image once more (a few ms for a page); decoding and
  converting are not saved, resizing and encoding are.

plus the preparation settings (the caps and the decoding budget, so that a hit never lets
through an image the caller's settings would refuse) and :data:`RECIPE` (the official resize
rule and the encoder's settings). A key never depends on the label or the document. The cache
holds nothing a caller could not compute from bytes it already has, and a hit skips no access
check: files are read and URLs fetched (with their fetcher's checks) before the key exists.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InvalidInput
from ._geometry import IMAGE_FACTOR, MAX_PIXELS, MIN_PIXELS
from ._prepared import PreparedImage

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "IMAGE_CACHE_BYTES",
    "PNG_COMPRESS_LEVEL",
    "RECIPE",
    "ImageCacheInfo",
    "PreparedImageCache",
    "pixels_key",
    "shared_image_cache",
    "source_key",
]

#: The default bound of a cache: 256 MiB of prepared ``data:`` URLs, about 400 rendered A4
#: text pages (0.5 to 0.8 MB each) or 50 full-size photos (about 5 MB each).
IMAGE_CACHE_BYTES = 256 * 1024 * 1024

#: zlib level of the prepared PNG. Measured (benchmarks/results/image_prep.md) on rendered
#: pages and photos: level 0 encodes ~30% faster but is 8x larger (every call sends and the
#: server decodes it again, while a cached image is encoded once); 3 and 6 are slower for a few
#: percent less (or more) size. The encoding is lossless at any level.
PNG_COMPRESS_LEVEL = 1

#: Everything besides the source and the caps that decides the prepared bytes: the resize rule
#: (factor, pixel limits, bicubic) and the encoder (PNG, its level, no metadata chunks).
RECIPE: tuple[Hashable, ...] = ("bicubic", IMAGE_FACTOR, MIN_PIXELS, MAX_PIXELS, "png", PNG_COMPRESS_LEVEL)

# What an entry costs besides its data URL: the PreparedImage, its key and the LRU links.
_ENTRY_OVERHEAD = 512
# Rows of a PIL image hashed at a time: bounds the copy hashing makes to a strip.
_STRIP_BYTES = 1 << 20


def source_key(data: bytes, settings: Hashable) -> Hashable:
    """The key of an image file's ``data`` prepared under ``settings``."""
    return ("file", hashlib.sha256(data).hexdigest(), settings, RECIPE)


def pixels_key(rgb: PILImage, settings: Hashable) -> Hashable:
    """The key of an RGB PIL image's pixels prepared under ``settings``, hashed a strip of rows
    at a time (never a whole second copy of the image)."""
    digest = hashlib.sha256()
    width, height = rgb.size
    rows = max(1, _STRIP_BYTES // max(1, width * 3))
    for top in range(0, height, rows):
        digest.update(rgb.crop((0, top, width, min(height, top + rows))).tobytes())
    return ("pixels", width, height, digest.hexdigest(), settings, RECIPE)


@dataclass(frozen=True, slots=True)
class ImageCacheInfo:
    """Counters of a :class:`PreparedImageCache` since it was made or cleared.

    Attributes:
        hits: lookups that found the prepared image.
        misses: lookups that did not (the image was then prepared and, if it fits, stored).
        evictions: entries dropped, least recently used first, to stay within ``max_bytes``.
        entries: prepared images held now.
        bytes: what they take now (their data URLs, plus a small overhead each).
        max_bytes: the bound (0: the cache is off and stores nothing).
    """

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


class PreparedImageCache:
    """A thread-safe LRU cache of prepared images, bounded in bytes: one may be shared by sync
    and async clients and by adapters in several threads (every operation holds a lock for a
    dictionary update only, never while an image is prepared).

    Args:
        max_bytes: the most bytes of prepared ``data:`` URLs it holds (:data:`IMAGE_CACHE_BYTES`
            by default); least recently used entries are evicted beyond it; an image larger than
            it alone is not stored. 0 turns the cache off (every lookup misses, nothing is kept).

    Two threads missing the same image at the same time both prepare it (the results are
    identical, the second store replaces the first); nothing waits for another's work.
    """

    def __init__(self, max_bytes: int = IMAGE_CACHE_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidInput(f"image cache max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[PreparedImage, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = self._hits = self._misses = self._evictions = 0

    def __repr__(self) -> str:
        info = self.info()
        return f"PreparedImageCache(max_bytes={info.max_bytes}, entries={info.entries}, bytes={info.bytes})"

    def get(self, key: Hashable) -> PreparedImage | None:
        """The prepared image stored under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry[0]

    def put(self, key: Hashable, prepared: PreparedImage) -> None:
        """Store ``prepared`` under ``key``, evicting the least recently used beyond the bound."""
        size = len(prepared.url) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (prepared, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
                self._evictions += 1

    def info(self) -> ImageCacheInfo:
        """The counters now."""
        with self._lock:
            return ImageCacheInfo(
                self._hits, self._misses, self._evictions, len(self._entries), self._bytes, self.max_bytes
            )

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._bytes = self._hits = self._misses = self._evictions = 0


_SHARED: PreparedImageCache | None = None
_SHARED_LOCK = threading.Lock()


def shared_image_cache() -> PreparedImageCache:
    """The process-wide cache of :data:`IMAGE_CACHE_BYTES`, made on first use: what every client
    left at the default shares (sync and async, both adapters)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = PreparedImageCache(IMAGE_CACHE_BYTES)
        return _SHARED
