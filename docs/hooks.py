"""MkDocs hooks: the docs site reads each fact from its one home instead of copying it.

* ``<!-- fact: NAME -->`` in a page is replaced by the fact ``NAME`` rendered from the code:
  ``client-options`` (the table of :class:`qwen3_vllm_rerank.client.ClientOptions`),
  ``vllm-range`` (the tested vLLM range, ``serve/_install.py``), ``vllm-parser-checked`` (the newest
  vLLM whose own argument parser the launcher's reading was compared with, same home), ``cli-help``
  (every subcommand's ``--help``, from the CLI's own parser).
* ``SECURITY.md`` and ``benchmarks/results/`` are served as they are in the repository
  (``security.md``, ``performance/``): the benchmark figures are what the benchmarks wrote.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
_FACT = re.compile(r"<!-- fact: ([a-z-]+) -->")


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped, markup characters shown as they are."""
    for char in "\\`*_<[":
        text = text.replace(char, "\\" + char)
    return text.replace("|", "\\|").replace("\n", " ")


def client_options() -> str:
    """The options table, from ``ClientOptions`` (names, types, defaults, docs)."""
    from qwen3_vllm_rerank.client._options import ClientOptions, option_doc

    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for field in dataclasses.fields(ClientOptions):
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        cells = (_cell(kind), _cell(repr(field.default)), _cell(option_doc(field.name)))
        rows.append(f"| `{field.name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def vllm_range() -> str:
    from qwen3_vllm_rerank.serve._install import NEWEST_TESTED, OLDEST_TESTED

    oldest, newest = (".".join(map(str, v)) for v in (OLDEST_TESTED, NEWEST_TESTED))
    return f"vLLM {oldest} to {newest}"


def vllm_parser_checked() -> str:
    from qwen3_vllm_rerank.serve._install import NEWEST_PARSER_CHECKED

    return "vLLM " + ".".join(map(str, NEWEST_PARSER_CHECKED))


def cli_help() -> str:
    from qwen3_vllm_rerank.cli import build_parser

    parser = build_parser()
    parts = [f"```text\n{parser.format_help()}```"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts.append(f"## `{name}`\n\n```text\n{sub.format_help()}```")
    return "\n\n".join(parts)


def decode_bounds() -> str:
    """The decode sandbox's bounds, from ``images/_sandbox.py`` and ``images/_decode_budget.py``."""
    from qwen3_vllm_rerank.images._decode_budget import DECODE_BUDGET_BYTES, MAX_JPEG_SCANS
    from qwen3_vllm_rerank.images._sandbox import (
        DECODE_SECONDS,
        MEMORY_SLACK_BYTES,
        STALL_SECONDS,
        memory_bound,
    )

    mib = 1024 * 1024
    growth = (memory_bound(100 * mib) - MEMORY_SLACK_BYTES) / (100 * mib)
    return (
        f"| bound | value |\n|---|---|\n"
        f"| a worker's address space may grow by | {growth:g}x the image's estimated cost"
        f" + {MEMORY_SLACK_BYTES // mib} MiB |\n"
        f"| CPU and wall time per image | {DECODE_SECONDS:g} s |\n"
        f"| a job stops holding a worker slot after | {STALL_SECONDS:g} s |\n"
        f"| images of one call decoded at once, in estimated bytes | {DECODE_BUDGET_BYTES // mib} MiB |\n"
        f"| JPEG scans | {MAX_JPEG_SCANS} |"
    )


FACTS: dict[str, Callable[[], str]] = {
    "decode-bounds": decode_bounds,
    "client-options": client_options,
    "vllm-range": vllm_range,
    "vllm-parser-checked": vllm_parser_checked,
    "cli-help": cli_help,
}


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    def fact(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in FACTS:
            raise KeyError(f"{page.file.src_uri}: unknown fact {name!r} (known: {sorted(FACTS)})")
        return FACTS[name]()

    return _FACT.sub(fact, markdown)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "security.md", abs_src_path=str(ROOT / "SECURITY.md")))
    for path in sorted((ROOT / "benchmarks/results").iterdir()):
        if path.suffix in (".md", ".png"):
            files.append(File.generated(config, f"performance/{path.name}", abs_src_path=str(path)))
    return files
