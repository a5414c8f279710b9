"""The installed distribution: a Haystack component in the integrations namespace, the core's version,
an exact pin on the core, and namespace packages left to Haystack (PEP 420)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from haystack.core.component import Component

import haystack_integrations.components.rankers.qwen3_vllm_rerank as package
import qwen3_vllm_rerank
from haystack_integrations.components.rankers.qwen3_vllm_rerank import Qwen3VLLMRanker

DISTRIBUTION = "qwen3-vllm-rerank-haystack"
PROJECT = Path(__file__).resolve().parents[2]


def test_the_ranker_is_a_haystack_component_with_the_rankers_sockets() -> None:
    ranker = Qwen3VLLMRanker(base_url="http://127.0.0.1:8000")
    assert isinstance(ranker, Component)
    assert set(ranker.__haystack_input__._sockets_dict) == {"query", "documents", "top_k", "score_threshold"}
    assert set(ranker.__haystack_output__._sockets_dict) == {"documents", "meta"}
    assert package.__all__ == ["Qwen3VLLMRanker"]


def test_same_version_as_the_core_and_pinned_to_it() -> None:
    version = metadata.version(DISTRIBUTION)
    assert version == qwen3_vllm_rerank.__version__ == metadata.version("qwen3-vllm-rerank")
    requires = metadata.requires(DISTRIBUTION) or []
    assert f"qwen3-vllm-rerank=={version}" in requires
    assert any(r.startswith("haystack-ai") for r in requires)


def test_only_the_leaf_package_is_ours() -> None:
    """haystack_integrations, .components and .components.rankers belong to every Haystack
    integration: an ``__init__.py`` there would shadow the others' packages."""
    root = PROJECT / "haystack_integrations"
    for level in (root, root / "components", root / "components" / "rankers"):
        assert not (level / "__init__.py").exists(), level
    leaf = root / "components" / "rankers" / "qwen3_vllm_rerank"
    assert (leaf / "__init__.py").is_file()
    assert (leaf / "py.typed").is_file()
    assert Path(package.__file__ or "").resolve().parent == leaf
