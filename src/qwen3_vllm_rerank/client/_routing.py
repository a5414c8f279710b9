"""Which replica a page goes to: rendezvous (highest-random-weight) hashing over the base URLs.

vLLM keeps a vision-encoder output (and the processed image) per server, keyed by the image's
hash, so a page that comes back under another query is cheap only on the replica that saw it.
Every image document therefore has a route key (its images' SHA-256s, see
``_inputs.Item.route_key``); its preferred replica is the URL with the highest
:func:`weight` for that key, the next highest is where it falls back to, and so on
(:func:`rendezvous_order`). Removing a replica moves only the pages it held; adding one takes
about ``1/n`` of the pages from the others; every process computes the same order (SHA-256, not
Python's salted ``hash``).

Text documents carry no route key: their cost is the shared prompt prefix (system prompt,
instruction, query), which the server's prefix cache keys first, so a text document is no
cheaper on one replica than another, and its batches keep the round-robin spread.

:func:`route_groups` splits one call's pieces into groups that share a preferred replica (one
group of every text piece, whose route is ``None``); each group is batched and sent on its own,
and the scores are put back in the caller's order by the flow (``_scoring.py``). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RouteGroup", "rendezvous_order", "route_groups", "weight"]


def weight(key: str, url: str) -> int:
    """The random weight of replica ``url`` for ``key``: the first 8 bytes of
    SHA-256(``url`` NUL ``key``), stable across processes and Python versions."""
    return int.from_bytes(hashlib.sha256(f"{url}\0{key}".encode()).digest()[:8], "big")


def rendezvous_order(key: str, urls: Sequence[str]) -> list[str]:
    """``urls`` from the preferred replica for ``key`` to the last fallback (ties, which
    SHA-256 makes practically impossible, by URL)."""
    return sorted(urls, key=lambda url: (-weight(key, url), url))


@dataclass(frozen=True, slots=True)
class RouteGroup:
    """Pieces of one call that go to the same preferred replica.

    ``route``: the key whose rendezvous order the group's requests follow (its first member's;
    every member prefers the same replica), or ``None`` for text pieces (round-robin).
    ``members``: the pieces' positions in the call, in order."""

    route: str | None
    members: tuple[int, ...]


def route_groups(keys: Sequence[str | None], urls: Sequence[str]) -> list[RouteGroup]:
    """The pieces of one call (``keys``: each piece's route key, ``None`` for text), grouped by
    preferred replica among ``urls``, groups in the order of their first member.

    With fewer than two replicas there is nothing to choose: one group of every piece, route
    ``None``, as if no piece had a key."""
    if len(urls) < 2:
        return [RouteGroup(None, tuple(range(len(keys))))] if keys else []
    routes: dict[str | None, str | None] = {}
    members: dict[str | None, list[int]] = {}
    for position, key in enumerate(keys):
        replica = None if key is None else rendezvous_order(key, urls)[0]
        routes.setdefault(replica, key)
        members.setdefault(replica, []).append(position)
    return [RouteGroup(routes[replica], tuple(positions)) for replica, positions in members.items()]
