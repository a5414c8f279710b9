"""Offline reranking: ``rerank_dataset(model=...)`` on Ray Data vs a ``RerankClient`` loop, on the same rows.

``N_QUERIES`` queries x ``N_DOCS`` documents (real paragraphs), measured in one run:

* **client loop**: what a user writes by hand today: one ``RerankClient`` against one ``VLLMServer``
  (started beforehand, untimed), ``client.score(query, documents)`` for each query in turn (sync,
  sequential); fresh queries on every repetition, so no prefix cache helps across repetitions;
* **engine mode**: ``rerank_dataset(ds, model=CHECKPOINT)`` on a local Ray cluster (``num_cpus=2``):
  Ray's vLLM stage with the flags ``plan_launch`` chooses, the rows rendered exactly as the client
  renders them, streamed with ``iter_batches``. Timed from the call to the last row, **engine start
  included** (what a user waits), and from the first output batch to the last: the rows after the first
  batch over that time is the engine's steady docs/s, what a long run approaches (the start, ~60 s
  here, is paid once per worker).

Both score the same checkpoint in float32 (the engine's max |score - client score| is reported). Ray's
stage needs ray, vLLM and this library in one interpreter, so the engine runs in a child process
under the server's interpreter (this script with ``--engine-child``).

    .venv/bin/python benchmarks/batch_throughput.py [--quick] [--reps N]

The server's interpreter: ``--server-python``, ``$QWEN3_VLLM_RERANK_SERVER_PYTHON`` or ``.venv-vllm``.
Results go to ``benchmarks/results/batch_throughput.md`` (``--quick``: the cache's ``quick-results``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
N_QUERIES = 32
N_DOCS = 64
ENGINE_BATCH = 64
#: Bounds the child (one engine start, ~60 s here, and the rows).
ENGINE_TIMEOUT_S = 900


def _rows(queries_: list[str], docs: list[str]) -> list[dict[str, Any]]:
    return [
        {"query": q, "document": d, "n": i * len(docs) + j}
        for i, q in enumerate(queries_)
        for j, d in enumerate(docs)
    ]


def engine_child(settings_path: str, out_path: str) -> None:
    """Under the server's interpreter: the rows streamed through the engine mode in a local Ray cluster."""
    import ray

    from qwen3_vllm_rerank.batch import rerank_dataset

    settings = json.loads(Path(settings_path).read_text())
    rows, model, args = settings["rows"], settings["model"], settings["extra_args"]
    ray.init(address="local", num_cpus=2, object_store_memory=300 * 1024**2, include_dashboard=False)
    frames: list[Any] = []
    try:
        start = time.perf_counter()
        scored = rerank_dataset(
            ray.data.from_items(rows), model=model, extra_args=args, batch_size=ENGINE_BATCH
        )
        first = 0.0
        for frame in scored.iter_batches(batch_size=None, batch_format="pandas"):
            frames.append(frame)
            if len(frames) == 1:
                first = time.perf_counter()
        end = time.perf_counter()
    finally:
        ray.shutdown()
    import pandas as pd

    out = pd.concat(frames)
    timings = {"total": end - start, "first": first - start, "after_first": end - first}
    scores = dict(zip(out["n"].tolist(), out["score"].tolist(), strict=True))
    errors = int(out["rerank_error"].notna().sum())
    rest = len(out) - len(frames[0])
    Path(out_path).write_text(
        json.dumps({"timings": timings, "scores": scores, "errors": errors, "rest": rest})
    )


