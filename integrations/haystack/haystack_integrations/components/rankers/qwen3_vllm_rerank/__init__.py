"""Haystack integration of qwen3-vllm-rerank: rank Documents with Qwen3-Reranker served by vLLM.

>>> from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker
>>> ranker = Qwen3VLLMRanker(base_url="http://127.0.0.1:8000", top_k=3)  # doctest: +SKIP
"""

from .ranker import Qwen3VLLMRanker

__all__ = ["Qwen3VLLMRanker"]
