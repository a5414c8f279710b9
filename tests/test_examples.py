"""The examples run as a user runs them, against the session's vLLM server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .fixtures import Served

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OPTIONS = ["--candidates", "12", "--top-n", "4"]
RESULT_LINE = re.compile(r"^\s*(\d+)\. (\d\.\d{4})  \[(\w+)\] .+\.\.\.$")


@pytest.mark.parametrize(
    ("script", "extra_line"),
    [
        ("client_rerank.py", "keyword match kept 12 paragraphs"),
        ("langchain_rerank.py", "context for the LLM"),
        ("llama_index_rerank.py", "aquery returned the same nodes: True"),
    ],
)
def test_example_runs_against_a_server(served: Served, script: str, extra_line: str) -> None:
    query = "What happens when a with statement's body raises an exception?"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--base-url", served.base_url, "--query", query, *OPTIONS],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"query: {query}"
    ranked = [m for m in map(RESULT_LINE.match, lines) if m]
    assert [int(m.group(1)) for m in ranked] == [1, 2, 3, 4]
    scores = [float(m.group(2)) for m in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert extra_line in result.stdout
    assert "RANDOM weights" not in result.stderr, "with --base-url no server is started"


def test_demo_prints_a_ranked_table(served: Served) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), "--base-url", served.base_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"^\s+\d+\s+\d\.\d{4}\s", line)]
    assert [int(row[0]) for row in rows] == list(range(1, 11))
    scores = [float(row[1]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert "NOTE: these weights are random" not in result.stdout  # a user's server: no claim about it
