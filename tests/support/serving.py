"""The ways a Qwen3-Reranker checkpoint can be served, for tests that run against each.

To add a serving path, add a :class:`ServingPath` to
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


def convert(original: Path, workdir: Path) -> Path:
    """Convert offline (verified) into a one-logit seq-cls checkpoint; served without overrides."""
    from qwen3_vllm_rerank.convert import convert_checkpoint

    return convert_checkpoint(original, workdir / "converted", progress=False)


def vl_fixture(original: Path, workdir: Path) -> Path:
    """A tiny Qwen3-VL reranker (``original``, a text fixture, is not used): VLLMServer serves it with
    the VL overrides and the official image limits. Its reference is ``served_checkpoint`` itself."""
    from qwen3_vllm_rerank.testing import make_vl_fixture_checkpoint

    return make_vl_fixture_checkpoint(workdir / "vl")


def vl_converted_untied(original: Path, workdir: Path) -> Path:
    """An untied tiny Qwen3-VL reranker (8B-style: where the 0.5 trap bites) in ``workdir / "vl"``,
    converted offline into ``workdir / "converted"`` (served with --runner pooling alone)."""
    from qwen3_vllm_rerank.convert import convert_checkpoint
    from qwen3_vllm_rerank.testing import make_vl_fixture_checkpoint

    source = make_vl_fixture_checkpoint(workdir / "vl", tied=False)
    return convert_checkpoint(source, workdir / "converted", progress=False)


def vl_converted_original(converted: Path) -> Path:
    """The CausalLM checkpoint :func:`vl_converted_untied` converted into ``converted`` (the
    reference's)."""
    return converted.parent / "vl"


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
    api_key: str | None = None
    self_check: bool = True
    #: Resident memory of the server here, for the pool's budget (measured: a text one ~3.3 GB,
    #: a Qwen3-VL one ~5.2 GB).
    memory_gb: float = 3.5
    #: Which vLLM serves it: "newest" ($QWEN3_VLLM_RERANK_SERVER_PYTHON, vLLM 0.32) or "oldest"
    #: ($QWEN3_VLLM_RERANK_OLDEST_SERVER_PYTHON, vLLM 0.27, for the compatibility tier).
    vllm: Literal["newest", "oldest"] = "newest"


SERVING_PATHS: dict[str, ServingPath] = {
    # The original CausalLM, served with vLLM's on-load overrides (VLLMServer adds them).
    "original": ServingPath("tied"),
    # Converted offline; VLLMServer serves them with --runner pooling alone.
    "converted-tied": ServingPath("tied", prepare=convert),
    "converted-untied": ServingPath("untied", prepare=convert),
}


DATA = Path(__file__).parent.parent / "data"
TEST_API_KEY = "test-key-do-not-log"

#: Servers for specific tests, not part of the fidelity matrix.
OTHER_SERVERS: dict[str, ServingPath] = {
    # vLLM applying a Qwen3 score template itself, exact and with the lost-newline mistake.
    "server-template": ServingPath(
        "tied", extra_args=("--chat-template", str(DATA / "qwen3_reranker.jinja"), "--max-model-len", "2048")
    ),
    "server-template-lost-newline": ServingPath(
        "tied",
        extra_args=(
            "--chat-template",
            str(DATA / "qwen3_reranker_lost_newline.jinja"),
            "--max-model-len",
            "2048",
        ),
        # VLLMServer's own self-check would refuse to start it (that is the point).
        self_check=False,
    ),
    "api-key": ServingPath("tied", extra_args=("--max-model-len", "2048"), api_key=TEST_API_KEY),
    # The compatibility tier's one server on the oldest vLLM: the "api-key" server's twin, so one
    # server covers plain discovery, fidelity and the API-key paths there.
    "oldest-api-key": ServingPath(
        "tied", extra_args=("--max-model-len", "2048"), api_key=TEST_API_KEY, vllm="oldest"
    ),
    # The Qwen3-VL reranker servers (~3.5 min and ~6 GB each to start here), two per session:
    # the original checkpoint (client-formatted prompts), shared by VLLMServer's tests, the VL client
    # tests and both adapters' image tests; and a converted untied one that applies the VL score
    # template itself (the converted and the server-template routes, in one server).
    "vl": ServingPath("tied", prepare=vl_fixture, memory_gb=6),
    "vl-converted-server-template": ServingPath(
        "tied",
        prepare=vl_converted_untied,
        extra_args=("--chat-template", str(DATA / "qwen3_vl_reranker.jinja")),
        memory_gb=6,
    ),
}
