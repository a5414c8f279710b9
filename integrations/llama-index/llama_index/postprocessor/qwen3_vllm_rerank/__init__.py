"""LlamaIndex integration of qwen3-vllm-rerank: rerank nodes with Qwen3-Reranker served by vLLM.

>>> from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker
>>> reranker = Qwen3VLLMReranker(base_url="http://127.0.0.1:8000", top_n=3)  # doctest: +SKIP
"""

from .base import Qwen3VLLMReranker

__all__ = ["Qwen3VLLMReranker"]
