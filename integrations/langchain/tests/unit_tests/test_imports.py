"""The installed distribution: its public names, its version (the core's) and its pin on the core."""

from __future__ import annotations

from importlib import metadata

from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import BaseDocumentCompressor

import langchain_qwen3_vllm_rerank
import qwen3_vllm_rerank
from langchain_qwen3_vllm_rerank import Qwen3VLLMCrossEncoder, Qwen3VLLMReranker

DISTRIBUTION = "langchain-qwen3-vllm-rerank"


def test_public_classes_are_langchain_components() -> None:
    assert set(langchain_qwen3_vllm_rerank.__all__) == {"Qwen3VLLMCrossEncoder", "Qwen3VLLMReranker"}
    assert issubclass(Qwen3VLLMReranker, BaseDocumentCompressor)
    assert issubclass(Qwen3VLLMCrossEncoder, BaseCrossEncoder)


def test_same_version_as_the_core_and_pinned_to_it() -> None:
    version = metadata.version(DISTRIBUTION)
    assert version == qwen3_vllm_rerank.__version__ == metadata.version("qwen3-vllm-rerank")
    assert f"qwen3-vllm-rerank=={version}" in (metadata.requires(DISTRIBUTION) or [])
