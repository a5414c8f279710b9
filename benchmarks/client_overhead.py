"""What the client costs on top of one raw HTTP request, and what the adapters cost on top of it.

Against one server, interleaved in the same run: ``RerankClient.score(query, 100 docs)``
versus a single raw POST of the same pre-formatted pairs to ``/v1/score`` (goal: ratio
<= 1.03), and the LangChain / LlamaIndex ``Qwen3VLLMReranker`` versus
``RerankClient.rerank`` (goal: <= 1.02) when the integrations are importable. Also the
CPU time this process spends per call: the client's own work (the server runs in other
processes), which is what the wall-time ratio is made of, free of the server's noise.

Every call uses a query no other call used (same length), so the server does the same
work for every case whatever the order and its prefix cache never favours one.

    python benchmarks/client_overhead.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
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

N_DOCS = 100


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def adapter_cases(
    base_url: str, model: str, docs: list[str], query: Callable[[int, int], str]
) -> dict[str, Callable[[int], object]]:
    """The adapters' rerank calls that are importable, keyed by name."""
    cases: dict[str, Callable[[int], object]] = {}
    settings: dict[str, Any] = {"base_url": base_url, "model": model, "batch_size": N_DOCS, "top_n": None}
    if _has("langchain_qwen3_vllm_rerank"):
        from langchain_core.documents import Document

        from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker as LangChainReranker

        lc = LangChainReranker(**settings)
        lc_docs = [Document(page_content=d, metadata={"i": i}) for i, d in enumerate(docs)]
        cases["LangChain Qwen3VLLMReranker.compress_documents"] = lambda rep: lc.compress_documents(
            lc_docs, query(rep, 2)
        )
    if _has("llama_index.postprocessor.qwen3_vllm_rerank"):
        from llama_index.core.schema import NodeWithScore, TextNode

        from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker as LlamaIndexReranker

        li = LlamaIndexReranker(**settings)
        nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(docs)]
        cases["LlamaIndex Qwen3VLLMReranker.postprocess_nodes"] = lambda rep: li.postprocess_nodes(
            nodes, query_str=query(rep, 3)
        )
    return cases


def run(args: argparse.Namespace) -> Result:
    reps = args.reps or (5 if args.quick else 30)
    python = server_python(args.server_python)
    ckpt = checkpoint("tiny", "float32")
    docs = corpus(N_DOCS)
    n_cases = 7
    tags = {rep: queries(n_cases, salt=1000 + rep) for rep in range(-1, reps)}

    def query(rep: int, case: int) -> str:
        return tags[rep][case]

    workload = {
        "checkpoint": f"random {ckpt.shape} Qwen3 ({ckpt.dtype}): a fast server, the strictest test",
        "call": f"one query x {describe(docs)}",
        "repetitions": f"{reps}, interleaved, order rotated; a fresh query per call",
    }
    report = header("Client overhead", python, workload)
    with serving({"library": serve(ckpt, python, log_name="client-overhead")}) as servers:
        server = servers["library"]
        url, model = server.base_url, server.served_model_name
        http = httpx.Client(timeout=120.0)
        client = RerankClient(url, batch_size=N_DOCS, timeout=120.0)
        default_client = RerankClient(url, timeout=120.0)

        def raw(rep: int, *, keep_alive: bool) -> list[float]:
            q = query(rep, 1 if keep_alive else 4)
            text_1 = format_pair(q, "")[0]
            payload = {"model": model, "text_1": text_1, "text_2": [format_pair(q, d)[1] for d in docs]}
            post = http.post if keep_alive else httpx.post
            response = post(f"{url}/v1/score", json=payload, timeout=120.0)
            response.raise_for_status()
            return [item["score"] for item in response.json()["data"]]

        cases: dict[str, Callable[[int], object]] = {
            "RerankClient.score (batch_size=100)": lambda rep: client.score(query(rep, 0), docs),
            "raw httpx.Client.post (keep-alive)": lambda rep: raw(rep, keep_alive=True),
            "raw httpx.post (new connection)": lambda rep: raw(rep, keep_alive=False),
            "RerankClient.score (default batch_size)": lambda rep: default_client.score(query(rep, 5), docs),
            "RerankClient.rerank (batch_size=100)": lambda rep: client.rerank(query(rep, 6), docs),
        }
        adapters = adapter_cases(url, model, docs, query)
        cases.update(adapters)
        cpu: dict[str, list[float]] = {}
        times = interleave(cases, reps, cpu=cpu)
        client.close()
        default_client.close()
        http.close()

    med = {name: median(values) for name, values in times.items()}
    raw_keep_alive = "raw httpx.Client.post (keep-alive)"
    baseline = med[raw_keep_alive]
    rows = [[name, fmt(med[name] * 1000), fmt(med[name] / baseline)] for name in list(cases)[:4]]
    report += "### RerankClient vs one raw POST of the same pairs (goal: ratio <= 1.03)\n\n"
    report += md_table(["case", "median ms", "ratio to raw keep-alive POST"], rows)
    raw_new = med["raw httpx.post (new connection)"]
    report += (
        f"\nRatio RerankClient.score / raw httpx.post (new connection each call): "
        f"**{fmt(med['RerankClient.score (batch_size=100)'] / raw_new)}**; "
        f"/ raw keep-alive POST: **{fmt(med['RerankClient.score (batch_size=100)'] / baseline)}**.\n\n"
    )
    data: dict[str, object] = {"median_seconds": med, "reps": reps, "docs": N_DOCS}
    core = med["RerankClient.rerank (batch_size=100)"]
    report += "### Adapters vs RerankClient.rerank (goal: ratio <= 1.02)\n\n"
    if adapters:
        rows = [["RerankClient.rerank (batch_size=100)", fmt(core * 1000), "1"]]
        rows += [[name, fmt(med[name] * 1000), fmt(med[name] / core)] for name in adapters]
        report += md_table(["case", "median ms", "ratio to RerankClient.rerank"], rows)
    else:
        report += (
            "The integrations are not importable here; install the `langchain` / `llama-index` extras.\n"
        )

    cpu_med = {name: median(values) for name, values in cpu.items()}
    data["median_cpu_seconds"] = cpu_med
    report += "\n### CPU time of this process per call (the client's work; the server runs elsewhere)\n\n"
    report += md_table(
        ["case", "median CPU ms per call"], [[name, fmt(cpu_med[name] * 1000)] for name in cases]
    )
    score, rerank = "RerankClient.score (batch_size=100)", "RerankClient.rerank (batch_size=100)"

    def extra_cpu(name: str, reference: str, call: float) -> str:
        extra = cpu_med[name] - cpu_med[reference]
        return f"{fmt(med[name] / call)} (CPU: {extra * 1000:+.2f} ms, {extra / call:+.1%} of the call)"

    report += (
        "\nWall-time ratios within a few percent of 1 are noise on this machine; the CPU column is not: "
        "what each layer adds is its CPU time per call, over the call's wall time.\n"
    )
    headlines = [
        (
            "RerankClient.score / one raw POST (100 docs)",
            extra_cpu(score, raw_keep_alive, baseline),
            "<= 1.03",
        )
    ]
    headlines += [
        (f"{name.split('.')[0]} / RerankClient.rerank", extra_cpu(name, rerank, core), "<= 1.02")
        for name in adapters
    ]
    return Result("client_overhead", report, data, headlines)


def parser() -> argparse.ArgumentParser:
    return common_parser(__doc__.splitlines()[0] if __doc__ else "")


def main(argv: list[str] | None = None) -> None:
    cli(run, parser(), argv)


if __name__ == "__main__":
    main()
