"""Retries with backoff and jitter, spread over one or more vLLM endpoints.

Pure state, no I/O and no sleeping: the clients ask an :class:`Attempts` where to send
next and how long to wait first, and report what happened.

What is retried: a request that certainly did not reach the model (connection refused or
reset, no answer to the connection attempt, HTTP 429/502/503) or failed inside it (500).
What is not: 400/401/404/422 (they would fail again), and a request that timed out while
the server had it (read/write timeout, HTTP 504 from a gateway): the server is most likely
still computing it, and sending the same batch again would double the load on a server
that is already too slow. Such a call fails once, with :class:`RerankTimeoutError`. Nor is
a request whose answer had started (any byte of it received, even half a status line) and
then broke off, or came back unusable: the model had it. That call fails once, with
:class:`MalformedResponseError`. Which transport failures count as "certainly did not
reach the model" is decided in one place, ``_transport.translate_transport_error``.

How long to wait: exponential backoff with full jitter, or, when the server's 429/503 answer
carries ``Retry-After: <seconds>`` (at most :data:`MAX_RETRY_AFTER`), those seconds, as
openai-python does; a wait that would pass the policy's deadline is not waited: the call fails.

Where to send: a request with a route key (a batch of image documents, ``_routing.py``) goes to
the first replica of the key's rendezvous order that is not cooling down and has not failed this
request yet, so each page reaches the replica whose caches hold it while that replica is up; a
request without one (text) goes round-robin, as the replicas come.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from .._redaction import redact_url
from ..errors import InvalidInput, Qwen3RerankError, RerankConnectionError, RerankHTTPError
from ._routing import rendezvous_order

__all__ = ["RETRYABLE_STATUS", "Attempts", "Endpoints", "RetryPolicy"]

RETRYABLE_STATUS = frozenset({429, 500, 502, 503})
#: The longest ``Retry-After`` honoured (seconds); a longer one falls back to the backoff.
MAX_RETRY_AFTER = 60.0

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one request; pass one as ``retry=`` to a client.

    ``RetryPolicy(max_attempts=1)`` turns retries off.

    Args:
        max_attempts: tries per request, the first included (1 = no retries).
        deadline: seconds from the first try after which no new try starts.
        backoff: the first wait; doubled each retry, up to ``max_backoff``, with full jitter.
        max_backoff: the longest wait between tries.
        cooldown: seconds an endpoint that failed is skipped while others are available.
    """

    max_attempts: int = 3
    deadline: float = 120.0
    backoff: float = 0.2
    max_backoff: float = 5.0
    cooldown: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidInput(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.deadline <= 0 or self.backoff < 0 or self.max_backoff < 0 or self.cooldown < 0:
            raise InvalidInput("deadline must be positive and backoff/cooldown not negative")


def retryable(error: Qwen3RerankError) -> bool:
    """Whether a request that failed with ``error`` may be sent again (see the module docstring)."""
    if isinstance(error, RerankHTTPError):
        return error.status_code in RETRYABLE_STATUS
    return isinstance(error, RerankConnectionError)


class Endpoints:
    """Round-robin over base URLs, or their rendezvous order for a routed request; one that
    failed sits out a cool-down."""

    def __init__(self, urls: Sequence[str], cooldown: float, clock: Clock = time.monotonic) -> None:
        if not urls:
            raise InvalidInput("base_url must name at least one endpoint")
        self.urls = [u.rstrip("/") for u in urls]
        self._cooldown = cooldown
        self._clock = clock
        self._next = 0
        self._down_until = dict.fromkeys(self.urls, 0.0)

    def pick(self, route: str | None = None, tried: Collection[str] = ()) -> str:
        """Where to send next: for a ``route`` key, the first endpoint of its rendezvous order
        that is not cooling down and not in ``tried`` (the endpoints that failed this request),
        else the first not cooling down; without one, the next endpoint not cooling down. If all
        are cooling down, the one that recovers first."""
        now = self._clock()
        if route is not None:
            order = rendezvous_order(route, self.urls)
            up = [url for url in order if self._down_until[url] <= now]
            fresh = [url for url in up if url not in tried]
            if fresh or up:
                return (fresh or up)[0]
            return min(order, key=self._down_until.__getitem__)
        for step in range(len(self.urls)):
            url = self.urls[(self._next + step) % len(self.urls)]
            if self._down_until[url] <= now:
                self._next = (self._next + step + 1) % len(self.urls)
                return url
        return min(self.urls, key=self._down_until.__getitem__)

    def failed(self, url: str) -> None:
        self._down_until[url] = self._clock() + self._cooldown

    def succeeded(self, url: str) -> None:
        self._down_until[url] = 0.0


class Attempts:
    """The tries of one request: where to send, how long to wait, when to give up."""

    def __init__(
        self,
        policy: RetryPolicy,
        endpoints: Endpoints,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        route: str | None = None,
    ) -> None:
        """``route``: the request's route key (``None``: round-robin), see :meth:`Endpoints.pick`."""
        self._policy = policy
        self._endpoints = endpoints
        self._route = route
        self._clock = clock
        self._rng = rng or random.Random()
        self._started = clock()
        self._tries = 0
        self._errors: list[tuple[str, Qwen3RerankError]] = []

    def next(self) -> tuple[str, float]:
        """``(endpoint, seconds to wait before sending)`` for the next try."""
        delay = 0.0
        if self._tries:
            asked = self._retry_after()
            if asked is not None:
                delay = asked
            else:
                cap = min(self._policy.max_backoff, self._policy.backoff * 2 ** (self._tries - 1))
                delay = self._rng.uniform(0, cap)
        self._tries += 1
        tried = {url for url, _ in self._errors}
        return self._endpoints.pick(self._route, tried), delay

    def _retry_after(self) -> float | None:
        """The wait the last answer asked for (``Retry-After`` on a 429/503), if it is honoured."""
        last = self._errors[-1][1] if self._errors else None
        if isinstance(last, RerankHTTPError) and last.status_code in (429, 503):
            asked = last.retry_after
            if asked is not None and asked <= MAX_RETRY_AFTER:
                return asked
        return None

    def succeeded(self, url: str) -> None:
        self._endpoints.succeeded(url)

    def failed(self, url: str, error: Qwen3RerankError) -> None:
        """Record a failure; raise the final error if no further try is allowed."""
        self._errors.append((url, error))
        if isinstance(error, RerankConnectionError):
            self._endpoints.failed(url)
        wait = self._retry_after() or 0.0
        out_of_time = self._clock() + wait - self._started >= self._policy.deadline
        if not retryable(error) or self._tries >= self._policy.max_attempts or out_of_time:
            final = self._final(error)
            raise final from (error.__cause__ if final is error else error)

    def _final(self, last: Qwen3RerankError) -> Qwen3RerankError:
        failed_urls = {url for url, _ in self._errors}
        all_unreachable = all(isinstance(e, RerankConnectionError) for _, e in self._errors)
        if len(self._endpoints.urls) > 1 and all_unreachable:
            names = ", ".join(redact_url(url) for url in self._endpoints.urls)
            tried = ", ".join(redact_url(url) for url in sorted(failed_urls))
            return RerankConnectionError(
                names, f"all endpoints are down; tried {tried} over {self._tries} attempts"
            )
        return last
