"""Rerank real Python documentation paragraphs with Qwen3-Reranker on a local vLLM.

    scripts/demo                                   # random-weight fixture, offline
    scripts/demo --model Qwen/Qwen3-Reranker-0.6B  # the real model (downloads it)
    scripts/demo --base-url http://127.0.0.1:8000  # a server you already run

Without --model the checkpoint is a tiny random-weight Qwen3-Reranker-shaped model
with the real Qwen3 tokenizer: everything runs for real, but its ranking is noise.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
from pydoc_data.topics import topics

from qwen3_vllm_rerank import RerankClient
from qwen3_vllm_rerank.testing import local_reranker

QUERY = "How do I handle an exception raised inside a block of code?"
TOPICS = ["try", "exceptions", "for", "while", "with", "lambda", "import", "assert", "class", "raise"]


def paragraphs() -> list[str]:
    """The first paragraph of a few language-reference topics."""
    prose = [next(p for p in topics[name].split("\n\n") if "::=" not in p and len(p) > 60) for name in TOPICS]
    return [" ".join(p.split()) for p in prose]


def show(base_url: str, documents: list[str]) -> None:
    with RerankClient(base_url) as client:
        results = client.rerank(QUERY, documents)
    print(f"\nQuery: {QUERY}\n")
    print(f"{'rank':>4}  {'score':>7}  {'topic':<10}  document")
    for rank, result in enumerate(results, 1):
        preview = textwrap.shorten(result.document, 70, placeholder=" ...")
        print(f"{rank:>4}  {result.score:7.4f}  {TOPICS[result.index]:<10}  {preview}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint directory or hub id (default: a random-weight fixture)")
    parser.add_argument("--base-url", help="use a running vLLM server instead of starting one")
    parser.add_argument(
        "--python", help="interpreter with vLLM installed (default: $QWEN3_VLLM_RERANK_SERVER_PYTHON)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    documents = paragraphs()

    with local_reranker(args.model, base_url=args.base_url, python=args.python) as base_url:
        show(base_url, documents)
    if args.model is None and args.base_url is None:
        print(
            "\nNOTE: these weights are random, so this ranking means nothing; the prompt, tokenizer and\n"
            "scoring path are the real ones. For real rankings run:\n"
            "    scripts/demo --model Qwen/Qwen3-Reranker-0.6B"
        )


if __name__ == "__main__":
    main()
