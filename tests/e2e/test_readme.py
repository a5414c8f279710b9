"""The README's code runs as a newcomer would paste it, against the session's vLLM server.

Every ``python`` block is run in a fresh interpreter with the README's URL replaced by the
server's; each must print a relevance score in [0, 1] first on a line. The ``bash`` blocks name the
commands other tests run: the ``pip install`` lines (``e2e/test_distributions.py`` installs the
wheels alone), ``qwen3-vllm-rerank serve`` (``test_cli.py``), ``scripts/demo`` (``e2e/test_demo.py``)
and ``scripts/test`` (CI itself); this file checks that they name nothing else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fixtures import Served

README = Path(__file__).resolve().parents[2] / "README.md"
URL = "http://127.0.0.1:8000"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: What a bash line of the README may run (each is tested elsewhere, see the module docstring).
BASH_COMMANDS = ("pip install ", "qwen3-vllm-rerank serve ", "scripts/demo", "scripts/test")


def blocks(language: str) -> list[str]:
    return [code for lang, code in _BLOCK.findall(README.read_text(encoding="utf-8")) if lang == language]


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    first_python = next(i for i, line in enumerate(lines) if line == "```python")
    assert first_python < 40, "a working call within the first screen"
    assert len(blocks("python")) >= 3


def test_the_readmes_shell_lines_are_the_tested_commands() -> None:
    for code in blocks("bash"):
        for line in code.splitlines():
            command = line.split("#", 1)[0].strip()
            assert not command or command.startswith(BASH_COMMANDS), command


@pytest.mark.parametrize("number", range(len(blocks("python"))), ids=lambda n: f"block{n}")
def test_each_python_block_runs_against_a_server(served: Served, number: int) -> None:
    code = blocks("python")[number]
    assert URL in code, "each block talks to the server the README starts"
    result = subprocess.run(
        [sys.executable, "-c", code.replace(URL, served.base_url)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    score = float(result.stdout.split()[0])
    assert 0.0 <= score <= 1.0
