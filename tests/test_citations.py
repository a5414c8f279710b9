"""Every path, test id and link the prose cites exists (fast tier).

The README, SECURITY.md, the adapters' READMEs, the deploy and benchmark READMEs and the docs
site cite files (``src/qwen3_vllm_rerank/serve/_plan.py``), tests (``serve/test_plan.py::test_x``,
relative to a test tree) and relative links. A moved file or a renamed test makes one of them
stale; this test names it.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_TREES = (ROOT / "tests", *sorted(p for p in (ROOT / "integrations").glob("*/tests") if p.is_dir()))
TOP_LEVEL = ("tests", "src", "integrations", "benchmarks", "examples", "deploy", "scripts", "docs", ".ci")
# Folders of a test tree that prose names relative to it ("serve/test_plan.py::test_x").
TEST_DIRS = (
    "client",
    "images",
    "serve",
    "convert",
    "e2e",
    "compat",
    "support",
    "testing",
    "unit_tests",
    "integration_tests",
)

_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_TOKEN = re.compile(r"[A-Za-z0-9_./\[\]-]+(?:::[A-Za-z0-9_\[\].-]+)*")


def documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "deploy/kubernetes/README.md"]
    found += sorted((ROOT / "integrations").glob("*/README.md"))
    found += sorted((ROOT / "benchmarks/results").glob("*.md"))
    found += sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    return [path for path in found if path.is_file()]


@functools.cache
def _names(path: Path) -> frozenset[str]:
    """``name`` and ``Class::name`` for every function and class in a test file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}::{item.name}")
    return frozenset(names)


def _candidates(path_text: str, document: Path) -> list[Path]:
    """Where a cited path may be: from the root, beside the citing document, in the package
    (``client/_options.py``) or in a test tree (``serve/test_plan.py``)."""
    path_text = path_text.rstrip("/")
    first = path_text.split("/", 1)[0]
    near = [document.parent / path_text]
    if first in TOP_LEVEL or path_text in ("README.md", "SECURITY.md", "pyproject.toml", "conftest.py"):
        return [ROOT / path_text, *near]
    if "/" not in path_text and first.startswith("test_") and path_text.endswith(".py"):
        return [found for tree in TEST_TREES for found in tree.rglob(path_text)] or near  # a bare file name
    if first in TEST_DIRS:
        return [*(tree / path_text for tree in TEST_TREES), ROOT / "src/qwen3_vllm_rerank" / path_text, *near]
    return []


def _problem(token: str, document: Path) -> str | None:
    """Why the cited ``token`` does not exist, or ``None`` when it does (or is no citation)."""
    path_text, _, test = token.partition("::")
    if "://" in token or not path_text or "<" in token:
        return None
    candidates = _candidates(path_text, document)
    if not candidates:
        return None
    existing = [path for path in candidates if path.exists()]
    if not existing:
        return f"{path_text} does not exist"
    if test:
        test = re.sub(r"\[[^\]]*\]", "", test)  # a parametrised id
        if not any(path.suffix == ".py" and test in _names(path) for path in existing):
            return f"{path_text} has no test {test}"
    return None


def citations(document: Path) -> list[tuple[int, str]]:
    cited: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for span in _CODE.findall(line):
            cited += [(number, token) for token in _TOKEN.findall(span)]
    return cited


#: Pages the docs site takes from elsewhere in the repository (docs/hooks.py, ``on_files``).
DOCS_PAGES = {"security.md": ROOT / "SECURITY.md", "performance": ROOT / "benchmarks/results"}


def _target(document: Path, target: str) -> Path:
    if document.is_relative_to(ROOT / "docs"):
        first, _, rest = target.partition("/")
        if first in DOCS_PAGES:
            return DOCS_PAGES[first] / rest
    return document.parent / target


def links(document: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
        for target in _LINK.findall(line):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
                found.append((number, target.split("#", 1)[0]))
    return found


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_path_and_test_exists(document: Path) -> None:
    stale = [
        f"line {n}: `{token}`: {why}"
        for n, token in citations(document)
        if (why := _problem(token, document))
    ]
    assert not stale, f"{document.relative_to(ROOT)} cites what does not exist:\n" + "\n".join(stale)


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_exists(document: Path) -> None:
    broken = [
        f"line {n}: {target}"
        for n, target in links(document)
        if target and not _target(document, target).exists()
    ]
    assert not broken, f"{document.relative_to(ROOT)} links to what does not exist:\n" + "\n".join(broken)


def test_the_checker_finds_a_stale_citation(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text(
        "See `serve/test_plan.py::test_no_such_test`, `tests/nowhere.py` and "
        "`serve/test_plan.py`; not `Qwen/Qwen3-Reranker-0.6B` nor `http://x/tests/a.py`.\n",
        encoding="utf-8",
    )
    problems = [why for _, token in citations(document) if (why := _problem(token, document))]
    assert problems == ["serve/test_plan.py has no test test_no_such_test", "tests/nowhere.py does not exist"]


def test_every_security_guarantee_names_its_test() -> None:
    """Each row of SECURITY.md's guarantee tables names at least one test by its id."""
    rows = [
        line
        for line in (ROOT / "SECURITY.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and not line.startswith(("| Defence", "| Guarantee", "|---", "| ---"))
    ]
    assert rows, "SECURITY.md has guarantee tables"
    untested = [row[:80] for row in rows if "::test_" not in row]
    assert not untested, "guarantees without a test id:\n" + "\n".join(untested)
