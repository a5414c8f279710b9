"""Users get what the tests test: the four distributions, built and installed as a user installs them.

Builds every sdist and wheel (``python -m build``: the wheel is built from the sdist, so an sdist
missing a file fails here), checks their metadata with ``twine check --strict``, then installs each
adapter **from the built wheels only** (``pip --find-links`` to a directory holding nothing else; the
rest from the registry) into a fresh virtualenv and runs a real pipeline through it against a real
vLLM server, with an isolated interpreter outside the source tree.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest

import qwen3_vllm_rerank
from qwen3_vllm_rerank import RerankClient
from tests.support.corpus import pydoc_paragraphs
from tests.support.fixtures import Served

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = Path(__file__).parent / "wheel_pipelines"
VERSION = qwen3_vllm_rerank.__version__
QUERY = "How does the with statement call __enter__ and __exit__ on a context manager?"


@dataclass(frozen=True)
class Project:
    """One of the repository's distributions."""

    name: str
    directory: Path
    top_level: str  # the first path component of every file of its wheel, besides the .dist-info

    @property
    def stem(self) -> str:
        return self.name.replace("-", "_")


CORE = Project("qwen3-vllm-rerank", ROOT, "qwen3_vllm_rerank")
LANGCHAIN = Project(
    "langchain-qwen3-vllm-rerank", ROOT / "integrations" / "langchain", "langchain_qwen3_vllm_rerank"
)
LLAMA_INDEX = Project(
    "llama-index-postprocessor-qwen3-vllm-rerank", ROOT / "integrations" / "llama-index", "llama_index"
)
HAYSTACK = Project("qwen3-vllm-rerank-haystack", ROOT / "integrations" / "haystack", "haystack_integrations")
PROJECTS = (CORE, LANGCHAIN, LLAMA_INDEX, HAYSTACK)
#: Where each wheel's ``py.typed`` sits (under namespace packages for two of the adapters).
PY_TYPED = {
    CORE: "qwen3_vllm_rerank/py.typed",
    LANGCHAIN: "langchain_qwen3_vllm_rerank/py.typed",
    LLAMA_INDEX: "llama_index/postprocessor/qwen3_vllm_rerank/py.typed",
    HAYSTACK: "haystack_integrations/components/rankers/qwen3_vllm_rerank/py.typed",
}


@dataclass(frozen=True)
class Built:
    """Where the built files are: ``wheels`` holds the four wheels and nothing else."""

    dist: Path
    wheels: Path

    def wheel(self, project: Project) -> Path:
        return self.wheels / f"{project.stem}-{VERSION}-py3-none-any.whl"

    def sdist(self, project: Project) -> Path:
        return self.dist / f"{project.stem}-{VERSION}.tar.gz"


def _run(
    command: list[str],
    *,
    what: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``command``, log how long ``what`` took, fail the test with its output if it fails."""
    started = time.perf_counter()
    result = subprocess.run(
        command, input=stdin, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    logger.info("%s: %.1f s", what, time.perf_counter() - started)
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed ({result.returncode}): {' '.join(command)}\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """All sdists and wheels, built with the build backend each pyproject.toml declares."""
    dist = tmp_path_factory.mktemp("dist")
    for project in PROJECTS:
        # --no-isolation: the backend from this environment (checked against build-system.requires).
        _run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(project.directory)],
            what=f"build {project.name}",
        )
    wheels = tmp_path_factory.mktemp("wheels")
    for wheel in dist.glob("*.whl"):
        (wheels / wheel.name).hardlink_to(wheel)
    return Built(dist, wheels)


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        return HeaderParser().parsestr(
            archive.read(f"{wheel.name.split('-')[0]}-{VERSION}.dist-info/METADATA").decode()
        )


def _record(wheel: Path) -> dict[str, str]:
    """The wheel's RECORD: installed path -> hash."""
    with zipfile.ZipFile(wheel) as archive:
        rows = csv.reader(
            archive.read(f"{wheel.name.split('-')[0]}-{VERSION}.dist-info/RECORD").decode().splitlines()
        )
        return {path: digest for path, digest, _ in rows if digest}


def test_every_sdist_and_wheel_builds_and_passes_twine_check(built: Built) -> None:
    files = sorted(p.name for p in built.dist.iterdir())
    assert files == sorted([built.sdist(p).name for p in PROJECTS] + [built.wheel(p).name for p in PROJECTS])
    _run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(built.dist.iterdir()))],
        what="twine check",
    )


