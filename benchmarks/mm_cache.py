"""vLLM's multimodal processor cache on a Qwen3-VL reranker: what a hit saves, what it holds.

vLLM keeps each processed image (the image processor's output, keyed by a hash of the image)
in its multimodal processor cache (``--mm-processor-cache-gb``, 4 GiB by default, LRU, one
copy in the engine core); the server's ``vllm:mm_cache_queries`` / ``vllm:mm_cache_hits``
counters (``/metrics``, in images) say whether a request's images were found there. The
client sends an identical image as byte-identical data URLs, so a page that comes back under a
new query is found. This benchmark measures, on one server, for ``--pages`` page images
(800x1000 and 1240x1754 renders, ~775 and ~1,800 image tokens once resized by the official
rules), each posted as one ``/v1/score`` call under a fresh query (so no prefix-cache block is
shared between passes):

* **first sight**: pages the server has not seen (cache misses);
* **repeat**: the same pages again (hits);
* **after reset**: the same pages after ``POST /reset_mm_cache`` (misses again: what a server
  without the cache, ``--mm-processor-cache-gb 0``, pays on every call).

It reports the seconds per call, the cache counters' deltas and the server's resident memory
(API process and engine core together) after each pass: the cache's cost in memory. The model
is the tiny test fixture by default (its compute is nothing, so the pipeline around it shows),
or Qwen3-VL-Reranker-2B's widths cut to ``--text-layers`` / ``--vision-layers``.

    .venv/bin/python benchmarks/mm_cache.py [--quick] [--pages N] [--cache-gb X]

Results go to ``benchmarks/results/mm_cache.{md,json}`` (``--quick``: to the benchmark cache).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import (
    Result,
    cache_dir,
    cli,
    common_parser,
    corpus,
    fmt,
    header,
    md_table,
    median,
    mm_cache_counters,
    serve,
    server_python,
    serving,
    vl_checkpoint,
)
from _images import page_files

from qwen3_vllm_rerank import Image
from qwen3_vllm_rerank.images import prepare_image
from qwen3_vllm_rerank.prompt import vl_document_param, vl_query_param

RESULTS = Path(__file__).resolve().parent / "results"
PASSES = ("first sight", "repeat", "after reset")


def server_rss_gb(pid: int) -> float:
    """Resident memory of the server process and its children (engine core, workers), GB."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in (root, *root.children(recursive=True)):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 1e9


