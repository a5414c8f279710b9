"""Rerank BM25 results in a Haystack pipeline with ``Qwen3VLLMRanker``.

    pip install "qwen3-vllm-rerank[haystack]"

    python examples/haystack_rerank.py --base-url http://127.0.0.1:8000   # a running server
    python examples/haystack_rerank.py --model /path/to/Qwen3-Reranker-0.6B  # starts vLLM for it
    python examples/haystack_rerank.py                                     # starts vLLM on a tiny
                                                                           # random-weight checkpoint

Starting a server needs vLLM in the interpreter given by ``--server-python`` (default
``$QWEN3_VLLM_RERANK_SERVER_PYTHON``, else this one); without ``--model`` it also needs the
``testing`` extra to build the fixture checkpoint, whose RANDOM weights make the scores
meaningless (the prompt, tokenizer and HTTP path are the real ones).

Pipeline: an ``InMemoryDocumentStore`` holding the paragraphs of ``pydoc_data.topics`` (the text
behind ``help("with")``) -> ``InMemoryBM25Retriever`` -> ``Qwen3VLLMRanker``; the ranked
Documents would go on to a prompt builder and your generator.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from pydoc_data.topics import topics

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker
from qwen3_vllm_rerank.testing import local_reranker


def paragraphs() -> list[Document]:
    """Every help-topic paragraph of a useful length, as a Document."""
    found = []
    for topic in sorted(topics):
        for i, block in enumerate(re.split(r"\n\s*\n", topics[topic])):
            text = " ".join(block.split())
            if 200 <= len(text) <= 1000:
                found.append(Document(content=text, id=f"{topic}-{i}", meta={"topic": topic}))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="a running vLLM server; otherwise one is started")
    parser.add_argument("--model", help="checkpoint to serve when no --base-url is given")
    parser.add_argument("--server-python", help="interpreter with vLLM installed, for the local server")
    parser.add_argument("--query", default="How does the with statement call __enter__ and __exit__?")
    parser.add_argument("--candidates", type=int, default=10, help="Documents BM25 retrieves")
    parser.add_argument("--top-n", type=int, default=3)
    args = parser.parse_args(argv)

    store = InMemoryDocumentStore()
    store.write_documents(paragraphs())
    with local_reranker(args.model, base_url=args.base_url, python=args.server_python) as base_url:
        pipeline = Pipeline()
        pipeline.add_component("retriever", InMemoryBM25Retriever(store, top_k=args.candidates))
        pipeline.add_component("ranker", Qwen3VLLMRanker(base_url=base_url, top_k=args.top_n))
        pipeline.connect("retriever.documents", "ranker.documents")
        inputs = {"retriever": {"query": args.query}, "ranker": {"query": args.query}}
        result = pipeline.run(inputs)
        # The same pipeline, async: the ranker sends its requests on its async client.
        aresult = asyncio.run(pipeline.run_async(inputs))
        pipeline.close()

    ranked = result["ranker"]["documents"]
    print(f"query: {args.query}")
    print(f"BM25 retrieved {args.candidates} Documents; Qwen3-Reranker's best {len(ranked)}:")
    for rank, doc in enumerate(ranked, 1):
        print(f"{rank:3d}. {doc.score:.4f}  [{doc.meta['topic']}] {doc.content[:100]}...")
    same = [d.id for d in aresult["ranker"]["documents"]] == [d.id for d in ranked]
    print(f"\nrun_async returned the same Documents: {same}")
    print(f"model: {result['ranker']['meta']['model']}")


if __name__ == "__main__":
    main()