def test_one_version_and_the_adapters_require_exactly_that_core(built: Built) -> None:
    for project in PROJECTS:
        metadata = _metadata(built.wheel(project))
        assert metadata["Name"] == project.name
        assert metadata["Version"] == VERSION
        assert metadata["Requires-Python"] == ">=3.11"
        assert metadata["License-Expression"] == "Apache-2.0"
        assert metadata["Description-Content-Type"] == "text/markdown"
        assert project.name in metadata.get_payload()  # its own README, not the core's
    requires = {p: _metadata(built.wheel(p)).get_all("Requires-Dist") or [] for p in PROJECTS}
    assert f"qwen3-vllm-rerank=={VERSION}" in requires[LANGCHAIN]
    assert any(r.startswith("langchain-core") for r in requires[LANGCHAIN])
    assert f"qwen3-vllm-rerank=={VERSION}" in requires[LLAMA_INDEX]
    assert any(r.startswith("llama-index-core") for r in requires[LLAMA_INDEX])
    assert f"qwen3-vllm-rerank=={VERSION}" in requires[HAYSTACK]
    assert any(r.startswith("haystack-ai") for r in requires[HAYSTACK])
    # The core's extras pull the adapter distributions (whose exact pins keep the four in step).
    assert "langchain-qwen3-vllm-rerank; extra == 'langchain'" in requires[CORE]
    assert "llama-index-postprocessor-qwen3-vllm-rerank; extra == 'llama-index'" in requires[CORE]
    assert "qwen3-vllm-rerank-haystack; extra == 'haystack'" in requires[CORE]


def test_each_wheel_holds_its_own_package_and_nothing_else(built: Built) -> None:
    for project in PROJECTS:
        files = set(_record(built.wheel(project)))
        payload = {f for f in files if not f.split("/")[0].endswith(".dist-info")}
        assert payload, project.name
        assert {f.split("/")[0] for f in payload} == {project.top_level}, project.name
        assert PY_TYPED[project] in payload, project.name
    # PEP 420: installing the postprocessor must not shadow llama-index-core's namespace packages.
    llama_files = set(_record(built.wheel(LLAMA_INDEX)))
    assert "llama_index/__init__.py" not in llama_files
    assert "llama_index/postprocessor/__init__.py" not in llama_files
    # Nor the ranker the namespace packages that haystack-ai's integrations share (haystack_integrations/...).
    haystack_files = set(_record(built.wheel(HAYSTACK)))
    for level in (
        "haystack_integrations",
        "haystack_integrations/components",
        "haystack_integrations/components/rankers",
    ):
        assert f"{level}/__init__.py" not in haystack_files


@pytest.fixture(scope="module")
def documents() -> list[str]:
    paragraphs = pydoc_paragraphs()
    with_statement = [p.text for p in paragraphs if p.topic in {"with", "context-managers"}][:3]
    others = [p.text for p in paragraphs if p.topic in {"for", "while", "lambda"}][:4]
    return with_statement + others


