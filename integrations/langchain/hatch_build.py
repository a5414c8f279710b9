"""Build hook of the adapter distributions: each requires exactly the core release it is built with.

The repository's distributions share one version (``__version__`` in the core's
``src/qwen3_vllm_rerank/__init__.py``), and an adapter is tested against that core only, so the pin
is exact: ``qwen3-vllm-rerank==<version>``. The other dependencies stay in the project's
``pyproject.toml``, under ``[tool.hatch.metadata.hooks.custom]``.

This file is the same, byte for byte, in ``integrations/langchain``, ``integrations/llama-index`` and
``integrations/haystack`` (``tests/test_layers.py`` fails when they differ): hatchling loads a
metadata hook from the project's own directory, and every wheel is built from its sdist, which holds
only that project's files, so no file outside it can serve the three.
"""

from __future__ import annotations

from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface

CORE = "qwen3-vllm-rerank"


class CorePinHook(MetadataHookInterface):
    """Sets ``dependencies`` to the configured ones plus ``qwen3-vllm-rerank==<version>``."""

    def update(self, metadata: dict[str, Any]) -> None:
        declared = self.config.get("dependencies", [])
        if not isinstance(declared, list) or not all(isinstance(d, str) for d in declared):
            raise TypeError("[tool.hatch.metadata.hooks.custom] dependencies must be a list of strings")
        metadata["dependencies"] = [f"{CORE}=={metadata['version']}", *declared]
