"""The installed distribution: a node postprocessor, the core's version, and an exact pin on the core."""

from __future__ import annotations

from importlib import metadata

from llama_index.core.postprocessor.types import BaseNodePostprocessor

import qwen3_vllm_rerank
from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker

DISTRIBUTION = "llama-index-postprocessor-qwen3-vllm-rerank"


def test_class_is_a_node_postprocessor() -> None:
    assert issubclass(Qwen3VLLMReranker, BaseNodePostprocessor)


def test_same_version_as_the_core_and_pinned_to_it() -> None:
    version = metadata.version(DISTRIBUTION)
    assert version == qwen3_vllm_rerank.__version__ == metadata.version("qwen3-vllm-rerank")
    assert f"qwen3-vllm-rerank=={version}" in (metadata.requires(DISTRIBUTION) or [])
