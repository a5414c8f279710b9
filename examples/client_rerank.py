"""Rerank paragraphs of Python's own help topics with the raw qwen3-vllm-rerank client.

    python examples/client_rerank.py --base-url http://127.0.0.1:8000   # a running server
    python examples/client_rerank.py --model /path/to/Qwen3-Reranker-0.6B  # starts vLLM for it
    python examples/client_rerank.py                                     # starts vLLM on a tiny
                                                                         # random-weight checkpoint

Starting a server needs vLLM in the interpreter given by ``--server-python`` (default
``$QWEN3_VLLM_RERANK_SERVER_PYTHON``, else this one); without ``--model`` it also needs the
``testing`` extra to build the fixture checkpoint, whose RANDOM weights make the scores
meaningless (the prompt, tokenizer and HTTP path are the real ones).

The corpus is ``pydoc_data.topics`` (the text behind ``help("with")``); a cheap keyword
match picks the candidates, Qwen3-Reranker orders them.
"""

from __future__ import annotations

import argparse
import re
from pydoc_data.topics import topics

from qwen3_vllm_rerank import RerankClient
from qwen3_vllm_rerank.testing import local_reranker


def paragraphs() -> list[tuple[str, str]]:
    """(topic, paragraph) for every help-topic paragraph of a useful length."""
    found = []
    for topic in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[topic]):
            text = " ".join(block.split())
            if 200 <= len(text) <= 1000:
                found.append((topic, text))
    return found


def keyword_candidates(query: str, corpus: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """First stage: the ``k`` paragraphs sharing the most words with the query."""
    words = set(re.findall(r"\w{3,}", query.lower()))
    overlap = [len(words & set(re.findall(r"\w{3,}", text.lower()))) for _, text in corpus]
    best = sorted(range(len(corpus)), key=lambda i: -overlap[i])[:k]
    return [corpus[i] for i in best]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="a running vLLM server; otherwise one is started")
    parser.add_argument("--model", help="checkpoint to serve when no --base-url is given")
    parser.add_argument("--server-python", help="interpreter with vLLM installed, for the local server")
    parser.add_argument("--query", default="How does the with statement call __enter__ and __exit__?")
    parser.add_argument("--candidates", type=int, default=10, help="paragraphs the first stage keeps")
    parser.add_argument("--top-n", type=int, default=3)
    args = parser.parse_args(argv)

    candidates = keyword_candidates(args.query, paragraphs(), args.candidates)
    with (
        local_reranker(args.model, base_url=args.base_url, python=args.server_python) as base_url,
        RerankClient(base_url) as client,
    ):
        results = client.rerank(args.query, [text for _, text in candidates], top_n=args.top_n)

    print(f"query: {args.query}")
    print(f"keyword match kept {len(candidates)} paragraphs; Qwen3-Reranker's best {len(results)}:")
    for rank, result in enumerate(results, 1):
        topic = candidates[result.index][0]
        print(f"{rank:3d}. {result.score:.4f}  [{topic}] {result.document[:100]}...")


if __name__ == "__main__":
    main()
