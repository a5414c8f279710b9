"""The shape of I/O-free work: generators that yield HTTP calls and receive responses."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

import httpx

from .._protocol import Call

__all__ = ["Flow", "immediate"]

T = TypeVar("T")

#: Work that yields lists of calls (sent together), receives their responses in the
#: same order, and finally returns a ``T``.
Flow = Generator[list[Call], list[httpx.Response], T]


def immediate(value: T) -> Flow[T]:
    """A flow that needs no I/O and returns ``value`` at once."""
    return value
    yield  # pragma: no cover - makes this function a generator
