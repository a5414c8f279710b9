"""A LangChain pipeline, run by tests/test_distributions.py with a fresh virtualenv's interpreter.

That virtualenv holds only the built wheels (and their dependencies from the registry), and the
interpreter runs isolated (``-I``), so nothing from the source tree can be imported here. Reads
``{"base_url", "query", "documents"}`` as JSON on stdin; writes the ranking and where every package
was imported from as JSON on stdout.
"""

from __future__ import annotations

import json
import sys

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

import langchain_qwen3_vllm_rerank
import qwen3_vllm_rerank
from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker


class ListRetriever(BaseRetriever):
    """Retrieves every document, in order: the reranker alone decides the ranking."""

    documents: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(self.documents)


def main() -> None:
    request = json.load(sys.stdin)
    documents = [Document(page_content=text, id=str(i)) for i, text in enumerate(request["documents"])]
    retriever = ContextualCompressionRetriever(
        base_compressor=Qwen3VLLMReranker(base_url=request["base_url"], top_n=None),
        base_retriever=ListRetriever(documents=documents),
    )
    ranked = retriever.invoke(request["query"])
    json.dump(
        {
            "ranked": [[d.id, d.metadata["relevance_score"]] for d in ranked],
            "files": {m.__name__: m.__file__ for m in (qwen3_vllm_rerank, langchain_qwen3_vllm_rerank)},
            "prefix": sys.prefix,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
