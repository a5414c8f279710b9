"""Rerank BM25 results in a LangChain pipeline with ``Qwen3VLLMReranker``.

    pip install "qwen3-vllm-rerank[langchain]" langchain-classic rank-bm25

    python examples/langchain_rerank.py --base-url http://127.0.0.1:8000   # a running server
    python examples/langchain_rerank.py --model /path/to/Qwen3-Reranker-0.6B  # starts vLLM for it
    python examples/langchain_rerank.py                                     # starts vLLM on a tiny
                                                                            # random-weight checkpoint

Starting a server needs vLLM in the interpreter given by ``--server-python`` (default
``$QWEN3_VLLM_RERANK_SERVER_PYTHON``, else this one); without ``--model`` it also needs the
``testing`` extra to build the fixture checkpoint, whose RANDOM weights make the scores
meaningless (the prompt, tokenizer and HTTP path are the real ones).

Pipeline: a BM25 retriever over the paragraphs of ``pydoc_data.topics`` (the text behind
``help("with")``) -> ``ContextualCompressionRetriever`` with ``Qwen3VLLMReranker`` -> an LCEL
step that formats the context an LLM prompt would get.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from pydoc_data.topics import topics

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from pydantic import PrivateAttr
from rank_bm25 import BM25Okapi

from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker
from qwen3_vllm_rerank.testing import local_reranker


def paragraphs() -> list[Document]:
    """Every help-topic paragraph of a useful length, as a Document."""
    found = []
    for topic in sorted(topics):
        for i, block in enumerate(re.split(r"\n\s*\n", topics[topic])):
            text = " ".join(block.split())
            if 200 <= len(text) <= 1000:
                found.append(Document(text, id=f"{topic}-{i}", metadata={"topic": topic}))
    return found


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class BM25Retriever(BaseRetriever):
    """Okapi BM25 (rank_bm25) over a fixed list of documents."""

    documents: list[Document]
    k: int = 10
    _index: BM25Okapi = PrivateAttr()

    def model_post_init(self, context: object, /) -> None:
        self._index = BM25Okapi([_words(d.page_content) for d in self.documents])

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        scores = self._index.get_scores(_words(query))
        return [self.documents[i] for i in sorted(range(len(scores)), key=lambda i: -scores[i])[: self.k]]


def format_docs(documents: list[Document]) -> str:
    return "\n\n".join(f"[{d.metadata['topic']}] {d.page_content}" for d in documents)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="a running vLLM server; otherwise one is started")
    parser.add_argument("--model", help="checkpoint to serve when no --base-url is given")
    parser.add_argument("--server-python", help="interpreter with vLLM installed, for the local server")
    parser.add_argument("--query", default="How does the with statement call __enter__ and __exit__?")
    parser.add_argument("--candidates", type=int, default=10, help="documents BM25 retrieves")
    parser.add_argument("--top-n", type=int, default=3)
    args = parser.parse_args(argv)

    bm25 = BM25Retriever(documents=paragraphs(), k=args.candidates)
    with local_reranker(args.model, base_url=args.base_url, python=args.server_python) as base_url:
        reranker = Qwen3VLLMReranker(base_url=base_url, top_n=args.top_n)
        retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=bm25)
        documents = retriever.invoke(args.query)
        # The same pipeline, async, and as the first step of an LCEL chain.
        context = asyncio.run((retriever | RunnableLambda(format_docs)).ainvoke(args.query))
        reranker.close()

    print(f"query: {args.query}")
    print(f"BM25 retrieved {args.candidates} documents; Qwen3-Reranker's best {len(documents)}:")
    for rank, doc in enumerate(documents, 1):
        score, topic = doc.metadata["relevance_score"], doc.metadata["topic"]
        print(f"{rank:3d}. {score:.4f}  [{topic}] {doc.page_content[:100]}...")
    print(f"\ncontext for the LLM ({len(context)} characters, from retriever | format_docs):")
    print(context[:300] + "...")


if __name__ == "__main__":
    main()
