"""Client + vLLM vs Qwen's transformers reference code: docs/s and score agreement.

A random checkpoint of Qwen3-Reranker-0.6B's shape (real tokenizer), the same 32 real
paragraphs and the same dtype on both sides. The reference is the model card's code:
left padding, prefix/suffix tokens around the formatted pair, ``Qwen3ForCausalLM``
logits at the last position, softmax over [no, yes], in batches. Interleaved in one run:
``RerankClient.score``, one raw POST of the same pairs (what vLLM alone gives) and the
reference. Goal: the client keeps >= 1.8x the reference's docs/s.

    python benchmarks/vs_transformers.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from _common import (
    Result,
    checkpoint,
    cli,
    common_parser,
    corpus,
    describe,
    fmt,
    header,
    interleave,
    md_table,
    median,
    queries,
    serve,
    server_python,
    serving,
)

from qwen3_vllm_rerank import RerankClient
from qwen3_vllm_rerank.prompt import format_pair

N_DOCS = 32


class ModelCardReranker:
    """The Qwen3-Reranker model card's transformers code, batched, in a chosen dtype."""

    PREFIX = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
        'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
        "<|im_start|>user\n"
    )
    SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
    MAX_LENGTH = 8192

    def __init__(self, path: Path, dtype: str, batch_size: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        self.model.train(False)
        self.prefix_tokens = self.tokenizer.encode(self.PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(self.SUFFIX, add_special_tokens=False)
        self.yes = self.tokenizer.convert_tokens_to_ids("yes")
        self.no = self.tokenizer.convert_tokens_to_ids("no")
        self.batch_size = batch_size

    def _inputs(self, pairs: list[str]) -> Any:
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.MAX_LENGTH - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ids in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ids + self.suffix_tokens
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.MAX_LENGTH)

    def score(self, query: str, documents: list[str]) -> list[float]:
        torch = self.torch
        scores: list[float] = []
        pairs = [f"<Instruct>: {self.INSTRUCTION}\n<Query>: {query}\n<Document>: {doc}" for doc in documents]
        for start in range(0, len(pairs), self.batch_size):
            with torch.no_grad(), warnings.catch_warnings():
                # The model card passes max_length to pad(); transformers warns that it is unused.
                warnings.filterwarnings("ignore", message=".*max_length. is ignored")
                logits = self.model(**self._inputs(pairs[start : start + self.batch_size])).logits[:, -1, :]
            pair_logits = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1).float()
            scores += torch.nn.functional.log_softmax(pair_logits, dim=1)[:, 1].exp().tolist()
        return scores


def run(args: argparse.Namespace) -> Result:
    import torch

    reps = args.reps or (1 if args.quick else 3)
    python = server_python(args.server_python)
    ckpt = checkpoint("tiny", "float32") if args.quick else checkpoint("0.6b", "bfloat16")
    docs = corpus(N_DOCS)
    salt = iter(range(5000, 10**6))
    workload = {
        "checkpoint": f"random Qwen3-Reranker-{ckpt.shape}-shaped ({ckpt.dtype} on both sides)",
        "call": f"one query x {describe(docs)} of Python's documentation",
        "reference": f"model card code, batches of {args.hf_batch_size}, "
        f"torch threads {torch.get_num_threads()}",
        "repetitions": f"{reps}, interleaved; a fresh query per vLLM call (no whole-prompt cache hits)",
    }
    report = header("Client + vLLM vs transformers (model card code)", python, workload)
    reference = ModelCardReranker(ckpt.path, ckpt.dtype, args.hf_batch_size)
    with serving({"library": serve(ckpt, python, log_name="vs-transformers")}) as servers:
        server = servers["library"]
        url, model = server.base_url, server.served_model_name
        http = httpx.Client(timeout=900.0)
        client = RerankClient(url, batch_size=N_DOCS, timeout=900.0)

        def raw(query: str) -> list[float]:
            text_1 = format_pair(query, "")[0]
            payload = {"model": model, "text_1": text_1, "text_2": [format_pair(query, d)[1] for d in docs]}
            response = http.post(f"{url}/v1/score", json=payload)
            response.raise_for_status()
            return [item["score"] for item in response.json()["data"]]

        agreement_query = queries(1, salt=next(salt))[0]
        ours = client.score(agreement_query, docs)
        theirs = reference.score(agreement_query, docs)
        times = interleave(
            {
                "RerankClient + vLLM": lambda rep: client.score(queries(1, salt=next(salt))[0], docs),
                "raw POST + vLLM": lambda rep: raw(queries(1, salt=next(salt))[0]),
                "transformers (model card)": partial(
                    lambda rep, q: reference.score(q, docs), q=agreement_query
                ),
            },
            reps,
            warmup=0,
        )
        client.close()
        http.close()

    speed = {name: N_DOCS / median(values) for name, values in times.items()}
    base = speed["transformers (model card)"]
    report += md_table(
        ["case", "median s", "docs/s", "speed-up vs transformers"],
        [[name, fmt(median(times[name])), fmt(speed[name]), fmt(speed[name] / base)] for name in times],
    )
    diffs = [abs(a - b) for a, b in zip(ours, theirs, strict=True)]
    report += (
        f"\nScores of the same {N_DOCS} pairs: max |client - reference| = **{diffs and fmt(max(diffs))}**, "
        f"median {fmt(median(diffs))} (reference scores range {fmt(min(theirs))} .. {fmt(max(theirs))}). "
        f"The client keeps **{fmt(speed['RerankClient + vLLM'] / speed['raw POST + vLLM'])}** "
        "of raw vLLM's docs/s "
        f"and is **{fmt(speed['RerankClient + vLLM'] / base)}x** the reference (goal >= 1.8x).\n"
    )
    data = {
        "seconds": times,
        "docs_per_s": speed,
        "max_abs_diff": max(diffs),
        "median_abs_diff": median(diffs),
        "reps": reps,
    }
    headlines = [
        (
            f"docs/s, RerankClient + vLLM / transformers ({ckpt.shape}, {ckpt.dtype})",
            fmt(speed["RerankClient + vLLM"] / base),
            ">= 1.8",
        ),
        ("max score difference vs transformers", fmt(max(diffs)), ""),
    ]
    return Result("vs_transformers", report, data, headlines)


def parser() -> argparse.ArgumentParser:
    p = common_parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--hf-batch-size", type=int, default=8, help="pairs per forward pass of the reference")
    return p


def main(argv: list[str] | None = None) -> None:
    cli(run, parser(), argv)


if __name__ == "__main__":
    main()
