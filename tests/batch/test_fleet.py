"""rerank_dataset(base_url=...) on a local Ray cluster against the session's real vLLM server: scores equal
RerankClient's, a poisoned row fails alone, a worker killed mid-run is retried without losing or doubling a
row, a rerun with the same write_to scores only what is missing, and the batch command runs through
add_parser/run."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import ray

from qwen3_vllm_rerank import RerankClient
from qwen3_vllm_rerank.batch import rerank_dataset
from qwen3_vllm_rerank.batch._command import add_parser, run
from tests.support.fixtures import Served
from tests.support.processes import descendants, read_alive

ROWS = [
    {"query": f"what do cats eat {i % 3}", "document": f"document {i}: cats eat fish <|im_end|> {i}", "n": i}
    for i in range(24)
]


def _reference(served: Served, rows: list[dict[str, object]]) -> dict[int, float]:
    with RerankClient(served.base_url) as client:
        return {int(r["n"]): client.score(str(r["query"]), [str(r["document"])])[0] for r in rows}  # type: ignore[call-overload]


def test_scores_equal_the_clients_and_a_poisoned_row_fails_alone(served: Served, cluster: None) -> None:
    poisoned = [
        {"query": "what do cats eat", "document": None, "n": 100},
        {"query": None, "document": "x", "n": 101},
    ]
    out = rerank_dataset(
        ray.data.from_items(ROWS + poisoned), base_url=served.base_url, batch_size=8
    ).to_pandas()
    assert sorted(out["n"]) == [r["n"] for r in ROWS] + [100, 101]
    reference = _reference(served, ROWS)
    good = out[out["n"] < 100]
    assert good["rerank_error"].isna().all()
    for n, score in zip(good["n"], good["score"], strict=True):
        assert score == pytest.approx(reference[n], abs=1e-6)
    bad = out[out["n"] >= 100].set_index("n")
    assert bad["score"].isna().all()
    assert "'document' column holds null" in bad.loc[100, "rerank_error"]
    assert "'query' column holds null" in bad.loc[101, "rerank_error"]


def _fleet_workers() -> list[psutil.Process]:
    """The FleetScorer actors' processes (Ray names its workers' processes after the UDF)."""
    workers = descendants(os.getpid())
    titles = read_alive(workers, lambda p: (p, " ".join(p.cmdline())))
    return [process for process, title in titles if "FleetScorer" in title]


@pytest.mark.timeout(600)  # a run that hangs between batches (the loop's own deadline needs batches)
def test_a_worker_killed_mid_run_is_retried_without_losing_or_doubling_a_row(
    served: Served, cluster: None
) -> None:
    rows = [{**ROWS[i % len(ROWS)], "n": i} for i in range(300)]
    # One row per batch: ~300 requests, long enough for the actor to be killed with work left to do.
    scored = rerank_dataset(ray.data.from_items(rows), base_url=served.base_url, batch_size=1)
    deadline = time.monotonic() + 300
    batches: list[pd.DataFrame] = []
    killed: int | None = None
    rows_before_kill = 0
    replacements: set[int] = set()
    for batch in scored.iter_batches(batch_size=None, batch_format="pandas"):
        assert time.monotonic() < deadline, "the run stalled after its worker was killed"
        batches.append(batch)
        workers = _fleet_workers()
        if killed is None and workers:
            killed = workers[0].pid
            rows_before_kill = sum(len(b) for b in batches)
            workers[0].kill()  # SIGKILL: no clean-up, as the OOM killer or a lost node would do it
        elif killed is not None:
            replacements |= {w.pid for w in workers if w.pid != killed}
    assert killed is not None, "no FleetScorer worker process was found while the run was in progress"
    assert rows_before_kill < len(rows)
    assert replacements, "Ray did not start a new worker after the kill: the kill came after the work"
    out = pd.concat(batches)
    assert sorted(out["n"]) == list(range(len(rows)))  # none lost, none doubled
    assert out["rerank_error"].isna().all()
    clean = rerank_dataset(ray.data.from_items(rows), base_url=served.base_url).to_pandas()
    expected = dict(zip(clean["n"], clean["score"], strict=True))
    for n, score in zip(out["n"], out["score"], strict=True):
        assert score == pytest.approx(expected[n], abs=1e-6), n


def test_a_rerun_with_the_same_directory_scores_only_what_is_missing(
    served: Served, cluster: None, tmp_path: Path
) -> None:
    first = rerank_dataset(
        ray.data.from_items(ROWS[:10]), base_url=served.base_url, write_to=tmp_path
    ).to_pandas()
    assert sorted(first["n"]) == list(range(10))
    files = set(tmp_path.glob("*.parquet"))
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 cut short by a killed driver")  # an interrupted write
    out = rerank_dataset(ray.data.from_items(ROWS), base_url=served.base_url, write_to=tmp_path).to_pandas()
    assert sorted(out["n"]) == list(range(24))  # none lost, none doubled
    assert out["rerank_key"].is_unique
    assert (tmp_path / "cut.parquet.incomplete").exists()
    new = pd.concat(pd.read_parquet(p) for p in set(tmp_path.glob("*.parquet")) - files)
    assert sorted(new["n"]) == list(range(10, 24))  # the second run scored only the missing rows


def test_the_batch_command_scores_a_json_lines_file(served: Served, cluster: None, tmp_path: Path) -> None:
    source = tmp_path / "pairs.jsonl"
    pd.DataFrame(ROWS[:6]).rename(columns={"query": "q", "document": "text"}).to_json(
        source, orient="records", lines=True
    )
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "batch",
            str(source),
            str(tmp_path / "out"),
            "--base-url",
            served.base_url,
            "--query-column",
            "q",
            "--document-column",
            "text",
        ]
    )
    assert run(args) == 0
    out = pd.read_parquet(tmp_path / "out")
    reference = _reference(served, ROWS[:6])
    assert sorted(out["n"]) == list(range(6))
    for n, score in zip(out["n"], out["score"], strict=True):
        assert score == pytest.approx(reference[n], abs=1e-6)
