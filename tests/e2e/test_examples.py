"""The examples run as a user runs them, against the session's vLLM server."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qwen3_vllm_rerank import Content, Image, RerankClient
from tests.support.fixtures import Served

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OPTIONS = ["--candidates", "12", "--top-n", "4"]
RESULT_LINE = re.compile(r"^\s*(\d+)\. (\d\.\d{4})  \[(\w+)\] .+\.\.\.$")


@pytest.mark.parametrize(
    ("script", "extra_line"),
    [
        ("client_rerank.py", "keyword match kept 12 paragraphs"),
        ("langchain_rerank.py", "context for the LLM"),
        ("llama_index_rerank.py", "aquery returned the same nodes: True"),
        ("haystack_rerank.py", "run_async returned the same Documents: True"),
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


MULTIMODAL_LINE = re.compile(r"^\s*(\d+)\. (\d\.\d{4})  ((?:image|text|text\+image): .+)$")


def test_multimodal_example_ranks_real_images_with_the_servers_scores(vl_served: Served) -> None:
    query = "a chart of stock prices"
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "multimodal_rerank.py"),
            "--base-url",
            vl_served.base_url,
            "--query",
            query,
            "--top-n",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"query: {query}"
    assert "RANDOM weights" not in result.stderr, "with --base-url no server is started"
    split = lines.index("image query: grace_hopper.jpg; best documents:")
    by_text = [m.groups() for m in map(MULTIMODAL_LINE.match, lines[:split]) if m]
    by_image = [m.groups() for m in map(MULTIMODAL_LINE.match, lines[split:]) if m]

    # The printed rankings are the server's scores of the example's own documents, best first.
    spec = importlib.util.spec_from_file_location("multimodal_rerank", EXAMPLES / "multimodal_rerank.py")
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    labelled = example.documents()
    docs = [document for _, document in labelled]
    assert any(isinstance(d, Image) for d in docs)
    assert any(isinstance(d, Content) for d in docs)
    with RerankClient(vl_served.base_url) as client:
        for printed, expected in (
            (by_text, client.score(query, docs)),
            (by_image, client.score(Image(example.sample("grace_hopper.jpg")), docs)),
        ):
            best = sorted(zip(expected, (label for label, _ in labelled), strict=True), reverse=True)[:5]
            assert [int(rank) for rank, _, _ in printed] == [1, 2, 3, 4, 5]
            assert [label for _, _, label in printed] == [label for _, label in best]
            assert [float(score) for _, score, _ in printed] == pytest.approx([s for s, _ in best], abs=1e-4)


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
