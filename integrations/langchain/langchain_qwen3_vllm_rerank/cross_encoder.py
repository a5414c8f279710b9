"""``Qwen3VLLMCrossEncoder``: Qwen3-Reranker behind LangChain's ``BaseCrossEncoder``.

For code built on the cross-encoder interface, e.g. ``CrossEncoderReranker`` from
``langchain_classic.retrievers.document_compressors``. ``Qwen3VLLMReranker`` does the same
job directly (and has a real async path); use this one where a ``BaseCrossEncoder`` is
asked for.
"""

from __future__ import annotations

from langchain_core.cross_encoders import BaseCrossEncoder

from qwen3_vllm_rerank import InvalidInput
from qwen3_vllm_rerank.adapters import ClientSettings, client_of

__all__ = ["Qwen3VLLMCrossEncoder"]


class Qwen3VLLMCrossEncoder(ClientSettings, BaseCrossEncoder):
    """Score (query, document) pairs with Qwen3-Reranker served by vLLM.

    Example:
        .. code-block:: python

            from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
            from langchain_qwen3_vllm_rerank import Qwen3VLLMCrossEncoder

            compressor = CrossEncoderReranker(model=Qwen3VLLMCrossEncoder(), top_n=3)
    """

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """p(yes) for each ``(query, document)`` pair, in input order.

        Pairs that share a query are scored together (one ``score`` call per distinct
        query, batched by the client), so the query prefix is sent once per batch.
        """
        positions: dict[str, list[int]] = {}
        for i, pair in enumerate(text_pairs):
            if (
                not isinstance(pair, tuple | list)
                or len(pair) != 2
                or not all(isinstance(t, str) for t in pair)
            ):
                raise InvalidInput(
                    f"text_pairs[{i}] must be a (query, document) pair of str, got {pair!r:.80}"
                )
            positions.setdefault(pair[0], []).append(i)
        if not positions:
            return []
        client = client_of(self)
        scores = [0.0] * len(text_pairs)
        for query, indices in positions.items():
            got = client.score(query, [text_pairs[i][1] for i in indices])
            for i, value in zip(indices, got, strict=True):
                scores[i] = value
        return scores