def _fresh_venv(path: Path, requirements: list[str], built: Built) -> Path:
    """A new virtualenv with ``requirements`` installed; our distributions only from ``built.wheels``."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], what=f"venv {path.name}")
    python = path / "bin" / "python"
    # This environment's pip installs into the new one (no pip to bootstrap there), sharing its cache;
    # --no-compile halves the time (modules compile when first imported).
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile"]
    _run([*pip, "--find-links", str(built.wheels), *requirements], what=f"pip install into {path.name}")
    return python


def _installed_record(python: Path, distribution: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys;"
        "d = m.distribution(sys.argv[1]);"
        "print(json.dumps({str(f): f.hash.value for f in d.files if f.hash}))"
    )
    output = _run([str(python), "-I", "-c", code, distribution], what=f"RECORD of {distribution}")
    return {path: f"sha256={digest}" for path, digest in json.loads(output).items()}


@dataclass(frozen=True)
class Answer:
    """What a pipeline script printed: the ranking, and where it imported our packages from."""

    ranked: list[tuple[str, float]]
    files: dict[str, str]
    prefix: Path


def _run_pipeline(python: Path, script: str, request: dict[str, Any], cwd: Path) -> Answer:
    output = _run(
        [str(python), "-I", str(PIPELINES / script)],  # -I: no PYTHONPATH, no user site, no cwd
        what=script,
        stdin=json.dumps(request),
        cwd=cwd,
        # Haystack would send usage telemetry over the network otherwise; a test uses loopback only.
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "HF_HUB_OFFLINE": "1",
            "HAYSTACK_TELEMETRY_ENABLED": "False",
        },
    )
    answer = json.loads(output)
    return Answer([(i, s) for i, s in answer["ranked"]], answer["files"], Path(answer["prefix"]))


@pytest.mark.parametrize(
    ("adapter", "extra", "requirements", "script"),
    [
        # `pip install langchain-qwen3-vllm-rerank` (its wheel), which pulls the core.
        pytest.param(LANGCHAIN, None, ["langchain-classic>=1,<2"], "langchain_pipeline.py", id="langchain"),
        # `pip install "qwen3-vllm-rerank[llama-index]"` (the core's wheel), whose extra pulls the adapter.
        pytest.param(LLAMA_INDEX, "llama-index", [], "llama_index_pipeline.py", id="llama-index-via-extra"),
        # `pip install qwen3-vllm-rerank-haystack` (its wheel), which pulls the core and haystack-ai.
        pytest.param(HAYSTACK, None, [], "haystack_pipeline.py", id="haystack"),
    ],
)
def test_adapter_installed_from_its_wheel_runs_a_real_pipeline(
    adapter: Project,
    extra: str | None,
    requirements: list[str],
    script: str,
    built: Built,
    served: Served,
    documents: list[str],
    tmp_path: Path,
) -> None:
    wanted = f"{built.wheel(CORE)}[{extra}]" if extra else str(built.wheel(adapter))
    python = _fresh_venv(tmp_path / "venv", [wanted, *requirements], built)
    # Every file of ours that pip installed is the built wheel's, byte for byte (RECORD hashes).
    for project in (CORE, adapter):
        wheel_record = _record(built.wheel(project))
        installed = _installed_record(python, project.name)
        assert {path: installed.get(path) for path in wheel_record} == wheel_record, project.name
    work = tmp_path / "elsewhere"
    work.mkdir()
    request = {"base_url": served.base_url, "query": QUERY, "documents": documents}
    answer = _run_pipeline(python, script, request, work)
    assert answer.prefix == tmp_path / "venv"
    assert all(Path(f).is_relative_to(answer.prefix) for f in answer.files.values()), answer.files
    # Every document comes back, best first, scored as the core client scores it on the same server.
    with RerankClient(served.base_url) as client:
        expected = dict(zip(map(str, range(len(documents))), client.score(QUERY, documents), strict=True))
    assert dict(answer.ranked) == pytest.approx(expected, abs=1e-4)
    scores = [score for _, score in answer.ranked]
    assert scores == sorted(scores, reverse=True)


def test_the_version_is_written_once() -> None:
    """One ``__version__`` line; every pyproject.toml declares the version dynamic and reads that line."""
    source = ROOT / "src" / "qwen3_vllm_rerank" / "__init__.py"
    assert re.findall(r'^__version__ = "([^"]+)"$', source.read_text(), re.MULTILINE) == [VERSION]
    for project in PROJECTS:
        pyproject = tomllib.loads((project.directory / "pyproject.toml").read_text())
        assert "version" not in pyproject["project"], project.name
        assert "version" in pyproject["project"]["dynamic"], project.name
        assert (project.directory / pyproject["tool"]["hatch"]["version"]["path"]).resolve() == source
