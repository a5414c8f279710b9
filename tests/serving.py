"""The ways a Qwen3-Reranker checkpoint can be served, for tests that run against each.

To add a serving path (say, a converted checkpoint), add a :class:`ServingPath` to
``SERVING_PATHS``; every test parametrised with ``serving_path`` then runs on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

#: Turns the original fixture checkpoint into the directory to serve (in workdir).
Prepare = Callable[[Path, Path], Path]


def serve_as_is(original: Path, workdir: Path) -> Path:
    return original


@dataclass(frozen=True)
class ServingPath:
    """One way to serve a fixture checkpoint.

    ``checkpoint``: which fixture (tied like 0.6B/4B, untied like 8B) is the original;
    ``prepare``: what is done to it before serving; ``extra_args``: more vLLM flags.
    Reference scores always come from the original checkpoint with transformers.
    """

    checkpoint: Literal["tied", "untied"]
    prepare: Prepare = serve_as_is
    extra_args: tuple[str, ...] = field(default=())


SERVING_PATHS: dict[str, ServingPath] = {
    # The original CausalLM, served with vLLM's on-load overrides (VLLMServer adds them).
    "original": ServingPath("tied"),
}
