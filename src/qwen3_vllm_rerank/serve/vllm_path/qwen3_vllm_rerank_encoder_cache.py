"""vLLM's encoder cache, sized by the launcher: imported by the vLLM server, never by this library.

``VLLMServer`` puts this file's directory on the server's ``PYTHONPATH``, sets
``QWEN3_VLLM_RERANK_ENCODER_CACHE_TOKENS`` and passes ``--ec-manager-config
'{"encoder_cache_manager_cls": "qwen3_vllm_rerank_encoder_cache.SizedEncoderCacheManager"}'``. vLLM's
scheduler (``vllm/v1/core/sched/scheduler.py``; 0.27 builds the class with ``cache_size=``, 0.32 through
``create_manager``, which calls the same constructor) then keeps that many image embeddings between
requests instead of ``max_num_batched_tokens`` of them, without enlarging its scheduler steps. The
worker's encoder-output store has no limit of its own: it frees what this manager evicts.

A top-level module with no import of ``qwen3_vllm_rerank``: the server's interpreter does not have the
library installed.
"""

from __future__ import annotations

import os

from vllm.v1.core.encoder_cache_manager import EncoderCacheManager

__all__ = ["CACHE_TOKENS_ENV", "SizedEncoderCacheManager"]

#: Image embeddings the cache holds (at least vLLM's own size, which fits the largest image).
CACHE_TOKENS_ENV = "QWEN3_VLLM_RERANK_ENCODER_CACHE_TOKENS"


def _cache_tokens() -> int:
    value = os.environ.get(CACHE_TOKENS_ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(f"{CACHE_TOKENS_ENV}={value!r}: expected a whole number of image embeddings")
    return int(value)


class SizedEncoderCacheManager(EncoderCacheManager):  # type: ignore[misc]  # vLLM is untyped here
    """vLLM's own encoder cache manager (shared by image hash, oldest unreferenced evicted first),
    with ``max(cache_size, $QWEN3_VLLM_RERANK_ENCODER_CACHE_TOKENS)`` slots."""

    def __init__(self, cache_size: int) -> None:
        super().__init__(cache_size=max(cache_size, _cache_tokens()))