def run(args: argparse.Namespace) -> Any:
    from _common import (
        Result,
        checkpoint,
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

    from qwen3_vllm_rerank import RerankClient

    reps = args.reps or (1 if args.quick else 3)
    n_queries, n_docs = (8, 32) if args.quick else (N_QUERIES, N_DOCS)
    python = server_python(args.server_python)
    ckpt = checkpoint("tiny", "float32")
    docs = corpus(n_docs)
    rows = _rows(queries(n_queries, salt=3000), docs)
    total = len(rows)
    workload = {
        "checkpoint": f"random {ckpt.shape} Qwen3 ({ckpt.dtype}), both sides --dtype float32",
        "rows": f"{n_queries} queries x {describe(docs)} = {total} rows",
        "client loop": f"{reps} repetitions, fresh queries each (the first one's are the engine's rows)",
        "engine": f"batch_size={ENGINE_BATCH}, one local Ray cluster (num_cpus=2), one engine per call",
    }
    report = header("Batch throughput: Ray Data engine mode vs a RerankClient loop", python, workload)

    loop_times: list[float] = []
    reference: dict[int, float] = {}
    server = serve(ckpt, python, log_name="batch_throughput")
    with serving({"server": server}) as servers, RerankClient(servers["server"].base_url) as client:
        client.score("a warm-up query", docs[:2])  # the client learns about the server, untimed
        for rep in range(reps):
            chosen = rows if rep == 0 else _rows(queries(n_queries, salt=3000 + 100 * rep), docs)
            start = time.perf_counter()
            for i in range(n_queries):
                batch = chosen[i * n_docs : (i + 1) * n_docs]
                scores = client.score(batch[0]["query"], [r["document"] for r in batch])
                if rep == 0:
                    reference.update((r["n"], s) for r, s in zip(batch, scores, strict=True))
            loop_times.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as work:
        settings, out = Path(work) / "settings.json", Path(work) / "out.json"
        settings.write_text(
            json.dumps({"rows": rows, "model": str(ckpt.path), "extra_args": ["--dtype", "float32"]})
        )
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        log = Path(work) / "engine.log"
        with log.open("wb") as sink:
            code = subprocess.run(
                [python, __file__, "--engine-child", str(settings), str(out)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=ENGINE_TIMEOUT_S,
            ).returncode
        if code != 0:
            raise SystemExit(f"the engine run failed ({code}):\n{log.read_text(errors='replace')[-4000:]}")
        engine = json.loads(out.read_text())

    timings = engine["timings"]
    engine_scores = {int(n): s for n, s in engine["scores"].items()}
    worst = max(abs(engine_scores[n] - reference[n]) for n in reference)
    loop = median(loop_times)
    steady = engine["rest"] / max(timings["after_first"], 1e-9)
    table = md_table(
        ["case", "seconds", "docs/s", "vs client loop"],
        [
            ["RerankClient loop (sync, one call per query)", fmt(loop), fmt(total / loop), "1.00x"],
            [
                "rerank_dataset(model=), engine start included",
                fmt(timings["total"]),
                fmt(total / timings["total"]),
                f"{loop / timings['total']:.2f}x",
            ],
            [
                f"rerank_dataset(model=), steady (the {engine['rest']} rows after the first batch)",
                fmt(timings["after_first"]),
                fmt(steady),
                f"{steady / (total / loop):.2f}x",
            ],
        ],
    )
    notes = (
        f"\n- engine mode's first output batch after {fmt(timings['first'])} s (Ray's workers, the engine's "
        "start, the first batch)\n"
        f"- engine scores vs the client's on the same {total} rows: max |diff| {worst:.2g}; "
        f"rows with rerank_error: {engine['errors']}\n"
        f"- client loop runs: {', '.join(fmt(t) for t in loop_times)} s\n"
        "- the server is stopped before the engine runs, but on this shared 2-core CPU machine the engine "
        "competes with Ray's own processes for the cores; the engine mode's case is a cluster (one engine "
        "per GPU, Ray sharding the rows), which one machine cannot show\n"
    )
    data = {"loop_s": loop_times, "engine_s": timings, "rows": total, "max_abs_diff": worst}
    headlines = [
        (
            "docs/s, rerank_dataset(model=) steady / RerankClient loop (same rows)",
            f"{steady / (total / loop):.2f}",
            "",
        ),
        ("max score difference, rerank_dataset(model=) vs RerankClient", f"{worst:.2g}", ""),
    ]
    return Result("batch_throughput", report + table + notes, data, headlines)


def parser() -> argparse.ArgumentParser:
    from _common import common_parser

    p = common_parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--out", type=Path, default=None, help="where to write the results")
    return p


def main(argv: list[str] | None = None) -> None:
    from _common import cache_dir, cli

    args = parser().parse_args(argv)
    result = cli(run, parser(), argv)
    out = args.out or (cache_dir() / "quick-results" if args.quick else RESULTS)
    result.save(out)
    print(f"results written to {out}", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--engine-child"]:
        engine_child(sys.argv[2], sys.argv[3])
    else:
        main()
