"""Run the benchmarks, write ``benchmarks/results/``, plot throughput.

Runs client_overhead, concurrency, prefix_cache, vs_transformers, multimodal, vl_realistic and
batch_throughput in turn (each starts and stops its own server), writes ``results/<name>.md`` and
``.json`` for each (and ``results/<name>.png`` for a benchmark with its own ``plot``),
``results/throughput.png`` (docs/s and latency of AsyncRerankClient by batch size and
concurrency) and ``results/README.md`` (everything in one page: the headline table first). The
repository's README and the docs site link that page; neither copies a figure.

    python benchmarks/report.py [--quick] [--only NAME ...] [--summary-only]
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from pathlib import Path
from typing import Any

from _common import Result, md_table, setup_logging

BENCHMARKS = (
    "client_overhead",
    "concurrency",
    "prefix_cache",
    "vs_transformers",
    "multimodal",
    "vl_realistic",
    "batch_throughput",
)
#: Results another benchmark's mode writes (name -> the command that writes it), shown beside the others.
MODES = {"vl_encoder_cache": "vl_realistic.py --encoder-cache"}
#: Headlines a later result replaces until their own benchmark runs again: (result, measure) -> the result
#: that replaces it. vl_realistic's workload (c) ran before the plan sized vLLM's encoder cache.
SUPERSEDED = {("vl_realistic", "docs/s, repeated pass / first pass over the same pages"): "vl_encoder_cache"}
RESULTS = Path(__file__).resolve().parent / "results"


def plot(sweep: list[dict[str, Any]], path: Path, subtitle: str) -> None:
    """Docs/s and median per-query latency against max_concurrency, one line per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for batch_size in sorted({point["batch_size"] for point in sweep}):
        points = sorted((p for p in sweep if p["batch_size"] == batch_size), key=lambda p: p["concurrency"])
        x = [p["concurrency"] for p in points]
        left.plot(x, [p["docs_per_s"] for p in points], marker="o", label=f"batch_size={batch_size}")
        right.plot(x, [p["latency_s"] * 1000 for p in points], marker="o", label=f"batch_size={batch_size}")
    levels = sorted({point["concurrency"] for point in sweep})
    for axis, label in (
        (left, "documents / s (higher is better)"),
        (right, "median query latency, ms (lower is better)\nqueries all sent at once"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.minorticks_off()
        axis.set_xlabel("max_concurrency (requests in flight)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.set_ylim(bottom=0)
    left.legend(title="documents per request")
    fig.suptitle(f"AsyncRerankClient throughput and latency\n{subtitle}", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(results: list[Result], where: str = "benchmarks/results/") -> str:
    """The headline table, with links relative to ``where`` (the README's view of results/)."""
    names = {result.name for result in results}
    rows = []
    for result in results:
        for what, measured, goal in result.headlines:
            newer = SUPERSEDED.get((result.name, what))
            if newer in names:
                measured = f"{measured}, before the encoder cache was sized: see [{newer}]({where}{newer}.md)"
            rows.append([what, measured, goal or "-"])
    links = ", ".join(f"[{r.name}]({where}{r.name}.md)" for r in results)
    return (
        "\n"
        + md_table(["measure", "measured", "goal"], rows)
        + f"\nMeasured on {machine_line(results)} ({flags_line(results)}); full tables: {links}. "
        "Regenerate with `python benchmarks/report.py`.\n\n"
        + f"![AsyncRerankClient throughput and latency]({where}throughput.png)\n\n"
    )


def machine_line(results: list[Result]) -> str:
    for line in results[0].markdown.splitlines():
        if line.startswith("- machine: "):
            # "2 cores, <CPU>, GPU: none (<OS>); load ..." -> without the OS and the load
            return re.sub(r" \([^()]*\)$", "", line.removeprefix("- machine: ").split(";")[0])
    return "this machine"


def flags_line(results: list[Result]) -> str:
    """The CPU features that decide the dtype ("avx512_bf16 yes, amx_bf16 no, ..."), from a report."""
    for result in results:
        for line in result.markdown.splitlines():
            if line.startswith("- CPU flags: "):
                flags = line.removeprefix("- CPU flags: ").split(";")[0]
                present = [f.split()[0] for f in flags.split(", ") if f.endswith(" yes")]
                absent = [f.split()[0] for f in flags.split(", ") if f.endswith(" no")]
                return f"CPU flags: {', '.join(present) or 'none listed'}; not: {', '.join(absent) or '-'}"
    return "CPU flags not recorded"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--server-python", default=None)
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="run nothing: rewrite results/README.md from the saved results",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    common = ["--quick"] * args.quick + (
        ["--server-python", args.server_python] if args.server_python else []
    )
    common += ["--verbose"] * args.verbose

    for name in [] if args.summary_only else args.only:
        module = importlib.import_module(name)
        print(f"# running {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result: Result = module.cli(module.run, module.parser(), common)
        result.data["wall_seconds"] = time.perf_counter() - start
        result.save(RESULTS)
        if hasattr(module, "plot"):  # a benchmark's own figure
            module.plot(result, RESULTS / f"{name}.png")

    # Everything in results/, so that --only refreshes one benchmark and keeps the others.
    names = [*BENCHMARKS, *MODES]
    results = [Result.load(RESULTS, name) for name in names if (RESULTS / f"{name}.json").exists()]
    concurrency = next((r for r in results if r.name == "concurrency"), None)
    if concurrency is not None:
        subtitle = (
            f"{machine_line(results)}; {concurrency.data['queries']} queries x "
            f"{concurrency.data['docs']} documents, random tiny Qwen3 checkpoint"
        )
        plot(concurrency.data["sweep"], RESULTS / "throughput.png", subtitle)
    (RESULTS / "README.md").write_text(
        "# Benchmark results\n" + summary(results, where="") + "\n".join(r.markdown for r in results)
    )
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
