"""The ``qwen3-vllm-rerank`` command line (subcommands arrive with the model-tooling work)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qwen3-vllm-rerank", description=__doc__)
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0
