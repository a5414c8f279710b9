"""Rerank real Python documentation paragraphs with Qwen3-Reranker on a local vLLM.

    scripts/demo                                   # the real model if the hub answers, else a fixture
    scripts/demo --fixture                         # the random-weight fixture, offline, no download
    scripts/demo --model ./my-checkpoint           # a checkpoint directory or another hub id
    scripts/demo --base-url http://127.0.0.1:8000  # a server you already run
    scripts/demo --which-model                     # say which checkpoint it would serve, and exit

Without --model the demo serves Qwen/Qwen3-Reranker-0.6B when the Hugging Face hub answers ($HF_ENDPOINT,
unless $HF_HUB_OFFLINE is set): vLLM downloads about 1.2 GB the first time. Otherwise it serves a tiny
random-weight Qwen3-Reranker-shaped checkpoint with the real Qwen3 tokenizer, built offline: everything
runs for real, but its ranking is noise.
"""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
from dataclasses import dataclass
from pydoc_data.topics import topics

import httpx

from qwen3_vllm_rerank import RerankClient
from qwen3_vllm_rerank.testing import local_reranker

QUERY = "How do I handle an exception raised inside a block of code?"
TOPICS = ["try", "exceptions", "for", "while", "with", "lambda", "import", "assert", "class", "raise"]
REAL_MODEL = "Qwen/Qwen3-Reranker-0.6B"
#: What vLLM downloads for REAL_MODEL when the hub does not say (model.safetensors is 1.19 GB).
REAL_MODEL_SIZE_GB = 1.2
#: Seconds to wait for the hub: a machine without internet must fall back quickly.
HUB_CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True)
class Choice:
    """The checkpoint to serve (None: the random-weight fixture) and what to tell the user about it."""

    model: str | None
    notice: str


def choose_model(model: str | None, *, fixture: bool) -> Choice:
    """The model asked for; else the real Qwen3-Reranker-0.6B when the hub answers; else the fixture."""
    if model:
        return Choice(model, f"serving {model}")
    if fixture:
        return Choice(None, "serving a tiny random-weight fixture (--fixture)")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return Choice(
            None, "HF_HUB_OFFLINE is set: serving a tiny random-weight fixture instead of " + REAL_MODEL
        )
    timeout = httpx.Timeout(10.0, connect=HUB_CONNECT_TIMEOUT)
    try:
        answer = httpx.get(f"{endpoint}/api/models/{REAL_MODEL}", params={"blobs": "true"}, timeout=timeout)
        answer.raise_for_status()
        siblings = answer.json().get("siblings") or []
    except (httpx.HTTPError, ValueError) as exc:
        return Choice(
            None,
            f"the Hugging Face hub at {endpoint} did not answer ({type(exc).__name__}): serving a tiny "
            f"random-weight fixture instead of {REAL_MODEL}",
        )
    size = sum(int(s.get("size") or 0) for s in siblings if isinstance(s, dict)) / 1e9 or REAL_MODEL_SIZE_GB
    return Choice(
        REAL_MODEL,
        f"serving {REAL_MODEL} from the Hugging Face hub ({endpoint}): vLLM downloads about {size:.1f} GB "
        "the first time (then it is cached); pass --fixture to skip the download",
    )


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
        preview = textwrap.shorten(str(result.document), 70, placeholder=" ...")
        print(f"{rank:>4}  {result.score:7.4f}  {TOPICS[result.index]:<10}  {preview}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help=f"checkpoint directory or hub id (default: {REAL_MODEL} or a fixture)"
    )
    parser.add_argument(
        "--fixture", action="store_true", help="serve the random-weight fixture (no download)"
    )
    parser.add_argument("--base-url", help="use a running vLLM server instead of starting one")
    parser.add_argument(
        "--python", help="interpreter with vLLM installed (default: $QWEN3_VLLM_RERANK_SERVER_PYTHON)"
    )
    parser.add_argument(
        "--which-model", action="store_true", help="print which checkpoint would be served and why, and exit"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here

    choice = None if args.base_url else choose_model(args.model, fixture=args.fixture)
    if args.which_model:
        print(choice.notice if choice else f"using the server at {args.base_url}")
        return
    if choice is not None:
        print(f"demo: {choice.notice}", flush=True)

    with local_reranker(choice.model if choice else None, base_url=args.base_url, python=args.python) as url:
        show(url, paragraphs())
    if choice is not None and choice.model is None:
        print(
            "\nNOTE: these weights are random, so this ranking means nothing; the prompt, tokenizer and\n"
            f"scoring path are the real ones. For real rankings, on a machine that reaches the Hugging Face\n"
            f"hub: scripts/demo (it uses {REAL_MODEL}), or scripts/demo --model PATH for a local copy."
        )


if __name__ == "__main__":
    main()
