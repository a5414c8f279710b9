"""What a vLLM server bound to a network address exposes, with and without ``--api-key``.

vLLM's API-key middleware checks the key only on paths under :data:`GUARDED_PATH_PREFIXES`; a reranker
server answers :data:`UNGUARDED_PATHS` without it, scoring included. Both were measured with vLLM 0.27
and 0.32 (``vllm/entrypoints/serve/middleware/authenticate.py`` in 0.32; ``tests/compat/`` checks
the list against each version's real routes); other versions may differ.
"""

from __future__ import annotations

import ipaddress

__all__ = ["GUARDED_PATH_PREFIXES", "UNGUARDED_PATHS", "exposure_warnings", "is_loopback"]

#: vLLM's ``--api-key`` middleware (``GUARDED_PREFIX``, the same in 0.27 and 0.32) checks the key only
#: on paths starting with these.
GUARDED_PATH_PREFIXES: tuple[str, ...] = ("/v1", "/v2", "/inference", "/cohere")
#: What a reranker server (default flags; measured with vLLM 0.27 and 0.32, the union: 0.27 has no
#: ``/kv_event_sources``) answers WITHOUT the key even when started with ``--api-key``: scoring and
#: tokenising included. Flags and environment variables (``--enable-tokenizer-info-endpoint``,
#: ``VLLM_SERVER_DEV_MODE``, profiling) add more.
UNGUARDED_PATHS: tuple[str, ...] = (
    "/score",
    "/rerank",
    "/classify",
    "/pooling",
    "/invocations",
    "/tokenize",
    "/detokenize",
    "/metrics",
    "/health",
    "/ping",
    "/load",
    "/version",
    "/kv_event_sources",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warnings(host: str, api_key: bool) -> list[str]:
    """What a server bound to ``host`` leaves open, with or without an API key; nothing on loopback."""
    if is_loopback(host):
        return []
    if not api_key:
        return [
            f"binding {host} without an API key: every endpoint, scoring included, is open to anyone "
            "who can reach this port. Keep it behind a firewall, a NetworkPolicy or an authenticating proxy."
        ]
    return [
        f"binding {host}: --api-key guards only paths under {', '.join(GUARDED_PATH_PREFIXES)}; these stay "
        f"open to anyone who can reach this port: {', '.join(UNGUARDED_PATHS)}. Clients of this library "
        "use only the guarded /v1 and /v2 paths when given the key, but the open ones score and tokenise "
        "for anyone: keep the port behind a firewall, a NetworkPolicy or an authenticating proxy."
    ]
