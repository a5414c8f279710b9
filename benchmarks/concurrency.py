"""Many queries at once: AsyncRerankClient vs raw concurrent POSTs vs one blocking request per query.

32 queries x 100 documents, interleaved in one run against one server:

* a **fresh** ``AsyncRerankClient`` per run, built and closed inside the timed run: what an
  app that makes a client per request, a serverless function or a CLI pays (its first call
  learns about the server; goal: >= 0.97 of the raw docs/s);
* one **warm** ``AsyncRerankClient`` kept across runs (``max_concurrency`` requests in
  flight, ``batch_size`` docs each);
* the same requests sent with a bare ``httpx.AsyncClient`` and a semaphore (kept warm
  across runs, the strictest baseline);
* the common hand-written style: one blocking ``httpx`` POST per query, in sequence.

It also records what a fresh client sends on its first call (the requests by path) and
whether it loaded a tokenizer.

Then a sweep of the async client over batch sizes and concurrency levels (the data of
``results/throughput.png``). Every query is used once per server, so the prefix cache
helps each case equally (within a query) and never across cases.

    python benchmarks/concurrency.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from itertools import count
from typing import Any

import httpx
from _common import (
    Result,
    ainterleave,
    checkpoint,
    cli,
    common_parser,
    corpus,
    describe,
    fmt,
    header,
    md_table,
    median,
    queries,
    serve,
    server_python,
    serving,
)

from qwen3_vllm_rerank import AsyncRerankClient
from qwen3_vllm_rerank.prompt import format_pair

N_QUERIES = 32
N_DOCS = 100
FRESH = "AsyncRerankClient, fresh per run"
WARM = "AsyncRerankClient, warm"
RAW = "raw httpx.AsyncClient, same requests"
BLOCKING = "one blocking POST per query, in sequence"

# Latencies of each query in the last run of each case (seconds from the start of the run).
Latencies = list[float]


async def _timed(started: float, work: Awaitable[object], sink: Latencies) -> None:
    await work
    sink.append(time.perf_counter() - started)


def _client_default(option: str) -> int:
    default: int = inspect.signature(AsyncRerankClient).parameters[option].default
    return default


def _sum_latency(samples: dict[str, list[Latencies]], name: str) -> float:
    return median([median(run) for run in samples[name]])


def run(args: argparse.Namespace) -> Result:
    reps = args.reps or (2 if args.quick else 5)
    n_queries = 8 if args.quick else N_QUERIES
    concurrency = args.concurrency
    batch_size = args.batch_size or _client_default("batch_size")
    python = server_python(args.server_python)
    ckpt = checkpoint("tiny", "float32")
    docs = corpus(N_DOCS)
    salt = count(2000)
    workload = {
        "checkpoint": f"random {ckpt.shape} Qwen3 ({ckpt.dtype}): a fast server, so client-side costs show",
        "calls": f"{n_queries} queries x {describe(docs)}",
        "client": f"max_concurrency={concurrency}, batch_size={batch_size}",
        "repetitions": f"{reps}, interleaved, order rotated; fresh queries for every run",
    }
    report = header("Concurrency", python, workload)
    with serving({"library": serve(ckpt, python, log_name="concurrency")}) as servers:
        server = servers["library"]
        url, model = server.base_url, server.served_model_name
        result = asyncio.run(
            _measure(url, model, docs, n_queries, reps, concurrency, batch_size, salt, quick=args.quick)
        )
    times, latencies, sweep, first_call = result

    total = n_queries * N_DOCS
    med = {name: median(values) for name, values in times.items()}
    rows = [
        [
            name,
            fmt(med[name]),
            fmt(total / med[name]),
            fmt(_sum_latency(latencies, name) * 1000),
            fmt(med[RAW] / med[name]),
        ]
        for name in times
    ]
    report += f"### {n_queries} queries x {N_DOCS} documents\n\n"
    report += md_table(
        [
            "case",
            "median s per run",
            "docs/s",
            "median query latency ms (all sent at once)",
            "docs/s relative to raw POSTs",
        ],
        rows,
    )
    report += (
        f"\nA fresh AsyncRerankClient per run keeps **{fmt(med[RAW] / med[FRESH])}** of the raw concurrent "
        f"docs/s (goal >= 0.97); a warm one keeps **{fmt(med[RAW] / med[WARM])}**, and is "
        f"**{fmt(med[BLOCKING] / med[WARM])}x** as fast as one blocking request per query.\n\n"
    )
    report += "### What a fresh client sends on its first call\n\n"
    report += (
        f"One fresh client scoring {n_queries} queries at once (outside the timing): "
        + ", ".join(f"{count} x `{what}`" for what, count in first_call["requests"].items())
        + f"; tokenizer loaded: {first_call['tokenizer_loaded']}. Raw POSTs send "
        f"{n_queries * -(-N_DOCS // batch_size)} x `POST /v1/score`.\n\n"
    )
    report += "### Sweep: AsyncRerankClient by batch size and max_concurrency\n\n"
    report += md_table(
        ["batch_size", "max_concurrency", "docs/s", "median query latency ms (all sent at once)"],
        [[b, c, fmt(v["docs_per_s"]), fmt(v["latency_s"] * 1000)] for (b, c), v in sorted(sweep.items())],
    )
    data = {
        "median_seconds": med,
        "queries": n_queries,
        "docs": N_DOCS,
        "first_call": first_call,
        "sweep": [{"batch_size": b, "concurrency": c, **v} for (b, c), v in sorted(sweep.items())],
    }
    headlines = [
        (
            f"fresh AsyncRerankClient per run, docs/s / raw concurrent POSTs ({n_queries} queries)",
            fmt(med[RAW] / med[FRESH]),
            ">= 0.97",
        ),
        (
            f"warm AsyncRerankClient docs/s / raw concurrent POSTs ({n_queries} queries)",
            fmt(med[RAW] / med[WARM]),
            "",
        ),
        ("warm AsyncRerankClient docs/s / one blocking POST per query", fmt(med[BLOCKING] / med[WARM]), ""),
    ]
    return Result("concurrency", report, data, headlines)


Measured = tuple[
    dict[str, list[float]],
    dict[str, list[Latencies]],
    dict[tuple[int, int], dict[str, float]],
    dict[str, Any],
]


async def _measure(
    url: str,
    model: str,
    docs: list[str],
    n_queries: int,
    reps: int,
    concurrency: int,
    batch_size: int,
    salt: count[int],
    *,
    quick: bool,
) -> Measured:
    latencies: dict[str, list[Latencies]] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    options: dict[str, Any] = {"max_concurrency": concurrency, "batch_size": batch_size, "timeout": 600.0}
    first_call = await _first_call(url, docs, n_queries, options, salt)
    async with (
        AsyncRerankClient(url, **options) as client,
        httpx.AsyncClient(timeout=600.0, limits=limits) as raw_http,
    ):
        gate = asyncio.Semaphore(concurrency)
        blocking = httpx.Client(timeout=600.0)

        async def raw_query(query: str) -> list[float]:
            text_1 = format_pair(query, "")[0]
            texts_2 = [format_pair(query, d)[1] for d in docs]

            async def post(chunk: list[str]) -> list[float]:
                async with gate:
                    response = await raw_http.post(
                        f"{url}/v1/score", json={"model": model, "text_1": text_1, "text_2": chunk}
                    )
                response.raise_for_status()
                return [item["score"] for item in response.json()["data"]]

            parts = await asyncio.gather(
                *(post(texts_2[i : i + batch_size]) for i in range(0, len(texts_2), batch_size))
            )
            return [score for part in parts for score in part]

        def run_all(name: str, one: Callable[[str], Awaitable[object]]) -> Callable[[int], Awaitable[None]]:
            async def go(rep: int) -> None:
                sink: Latencies = []
                started = time.perf_counter()
                await asyncio.gather(
                    *(_timed(started, one(q), sink) for q in queries(n_queries, salt=next(salt)))
                )
                if rep >= 0:
                    latencies.setdefault(name, []).append(sink)

            return go

        async def fresh(rep: int) -> None:
            # Built and closed inside the timed run: its first call pays for what it learns.
            async with AsyncRerankClient(url, **options) as new_client:
                await run_all(FRESH, lambda q: new_client.score(q, docs))(rep)

        async def sequential(rep: int) -> None:
            sink: Latencies = []
            started = time.perf_counter()
            for q in queries(n_queries, salt=next(salt)):
                text_1 = format_pair(q, "")[0]
                payload = {"model": model, "text_1": text_1, "text_2": [format_pair(q, d)[1] for d in docs]}
                # What hand-written code does: a blocking call, even inside async code.
                blocking.post(f"{url}/v1/score", json=payload).raise_for_status()  # noqa: ASYNC212
                sink.append(time.perf_counter() - started)
            if rep >= 0:
                latencies.setdefault(BLOCKING, []).append(sink)

        times = await ainterleave(
            {
                FRESH: fresh,
                WARM: run_all(WARM, lambda q: client.score(q, docs)),
                RAW: run_all(RAW, raw_query),
                BLOCKING: sequential,
            },
            reps,
        )
        blocking.close()  # noqa: ASYNC212

    sweep: dict[tuple[int, int], dict[str, float]] = {}
    batch_sizes = (25, 100) if quick else (10, 25, 50, 100)
    levels = (1, 4) if quick else (1, 2, 4, 8, 16)
    sweep_reps = 1 if quick else max(2, reps // 2)
    for b in batch_sizes:
        for c in levels:
            async with AsyncRerankClient(url, max_concurrency=c, batch_size=b, timeout=600.0) as swept:
                name = f"sweep {b} {c}"
                sweep_times = await ainterleave(
                    {name: run_all(name, partial(swept.score, documents=docs))}, sweep_reps
                )
            seconds = median(sweep_times[name])
            sweep[(b, c)] = {
                "docs_per_s": n_queries * N_DOCS / seconds,
                "latency_s": _sum_latency(latencies, name),
            }
    return times, latencies, sweep, first_call


async def _first_call(
    url: str, docs: list[str], n_queries: int, options: dict[str, Any], salt: count[int]
) -> dict[str, Any]:
    """The requests a fresh client sends for ``n_queries`` concurrent queries, by method and path."""
    sent: Counter[str] = Counter()

    async def record(request: httpx.Request) -> None:
        sent[f"{request.method} {request.url.path}"] += 1

    async with (
        httpx.AsyncClient(timeout=600.0, event_hooks={"request": [record]}) as http,
        AsyncRerankClient(url, http_client=http, **options) as client,
    ):
        await asyncio.gather(*(client.score(q, docs) for q in queries(n_queries, salt=next(salt))))
        # Private, read for the report only: whether the first calls loaded a tokenizer.
        profile = getattr(client, "_profile", None)
        loaded = getattr(getattr(profile, "tokens", None), "loaded", None)
    return {"requests": dict(sent), "tokenizer_loaded": "unknown" if loaded is None else bool(loaded)}


def parser() -> argparse.ArgumentParser:
    p = common_parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--concurrency", type=int, default=8, help="max_concurrency of the compared clients")
    p.add_argument(
        "--batch-size", type=int, default=None, help="documents per request (default: the client's default)"
    )
    return p


def main(argv: list[str] | None = None) -> None:
    cli(run, parser(), argv)


if __name__ == "__main__":
    main()
