"""A Qwen3-Reranker server for examples, demos and users' own tests."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ._fixture_text import make_fixture_checkpoint

__all__ = ["local_reranker"]

logger = logging.getLogger("qwen3_vllm_rerank")


@contextlib.contextmanager
def local_reranker(
    model: str | Path | None = None,
    *,
    base_url: str | None = None,
    python: str | None = None,
) -> Iterator[str]:
    """The base URL of a Qwen3-Reranker server, for examples, demos and users' own tests.

    ``base_url`` given: it is yielded as is. Otherwise a :class:`~qwen3_vllm_rerank.VLLMServer`
    is started for ``model`` (a checkpoint directory or hub id) and stopped on exit; without
    ``model``, for a tiny random-weight fixture checkpoint written to a temporary directory
    (its scores mean nothing; a warning is logged saying so).
    """
    if base_url:
        yield base_url
        return
    from ..serve import VLLMServer

    with contextlib.ExitStack() as stack:
        if model is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="qwen3-rerank-fixture-"))
            logger.warning(
                "no model given: serving a tiny Qwen3-Reranker-shaped checkpoint with RANDOM weights; "
                "its scores are meaningless, everything else is the real thing"
            )
            model = make_fixture_checkpoint(Path(workdir) / "fixture")
        logger.warning("starting vLLM for %s (about a minute on a CPU) ...", model)
        server = stack.enter_context(VLLMServer(model, python=python))
        yield server.base_url
