"""Rerank BM25 results in a LlamaIndex query engine with ``Qwen3VLLMReranker``.

    pip install "qwen3-vllm-rerank[llama-index]" llama-index-retrievers-bm25

    python examples/llama_index_rerank.py --base-url http://127.0.0.1:8000   # a running server
    python examples/llama_index_rerank.py --model /path/to/Qwen3-Reranker-0.6B  # starts vLLM for it
    python examples/llama_index_rerank.py                                     # starts vLLM on a tiny
                                                                              # random-weight checkpoint

Starting a server needs vLLM in the interpreter given by ``--server-python`` (default
``$QWEN3_VLLM_RERANK_SERVER_PYTHON``, else this one); without ``--model`` it also needs the
``testing`` extra to build the fixture checkpoint, whose RANDOM weights make the scores
meaningless (the prompt, tokenizer and HTTP path are the real ones).

Pipeline: LlamaIndex's BM25 retriever over the paragraphs of ``pydoc_data.topics`` (the text
behind ``help("with")``) -> ``Qwen3VLLMReranker`` as a node postprocessor -> the response
synthesizer. ``MockLLM`` stands in for your LLM so the example runs offline; pass any
LlamaIndex LLM instead.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from pydoc_data.topics import topics

from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import TextNode
from llama_index.retrievers.bm25 import BM25Retriever

from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker
from qwen3_vllm_rerank.testing import local_reranker


def paragraphs() -> list[TextNode]:
    """Every help-topic paragraph of a useful length, as a node."""
    found = []
    for topic in sorted(topics):
        for i, block in enumerate(re.split(r"\n\s*\n", topics[topic])):
            text = " ".join(block.split())
            if 200 <= len(text) <= 1000:
                found.append(TextNode(text=text, id_=f"{topic}-{i}", metadata={"topic": topic}))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="a running vLLM server; otherwise one is started")
    parser.add_argument("--model", help="checkpoint to serve when no --base-url is given")
    parser.add_argument("--server-python", help="interpreter with vLLM installed, for the local server")
    parser.add_argument("--query", default="How does the with statement call __enter__ and __exit__?")
    parser.add_argument("--candidates", type=int, default=10, help="nodes BM25 retrieves")
    parser.add_argument("--top-n", type=int, default=3)
    args = parser.parse_args(argv)

    retriever = BM25Retriever.from_defaults(nodes=paragraphs(), similarity_top_k=args.candidates)
    with local_reranker(args.model, base_url=args.base_url, python=args.server_python) as base_url:
        reranker = Qwen3VLLMReranker(base_url=base_url, top_n=args.top_n)
        engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), node_postprocessors=[reranker])
        response = engine.query(args.query)
        # The same engine, async: the reranker sends its requests on its async client.
        aresponse = asyncio.run(engine.aquery(args.query))
        reranker.close()

    print(f"query: {args.query}")
    print(f"BM25 retrieved {args.candidates} nodes; Qwen3-Reranker's best {len(response.source_nodes)}:")
    for rank, hit in enumerate(response.source_nodes, 1):
        text = hit.node.get_content()
        print(f"{rank:3d}. {hit.score:.4f}  [{hit.node.metadata['topic']}] {text[:100]}...")
    same = [n.node.node_id for n in aresponse.source_nodes] == [n.node.node_id for n in response.source_nodes]
    print(f"\naquery returned the same nodes: {same}")


if __name__ == "__main__":
    main()