def run(args: argparse.Namespace) -> Result:
    reps = args.reps or (1 if args.quick else 3)
    pages = 4 if args.quick else args.pages
    python = server_python(args.server_python)
    layers = args.text_layers is not None or args.vision_layers is not None
    ckpt = vl_checkpoint(
        text_layers=args.text_layers or (1 if layers else None),
        vision_layers=args.vision_layers or (1 if layers else None),
        dtype="bfloat16" if layers else "float32",
    )
    paragraphs = corpus(60, min_chars=200, max_chars=700, whole=True)
    flag = ["--mm-processor-cache-gb", str(args.cache_gb)] if args.cache_gb is not None else []
    report = header(
        "vLLM's multimodal processor cache on a Qwen3-VL reranker",
        python,
        {
            "checkpoint": ckpt.path.name,
            "pages": f"{pages} per call, 800x1000 and 1240x1754 renders in turn, prepared by the client "
            "(untimed) and posted by hand as one /v1/score call",
            "cache": f"--mm-processor-cache-gb {args.cache_gb}"
            if args.cache_gb is not None
            else "vLLM's default (4 GiB)",
            "repetitions": f"{reps}, fresh pages each time; a fresh query on every call",
        },
    )
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    server = serve(
        ckpt, python, dtype=None, max_model_len=8192, extra_args=flag, env=env, log_name="mm-cache"
    )
    seconds: dict[str, list[float]] = {name: [] for name in PASSES}
    deltas: dict[str, list[dict[str, float]]] = {name: [] for name in PASSES}
    rss: dict[str, list[float]] = {name: [] for name in PASSES}
    salt = iter(range(1, 10_000))
    tokens = 0
    with tempfile.TemporaryDirectory(prefix="qwen3-bench-mm-") as tmp, serving({"vl": server}):
        url, model = server.base_url, server.served_model_name
        process = server.process
        idle_rss = server_rss_gb(process.pid) if process else float("nan")
        reset_status = "not tried"
        with httpx.Client(timeout=1800.0) as http:

            def call(urls: list[str]) -> float:
                body = {
                    "model": model,
                    "text_1": vl_query_param(f"[{next(salt):04d}] a page with a chart of closing prices"),
                    "text_2": [vl_document_param("", [u]) for u in urls],
                }
                start = time.perf_counter()
                response = http.post(f"{url}/v1/score", json=body)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                return elapsed

            call([prepare_image(Image(p)).url for p in page_files(2, 999, Path(tmp) / "warm", paragraphs)])
            for rep in range(reps):
                files = page_files(pages, 100 + rep, Path(tmp) / f"rep-{rep}", paragraphs)
                prepared = [prepare_image(Image(p)) for p in files]
                tokens = sum(p.tokens for p in prepared)
                urls = [p.url for p in prepared]
                for name in PASSES:
                    if name == "after reset":
                        reset = http.post(f"{url}/reset_mm_cache")
                        reset_status = f"HTTP {reset.status_code}"
                        if reset.status_code != 200:
                            continue
                    before = mm_cache_counters(url)
                    seconds[name].append(call(urls))
                    after = mm_cache_counters(url, before["queries"] + pages)
                    deltas[name].append({k: after[k] - before[k] for k in after})
                    if process:
                        rss[name].append(server_rss_gb(process.pid))
    rows = []
    first = median(seconds["first sight"])
    for name in PASSES:
        if not seconds[name]:
            continue
        queries = sum(d["queries"] for d in deltas[name])
        hits = sum(d["hits"] for d in deltas[name])
        rows.append(
            [
                name,
                fmt(median(seconds[name])),
                fmt(pages / median(seconds[name])),
                fmt(first / median(seconds[name])),
                f"{hits:.0f} / {queries:.0f}",
                fmt(max(rss[name])) if rss[name] else "-",
            ]
        )
    report += (
        f"Server resident memory before the first page: {fmt(idle_rss)} GB. {tokens} image tokens per call. "
        f"POST /reset_mm_cache: {reset_status}.\n\n"
    )
    report += md_table(
        ["pass", "median s per call", "pages/s", "vs first sight", "cache hits / lookups", "server RSS GB"],
        rows,
    )
    data: dict[str, Any] = {
        "seconds": seconds,
        "counter_deltas": deltas,
        "rss_gb": rss,
        "idle_rss_gb": idle_rss,
        "pages": pages,
        "image_tokens_per_call": tokens,
        "cache_gb": args.cache_gb,
        "checkpoint": ckpt.path.name,
        "reset": reset_status,
    }
    headlines = []
    if seconds["repeat"]:
        headlines.append(
            (
                f"vLLM mm cache: repeat / first sight, {pages} pages per call ({ckpt.path.name})",
                fmt(first / median(seconds["repeat"])),
                "",
            )
        )
    return Result("mm_cache", report, data, headlines)


def parser() -> argparse.ArgumentParser:
    result = common_parser(__doc__.splitlines()[0] if __doc__ else "")
    result.add_argument("--pages", type=int, default=16, help="page images per call")
    result.add_argument(
        "--cache-gb", type=float, default=None, help="--mm-processor-cache-gb for the server (vLLM's default)"
    )
    result.add_argument("--text-layers", type=int, default=None, help="2B widths, text layers")
    result.add_argument("--vision-layers", type=int, default=None, help="2B widths, vision layers")
    result.add_argument("--out", type=Path, default=None, help="where to write the results")
    return result


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    result = cli(run, parser(), argv)
    out = args.out or (cache_dir() / "quick-results" if args.quick else RESULTS)
    result.save(out)
    print(f"results written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
