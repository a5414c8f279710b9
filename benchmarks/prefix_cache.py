"""VLLMServer's serving defaults vs vLLM's own: docs/s and prefix-cache hits on the same workload.

Every document of a query is scored as ``shared prefix + document``; the prefix (system
prompt, instruction, query) is the same for all of them. vLLM reuses the KV cache of
whole shared blocks, so the block size decides whether anything is reused (on CPU vLLM's
default block is 128 tokens). Two servers of the same checkpoint run side by side, one
started with this library's defaults, one with vLLM's; the workloads alternate between
them. The hit rate is read from each server's ``/metrics`` (prompt tokens found in the
prefix cache / prompt tokens looked up). Goal: >= 1.3x docs/s with a ~150-token shared
prefix and 100 short documents.

    python benchmarks/prefix_cache.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

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
    prefix_cache_counters,
    queries,
    serve,
    server_python,
    serving,
)

from qwen3_vllm_rerank import RerankClient
from qwen3_vllm_rerank.prompt import DEFAULT_INSTRUCTION, format_query

N_DOCS = 100
#: Pads the shared prefix to ~150 tokens, like a detailed domain instruction does.
LONG_INSTRUCTION = (
    "Given a developer's question about the Python programming language, retrieve passages of the "
    "official reference documentation that answer it directly. Prefer passages that state the exact "
    "rule, syntax or behaviour asked about, including edge cases and version differences, over "
    "passages that only mention the same keywords or describe a related feature in passing; ignore "
    "passages about other programming languages, third-party libraries or historical versions"
)
SERVERS = ("VLLMServer defaults", "vLLM defaults")


def _prefix_tokens(tokenizer_dir: str, instruction: str) -> int:
    """Tokens shared by every prompt of one query (up to and including ``<Document>:``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shared = format_query(queries(1)[0], instruction) + "<Document>:"
    return len(tokenizer.encode(shared, add_special_tokens=False))


def run(args: argparse.Namespace) -> Result:
    reps = args.reps or (2 if args.quick else 4)
    python = server_python(args.server_python)
    # Two servers run side by side: two 0.6B ones do not fit beside other work in 24 GB.
    ckpt = checkpoint("tiny", "float32") if args.quick else checkpoint(args.shape, "bfloat16")
    docs = corpus(N_DOCS, min_chars=80, max_chars=160)
    workloads = {"default instruction": DEFAULT_INSTRUCTION, "~150-token prefix": LONG_INSTRUCTION}
    prefix_len = {name: _prefix_tokens(str(ckpt.path), instr) for name, instr in workloads.items()}
    workload = {
        "checkpoint": f"random {ckpt.shape} Qwen3 ({ckpt.dtype})",
        "call": f"one query x {describe(docs)}, one request",
        "shared prefix": ", ".join(f"{name}: {n} tokens" for name, n in prefix_len.items()),
        "repetitions": f"{reps} per workload and server, interleaved; a fresh query per call",
    }
    report = header("Prefix cache: VLLMServer defaults vs vLLM defaults", python, workload)
    planned = {
        SERVERS[0]: serve(ckpt, python, log_name="prefix-cache-library"),
        SERVERS[1]: serve(ckpt, python, library_defaults=False, log_name="prefix-cache-vllm"),
    }
    salt = iter(range(3000, 10**6))
    rows: list[list[object]] = []
    headlines: list[tuple[str, str, str]] = []
    data: dict[str, object] = {"prefix_tokens": prefix_len, "reps": reps, "docs": N_DOCS}
    with serving(planned) as servers:
        flags = {
            name: " ".join(s.plan.args[s.plan.args.index("--max-model-len") :])
            for name, s in servers.items()
            if s.plan
        }
        clients = {
            name: RerankClient(s.base_url, batch_size=N_DOCS, timeout=900.0) for name, s in servers.items()
        }
        for workload_name, instruction in workloads.items():

            def case(name: str, instruction: str = instruction) -> Callable[[int], object]:
                return lambda rep: clients[name].score(
                    queries(1, salt=next(salt))[0], docs, instruction=instruction
                )

            cases = {name: case(name) for name in servers}
            for name in servers:  # warm-up outside the counted window
                cases[name](-1)
            before = {name: prefix_cache_counters(s.base_url) for name, s in servers.items()}
            times = interleave(cases, reps, warmup=0)
            after = {name: prefix_cache_counters(s.base_url) for name, s in servers.items()}
            speed = {name: N_DOCS / median(times[name]) for name in servers}
            for name in servers:
                looked_up = after[name][0] - before[name][0]
                hit = (after[name][1] - before[name][1]) / looked_up if looked_up else 0.0
                rows.append(
                    [
                        workload_name,
                        name,
                        fmt(median(times[name])),
                        fmt(speed[name]),
                        f"{hit:.1%}",
                        fmt(speed[name] / speed[SERVERS[1]]),
                    ]
                )
                if name == SERVERS[0]:
                    headlines.append(
                        (
                            f"docs/s, VLLMServer / vLLM defaults, {workload_name} "
                            f"({prefix_len[workload_name]} tokens)",
                            f"{fmt(speed[name] / speed[SERVERS[1]])} (hit rate {hit:.0%})",
                            ">= 1.3" if "150" in workload_name else "",
                        )
                    )
                data[f"{workload_name} / {name}"] = {
                    "seconds": times[name],
                    "docs_per_s": speed[name],
                    "hit_rate": hit,
                }
        for client in clients.values():
            client.close()
    report += md_table(
        [
            "workload",
            "server",
            "median s per query",
            "docs/s",
            "prefix-cache hit rate",
            "docs/s vs vLLM defaults",
        ],
        rows,
    )
    report += "\nFlags after `--max-model-len` (the part that differs):\n\n"
    report += "".join(f"- {name}: `{flag}`\n" for name, flag in flags.items())
    return Result("prefix_cache", report, data, headlines)


def parser() -> argparse.ArgumentParser:
    p = common_parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--shape", choices=("0.6b-8layers", "0.6b"), default="0.6b-8layers", help="checkpoint shape"
    )
    return p


def main(argv: list[str] | None = None) -> None:
    cli(run, parser(), argv)


if __name__ == "__main__":
    main()
