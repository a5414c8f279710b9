"""Build hook: this ranker requires exactly the core release it is built with.

The distributions of this repository share one version (``__version__`` in the core's
``src/qwen3_vllm_rerank/__init__.py``), and the ranker relies on the core's internals, so the pin is
exact: ``qwen3-vllm-rerank==<version>``. Declared dependencies stay in ``pyproject.toml``, under
``[tool.hatch.metadata.hooks.custom]``.
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
