"""The processes a test started, looked at from outside with psutil."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import psutil

__all__ = ["descendants", "read_alive"]

T = TypeVar("T")


def descendants(pid: int) -> list[psutil.Process]:
    """Every process under ``pid``; none once ``pid`` itself has exited."""
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return children
    except psutil.NoSuchProcess:
        return []


def read_alive(processes: Iterable[psutil.Process], read: Callable[[psutil.Process], T]) -> list[T]:
    """``read(process)`` for each process still there: a short-lived helper (vLLM starts some)
    may exit, or be a zombie, between being listed and being read."""
    values = []
    for process in processes:
        try:
            values.append(read(process))
        except psutil.NoSuchProcess:  # ZombieProcess included
            continue
    return values
