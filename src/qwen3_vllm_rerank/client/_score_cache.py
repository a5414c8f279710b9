"""An optional LRU cache of scores, shared by the sync and async paths of a client.

Conversational RAG reranks the same candidates again and again; a hit skips the
server. Keys are ``(model, instruction, query, document)`` as the caller passed them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["CacheInfo", "ScoreCache"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """Counters since the cache was created or cleared."""

    hits: int
    misses: int
    size: int
    maxsize: int


class ScoreCache(Generic[V]):
    """A thread-safe LRU mapping bounded by entry count."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._data), self.maxsize)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._hits = self._misses = 0
