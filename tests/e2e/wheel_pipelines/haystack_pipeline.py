"""A Haystack pipeline, run by tests/test_distributions.py with a fresh virtualenv's interpreter.

That virtualenv holds only the built wheels (and their dependencies from the registry), and the
interpreter runs isolated (``-I``), so nothing from the source tree can be imported here. Reads
``{"base_url", "query", "documents"}`` as JSON on stdin; writes the ranking of the ranker's
Documents and where every package was imported from as JSON on stdout.
"""

from __future__ import annotations

import json
import sys

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

import haystack_integrations.components.rankers.qwen3_vllm_rerank as ranker_package
import qwen3_vllm_rerank
from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker


def main() -> None:
    request = json.load(sys.stdin)
    documents = [Document(content=text, id=str(i)) for i, text in enumerate(request["documents"])]
    # BM25Okapi keeps Documents that share no term with the query (BM25L drops them): all come back.
    store = InMemoryDocumentStore(bm25_algorithm="BM25Okapi")
    store.write_documents(documents)
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(store, top_k=len(documents)))
    pipeline.add_component("ranker", Qwen3VLLMRanker(base_url=request["base_url"]))
    pipeline.connect("retriever.documents", "ranker.documents")
    result = pipeline.run({"retriever": {"query": request["query"]}, "ranker": {"query": request["query"]}})
    json.dump(
        {
            "ranked": [[d.id, d.score] for d in result["ranker"]["documents"]],
            "files": {m.__name__: m.__file__ for m in (qwen3_vllm_rerank, ranker_package)},
            "prefix": sys.prefix,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
