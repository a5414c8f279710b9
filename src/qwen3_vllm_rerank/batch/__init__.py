"""Rerank a whole corpus offline on Ray Data: :func:`rerank_dataset` (the ``ray`` extra).

Every row of a Dataset (a query, a document, any other columns) comes back once with ``score`` and
``rerank_error``, prepared exactly as :class:`~qwen3_vllm_rerank.RerankClient` prepares it, scored by
Ray's vLLM stage on the workers (``model=``) or by running servers (``base_url=``); with ``write_to=``
the run is written as Parquet and resumable. Importing this package does not import Ray.
"""

from ._columns import ERROR, KEY, SCORE
from ._dataset import rerank_dataset

__all__ = ["ERROR", "KEY", "SCORE", "rerank_dataset"]
