"""vLLM's multimodal cache counters, read from a real server's ``/metrics``."""

from __future__ import annotations

import re
import time

import httpx

#: ``vllm:mm_cache_queries_total{engine="0",model_name="..."} 3.0`` (counted in image items).
_COUNTER = re.compile(r"^vllm:mm_cache_(queries|hits)(?:_total)?(?:\{[^}]*\})? ([0-9.eE+-]+)$")


def mm_cache_counters(base_url: str, at_least: float = 0) -> dict[str, float]:
    """The server's multimodal cache counters, ``{"queries": n, "hits": n}``, once at least
    ``at_least`` lookups are counted (vLLM records them as it finishes a step, which may be just
    after the response): polled for at most ~10 s."""
    for _ in range(100):
        totals = {"queries": 0.0, "hits": 0.0}
        for line in httpx.get(f"{base_url}/metrics", timeout=30.0).text.splitlines():
            match = _COUNTER.match(line)
            if match:
                totals[match.group(1)] += float(match.group(2))
        if totals["queries"] >= at_least:
            break
        time.sleep(0.1)
    return totals
